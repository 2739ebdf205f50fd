// Members behind NATs, in an emulated internet of network namespaces
// (tests/support/netns_wan.sh: two public hosts, three homes behind masquerading routers, one
// of which drops every unsolicited packet). Real pico processes, the README's commands: the
// host and a public member are dialed directly; the homes find out they are behind a NAT (the
// broker sees them come from their router) and are reached through the broker's relay. Every
// round completes with all five, and θ_g is that of an in-process run of five contributors
// bit for bit: relaying moves bytes, it does not change the arithmetic.
//
// Needs root (namespaces, nftables); elsewhere the test skips and says why.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "support/process.h"
#include "support/test_util.h"

namespace pico {
namespace {

using test::Proc;
using test::slurp;

std::vector<nlohmann::json> rounds_of(const std::string& metrics) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("theta_hash")) out.push_back(j);
  }
  return out;
}

class BehindNat : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces (CI runs as root)";
    prefix_ = "pn" + std::to_string(::getpid() % 100000);
    const auto r = test::run_command("bash " + test::source_dir() + "/tests/support/netns_wan.sh up " + prefix_);
    if (r.exit_code != 0) {
      test::run_command("bash " + test::source_dir() + "/tests/support/netns_wan.sh down " + prefix_);
      GTEST_SKIP() << "cannot build the emulated internet (network namespaces, veth, nftables):\n" << r.output;
    }
    up_ = true;
    const auto d = test::run_command(test::pico_binary() + " data prepare --input " + test::test_data("kjv_small.txt") +
                                     " --output " + dir_.file("ds") + " --vocab-size 512 --shards 5");
    ASSERT_EQ(d.exit_code, 0) << d.output;
    test::write_text(dir_.file("run.yaml"),
                     "model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
                     " attention_n_kv_heads: 2, activation_hidden_dim: 96}\n"
                     "training: {max_steps: 30, optimization: {lr: 3.0e-3, lr_scheduler: cosine, lr_warmup_steps: 5}}\n"
                     "data: {path: " +
                         dir_.file("ds") +
                         ", dataloader: {batch_size: 4}}\n"
                         "outer: {algorithm: diloco, inner_steps: 10, compression: uint8, min_contributors: 5,"
                         " timeout_s: 60}\n"
                         "evaluation: {every_n_steps: 0, batches: 2}\n"
                         "checkpointing: {runs_dir: " +
                         dir_.file("runs") +
                         ", save_every_n_steps: 0}\n"
                         "monitoring: {logging: {log_every_n_steps: 10}}\n"
                         "threads: 1\nseed: 11\n");
  }

  void TearDown() override {
    test::kill_spawned();
    if (up_) test::run_command("bash " + test::source_dir() + "/tests/support/netns_wan.sh down " + prefix_);
  }

  // `pico ARGS` in namespace NS (PREFIX + ns), as a user there would run it.
  Proc in(const std::string& ns, const std::string& args, const std::string& log) {
    return test::spawn_pico(
        args, dir_.file(log),
        "ip netns exec " + prefix_ + ns + " env PICO_HOME=" + dir_.file("home-" + ns) + " " + test::pico_binary());
  }

  std::string prefix_;
  bool up_ = false;
  test::TempDir dir_;
};

TEST_F(BehindNat, MembersBehindNatsTakePartInEveryRoundThroughTheRelayWithTheSameThetaG) {
  Proc a = in("pub1", "train --config " + dir_.file("run.yaml") + " --set checkpointing.run_name=nat", "a.log");
  std::string code;
  ASSERT_TRUE(test::wait_for_log(a.log, std::regex(R"(join code: (pico://\S+))"), {&code}, 60)) << slurp(a.log);
  EXPECT_NE(code.find("pico://198.51.100.11:"), std::string::npos) << code;  // not loopback: listens on all interfaces
  std::vector<Proc> members;
  const std::vector<std::pair<std::string, std::string>> who = {{"pub2", "b"}, {"h1", "c"}, {"h2", "d"}, {"h3", "e"}};
  for (const auto& [ns, name] : who) {
    members.push_back(in(ns, "train --join '" + code + "' --set checkpointing.run_name=nat-" + name, name + ".log"));
    // One at a time: the slots (and so the ring order) follow the order of joining.
    ASSERT_TRUE(test::wait_until(
        [&] { return slurp(members.back().log).find("joined run nat as member") != std::string::npos; }, 60))
        << slurp(members.back().log);
  }
  auto all_logs = [&] {
    std::string s = "a.log:\n" + slurp(a.log);
    for (std::size_t i = 0; i < members.size(); ++i) s += "\n" + who[i].second + ".log:\n" + slurp(members[i].log);
    return s;
  };
  ASSERT_TRUE(test::wait_until(
      [&] {
        if (a.alive()) return false;
        for (auto& m : members)
          if (m.alive()) return false;
        return true;
      },
      300))
      << all_logs();
  ASSERT_EQ(a.wait(), 0) << all_logs();
  for (auto& m : members) ASSERT_EQ(m.wait(), 0) << all_logs();

  // The homes, and only they, are reached through the relay.
  for (std::size_t i = 0; i < members.size(); ++i) {
    const bool relayed =
        slurp(members[i].log).find("through the broker's relay at tcp://198.51.100.11:") != std::string::npos;
    EXPECT_EQ(relayed, who[i].first != "pub2") << who[i].second << ":\n" << slurp(members[i].log);
  }
  EXPECT_EQ(slurp(a.log).find("is not reachable at"), std::string::npos) << slurp(a.log);

  // Every round with all five, at the first attempt.
  const auto local =
      test::run_command(test::pico_binary() + " train --config " + dir_.file("run.yaml") +
                        " --local-workers 5 --set checkpointing.run_name=local --set outer.min_contributors=1");
  ASSERT_EQ(local.exit_code, 0) << local.output;
  const auto expected = rounds_of(dir_.file("runs/local/metrics.jsonl"));
  ASSERT_FALSE(expected.empty());
  const std::string theta = expected.back()["theta_hash"];
  for (const char* run : {"nat", "nat-b", "nat-c", "nat-d", "nat-e"}) {
    const auto rounds = rounds_of(dir_.file(std::string("runs/") + run + "/metrics.jsonl"));
    ASSERT_EQ(rounds.size(), 3u) << run << "\n" << all_logs();
    for (const auto& r : rounds) {
      EXPECT_EQ(r["contributors"], 5) << run << " " << r.dump();
      EXPECT_EQ(r["attempt"], 1) << run << " " << r.dump();
    }
    EXPECT_EQ(rounds.back()["theta_hash"], theta) << run << ": θ_g differs from the in-process run's";
  }
}

}  // namespace
}  // namespace pico
