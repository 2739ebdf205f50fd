// The dashboard in a real browser: a real 3-member run (three `pico train` processes, the
// first hosting the broker with --http), the page opened in headless Chromium and driven over
// the DevTools protocol (tests/python/dashboard_browser.py): members, a drawn loss chart and
// the event log appear and update; pause, resume and evict work from the page with the
// operator link; read-only without it; fits a phone. Then `pico top` and /metrics on the
// same run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "support/process.h"
#include "support/test_util.h"

namespace pico {
namespace {

using test::Proc;
using test::slurp;
using test::wait_for_log;

test::Proc spawn(const std::string& args, const std::string& log) {
  return test::spawn_pico(args, log);
}

template <typename Pred>
bool wait_for(Pred pred, double seconds) {
  return test::wait_until(pred, seconds);
}

class DashboardBrowser : public ::testing::Test {
 protected:
  void TearDown() override { test::kill_spawned(); }
  test::TempDir dir_;
};

TEST_F(DashboardBrowser, AThreeMemberRunShowsUpdatesAndObeysTheOperator) {
  if (std::system("command -v chromium > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "no chromium on PATH: scripts/setup installs Debian's chromium";
  auto r = test::run_command(test::pico_binary() + " data prepare --input " + test::test_data("kjv_small.txt") +
                             " --output " + dir_.file("ds") + " --vocab-size 512 --shards 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // A tiny model and short rounds: a round every second or so even with three trainers and
  // a browser on two cores. The run is long; the test ends it.
  test::write_text(
      dir_.file("run.yaml"),
      "model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
      " attention_n_kv_heads: 2, activation_hidden_dim: 96}\n"
      "training: {max_steps: 100000, optimization: {lr: 3.0e-3, lr_scheduler: constant, lr_warmup_steps: 5}}\n"
      "data: {path: " +
          dir_.file("ds") +
          ", dataloader: {batch_size: 4}}\n"
          "outer: {algorithm: diloco, inner_steps: 10, timeout_s: 10, min_contributors: 3}\n"
          "evaluation: {every_n_steps: 20, batches: 2}\n"
          "checkpointing: {runs_dir: " +
          dir_.file("runs") +
          ", run_name: net, save_every_n_steps: 0}\n"
          "monitoring: {logging: {log_every_n_steps: 50}}\n"
          "threads: 1\n");
  const std::string keys = " --key-dir " + dir_.file("keys");
  Proc a = spawn("train --config " + dir_.file("run.yaml") +
                     " --http 127.0.0.1:0 --identity a --overwrite --member-timeout 20" + keys,
                 dir_.file("a.log"));
  std::string code, url, token;
  ASSERT_TRUE(wait_for_log(a.log, std::regex(R"(join code: (pico://\S+))"), {&code}, 60)) << slurp(a.log);
  ASSERT_TRUE(wait_for_log(a.log,
                           std::regex(R"(dashboard: (http://127\.0\.0\.1:\d+/) — operator token ([0-9a-f]{32}))"),
                           {&url, &token}, 10))
      << slurp(a.log);
  auto join = [&](const std::string& who) {
    return spawn("train --join '" + code + "' --identity " + who + " --set checkpointing.run_name=net-" + who + keys,
                 dir_.file(who + ".log"));
  };
  Proc b = join("b");
  Proc c = join("c");
  std::string c_id;
  ASSERT_TRUE(wait_for_log(c.log, std::regex(R"(joined run net as member (\d+))"), {&c_id}, 60)) << slurp(c.log);

  const std::string shot = std::getenv("PICO_DASHBOARD_SCREENSHOT") ? std::getenv("PICO_DASHBOARD_SCREENSHOT") : "";
  r = test::run_command(test::python() + " " + test::source_dir() + "/tests/python/dashboard_browser.py " + url + " " +
                        token + " --evict " + c_id + " --timeout 60" + (shot.empty() ? "" : " --screenshot " + shot));
  const std::string logs =
      "\n--- a.log\n" + slurp(a.log).substr(0, 6000) + "\n--- c.log\n" + slurp(c.log).substr(0, 3000);
  const auto brace = r.output.rfind("\n{");
  ASSERT_NE(brace, std::string::npos) << r.output << logs;
  const auto o = nlohmann::json::parse(r.output.substr(brace + 1), nullptr, false);
  ASSERT_FALSE(o.is_discarded()) << r.output;
  ASSERT_EQ(r.exit_code, 0) << o.dump(2) << logs;
  EXPECT_TRUE(o["errors"].empty()) << "the page reported errors: " << o["errors"].dump(2);
  EXPECT_FALSE(o["token_left_in_url"].get<bool>()) << "the operator token stays in the address bar";

  // Members, a drawn loss chart, the event log; then they moved on.
  const auto& first = o["first"];
  EXPECT_EQ(first["active_members"].size(), 3u) << first.dump();
  EXPECT_GT(first["loss_points"].get<int>(), 0);
  EXPECT_GT(first["loss_pixels"].get<int>(), 20);
  EXPECT_GT(first["time_points"].get<int>(), 0);
  EXPECT_GT(first["bytes_points"].get<int>(), 0);
  const auto& later = o["later"];
  EXPECT_GE(later["round"].get<int>(), first["round"].get<int>() + 2);
  EXPECT_GT(later["events"].size(), first["events"].size());
  EXPECT_GT(later["loss_points"].get<int>(), first["loss_points"].get<int>());

  // Paused: at most the round in flight finished in 3 s; resumed: rounds went on.
  const auto& paused = o["paused"];
  EXPECT_LE(paused["after_3s"].get<int>(), paused["at"].get<int>() + 1) << paused.dump();
  EXPECT_GE(o["resumed_round"].get<int>(), paused["after_3s"].get<int>() + 2);

  // Evicted from the page: gone from the members, in the event log, and its process was
  // refused: when it tried to join again ("removed your key"), or, evicted mid-round, when it
  // reported the round (the member stops at the first refusal either way).
  const auto& evicted = o["evicted"];
  for (const auto& id : evicted["active_members"]) EXPECT_NE(std::to_string(id.get<int>()), c_id);
  EXPECT_NE(evicted["event"].get<std::string>().find("evicted by the operator"), std::string::npos) << evicted.dump();
  ASSERT_TRUE(wait_for([&] { return !c.alive(); }, 30)) << slurp(c.log);
  EXPECT_EQ(c.wait(), 1) << slurp(c.log);
  const std::string c_log = slurp(c.log);
  EXPECT_TRUE(c_log.find("removed your key") != std::string::npos ||
              c_log.find("member " + c_id + " is not an active member of run net") != std::string::npos)
      << c_log;

  // Without the token: read-only. On a phone: nothing wider than the screen.
  EXPECT_EQ(o["read_only"]["role"], "read-only");
  EXPECT_FALSE(o["read_only"]["pause_visible"].get<bool>());
  EXPECT_EQ(o["read_only"]["evict_buttons_visible"], 0);
  EXPECT_LE(o["phone"]["scroll_width"].get<int>(), o["phone"]["width"].get<int>() + 1) << o["phone"].dump();
  EXPECT_LE(o["phone"]["chart_width"].get<int>(), o["phone"]["width"].get<int>());

  // The same run in a terminal, from the HTTP API and from the join code.
  for (const std::string& target : {url, "'" + code + "'"}) {
    r = test::run_command(test::pico_binary() + " top " + target + " --once");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("pico top · run net"), std::string::npos) << r.output;
    EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(\n\s+0\s+\S+…\s+cpu\s+\d+\s+active)"))) << r.output;
    EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(\n\s+\d+\s+\d\.\d+\s)"))) << "no round rows:\n" << r.output;
    EXPECT_NE(r.output.find("evicted by the operator"), std::string::npos) << r.output;
  }
  r = test::run_command(test::pico_binary() + " top http://127.0.0.1:1 --once");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;

  // /metrics of the live run, read by Prometheus's parser.
  r = test::run_command(test::python() + " " + test::source_dir() + "/tests/python/check_metrics.py " + url +
                        "metrics");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto m = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(m["samples"]["pico_run_members{run=net}"], 2.0);
  EXPECT_GE(m["samples"]["pico_run_rounds_total{run=net}"].get<double>(), 4.0);
  EXPECT_GT(m["samples"]["pico_run_tokens_per_second{run=net}"].get<double>(), 0.0);
  EXPECT_TRUE(m["samples"]["pico_run_val_loss{run=net}"].is_number()) << "no validation loss reached the broker";
}

}  // namespace
}  // namespace pico
