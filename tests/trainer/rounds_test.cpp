// The one outer round (trainer/src/outer_round.h) on every path: threads of one process,
// --comm zmq processes, and a joined run of real processes with a broker end with the same
// θ_g bits; a contributor whose θ_g is damaged is caught in the round it happens, and
// stopped (local) or resynced (joined). Damage comes through the test-only seams binary.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "support/process.h"
#include "support/test_util.h"

namespace pico {
namespace {

using test::Proc;
using test::run_command;
using test::slurp;

// θ_g hash of `round` in a metrics.jsonl (every round record of that round must agree).
std::string theta_of_round(const std::string& metrics, std::int64_t round) {
  std::string hash;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("theta_hash") || j["round"] != round) continue;
    const std::string h = j["theta_hash"];
    if (!hash.empty() && h != hash) return "(records of round " + std::to_string(round) + " disagree)";
    hash = h;
  }
  return hash;
}

class OneOuterRound : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const auto r = run_command(test::pico_binary() + " data prepare --input " + test::test_data("kjv_small.txt") +
                               " --output " + dir_->file("ds") + " --vocab-size 512 --shards 3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // uint8 on the wire with error feedback: the settings whose handling used to differ
    // between the local and the joined round.
    test::write_text(dir_->file("run.yaml"),
                     "model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
                     " attention_n_kv_heads: 2, activation_hidden_dim: 96}\n"
                     "training: {max_steps: 30, optimization: {lr: 3.0e-3, lr_scheduler: cosine, lr_warmup_steps: 5}}\n"
                     "data: {path: " +
                         dir_->file("ds") +
                         ", dataloader: {batch_size: 4}}\n"
                         "outer: {algorithm: diloco, inner_steps: 10, compression: uint8, error_feedback: true,"
                         " min_contributors: 3, timeout_s: 20}\n"
                         "evaluation: {every_n_steps: 0, batches: 2}\n"
                         "checkpointing: {runs_dir: " +
                         dir_->file("runs") +
                         ", save_every_n_steps: 0}\n"
                         "monitoring: {logging: {log_every_n_steps: 10}}\n"
                         "threads: 1\nseed: 11\n");
    // DeMo: rounds of 10 steps, every step an all-gather of top-k DCT momentum.
    test::write_text(dir_->file("demo.yaml"),
                     "model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
                     " attention_n_kv_heads: 2, activation_hidden_dim: 96}\n"
                     "training: {max_steps: 30, optimization: {lr: 2.0e-3, lr_scheduler: cosine, lr_warmup_steps: 5}}\n"
                     "data: {path: " +
                         dir_->file("ds") +
                         ", dataloader: {batch_size: 4}}\n"
                         "outer: {algorithm: demo, inner_steps: 10, min_contributors: 3, timeout_s: 20,"
                         " demo: {compression_topk: 8, compression_chunk: 16}}\n"
                         "evaluation: {every_n_steps: 0, batches: 2}\n"
                         "checkpointing: {runs_dir: " +
                         dir_->file("runs") +
                         ", save_every_n_steps: 0}\n"
                         "monitoring: {logging: {log_every_n_steps: 1}}\n"
                         "threads: 1\nseed: 11\n");
  }
  static void TearDownTestSuite() { delete dir_; }
  void TearDown() override { test::kill_spawned(); }

  static std::string train(const std::string& args, const std::string& config = "run.yaml") {
    return " train --config " + dir_->file(config) + " " + args;
  }
  static std::string metrics(const std::string& run) { return dir_->file("runs/" + run + "/metrics.jsonl"); }
  static std::string keys() { return " --key-dir " + dir_->file("keys"); }

  // A joined run of three members: the host a (with the embedded broker) and b, c joining
  // it; `b_binary` runs b (the seams binary for a damaged member). Waits for all to end.
  static void joined_run(const std::string& name, const std::string& b_binary, const std::string& config = "run.yaml") {
    Proc a = test::spawn_pico(train("--set checkpointing.run_name=" + name + " --identity a" + keys(), config),
                              dir_->file(name + "-a.log"));
    std::string code;
    ASSERT_TRUE(test::wait_for_log(a.log, std::regex(R"(join code: (pico://\S+))"), {&code}, 60)) << slurp(a.log);
    auto join = [&](const std::string& who, const std::string& binary) {
      return test::spawn_pico("train --join '" + code + "' --identity " + who +
                                  " --set checkpointing.run_name=" + name + "-" + who + keys(),
                              dir_->file(name + "-" + who + ".log"), binary);
    };
    Proc b = join("b", b_binary);
    Proc c = join("c", "");
    ASSERT_TRUE(test::wait_until([&] { return !a.alive() && !b.alive() && !c.alive(); }, 240))
        << slurp(a.log) << slurp(b.log) << slurp(c.log);
    EXPECT_EQ(a.wait(), 0) << slurp(a.log);
    EXPECT_EQ(b.wait(), 0) << slurp(b.log);
    EXPECT_EQ(c.wait(), 0) << slurp(c.log);
  }

  static test::TempDir* dir_;
};
test::TempDir* OneOuterRound::dir_ = nullptr;

TEST_F(OneOuterRound, ThreadsZmqProcessesAndAJoinedRunEndWithTheSameThetaG) {
  auto r = run_command(test::pico_binary() + train("--local-workers 3 --set checkpointing.run_name=threads"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(test::pico_binary() + train("--local-workers 3 --comm zmq --set checkpointing.run_name=zmq"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  joined_run("joined", "");
  const std::string expected = theta_of_round(metrics("threads"), 3);
  ASSERT_EQ(expected.size(), 64u) << expected;
  EXPECT_EQ(theta_of_round(metrics("zmq"), 3), expected);
  for (const char* member : {"joined", "joined-b", "joined-c"})
    EXPECT_EQ(theta_of_round(metrics(member), 3), expected) << member;
}

TEST_F(OneOuterRound, ADamagedThetaGStopsALocalRunInTheRoundItHappens) {
  const std::string seams = "PICO_SEAM_CORRUPT_THETA=1:2 " + test::seams_binary();
  for (const std::string comm : {"inprocess", "zmq"}) {
    const auto r =
        run_command(seams + train("--local-workers 3 --comm " + comm + " --set checkpointing.run_name=bad-" + comm));
    EXPECT_EQ(r.exit_code, 1) << comm << "\n" << r.output;
    EXPECT_NE(r.output.find("after outer round 2 the θ_g of contributor 1"), std::string::npos) << comm << "\n"
                                                                                                << r.output;
    EXPECT_NE(r.output.find("differs from the others'"), std::string::npos) << comm << "\n" << r.output;
    EXPECT_EQ(theta_of_round(metrics("bad-" + comm), 2), "") << comm << ": a round record was written for round 2";
  }
}

TEST_F(OneOuterRound, ADamagedMemberOfAJoinedRunIsResyncedAndTheRunEndsInAgreement) {
  // b joins alongside c, so its place in the ring is not known ahead: it damages its own copy.
  joined_run("heal", "env PICO_SEAM_CORRUPT_THETA='*:2' " + test::seams_binary());
  const std::string b_log = slurp(dir_->file("heal-b.log"));
  EXPECT_NE(b_log.find("round 2: this member's θ_g"), std::string::npos) << b_log;
  EXPECT_NE(b_log.find("differs from the majority's"), std::string::npos) << b_log;
  EXPECT_NE(b_log.find("loaded"), std::string::npos) << "the damaged member was not resynced\n" << b_log;
  const std::string a3 = theta_of_round(metrics("heal"), 3);
  ASSERT_EQ(a3.size(), 64u) << a3;
  EXPECT_EQ(theta_of_round(metrics("heal-c"), 3), a3);
  EXPECT_EQ(theta_of_round(metrics("heal-b"), 3), a3) << "the resynced member did not end with the run's θ_g";
}

// The slot a joined member's log says it joined with.
int slot_of(const std::string& log) {
  std::smatch m;
  const std::string text = slurp(log);
  if (!std::regex_search(text, m, std::regex(R"(joined run \S+ as member \d+ \(slot (\d+),)"))) return -1;
  return std::stoi(m[1]);
}

// Step losses of contributor `who` in a metrics.jsonl (every step is logged in demo.yaml).
std::vector<double> losses_of(const std::string& metrics, std::int64_t who) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("loss") && j.contains("step") && j["contributor"] == who)
      out.push_back(j["loss"].get<double>());
  }
  return out;
}

// DeMo is joinable: a host and two joiners over CURVE ZeroMQ, rounds of 10 steps taken
// together, reproduce the local 3-contributor DeMo run step for step, bit for bit (each member
// against the local contributor of its slot), and end with the same θ.
TEST_F(OneOuterRound, AJoinedDeMoRunReproducesTheLocalDeMoRunBitForBit) {
  auto r = run_command(test::pico_binary() +
                       train("--local-workers 3 --set checkpointing.run_name=demo-local", "demo.yaml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  joined_run("demo-joined", "", "demo.yaml");
  const std::map<std::string, std::string> runs = {
      {"a", "demo-joined"}, {"b", "demo-joined-b"}, {"c", "demo-joined-c"}};
  std::string theta;
  for (const auto& [who, run] : runs) {
    const std::string log = dir_->file("demo-joined-" + who + ".log");
    const int slot = slot_of(log);
    ASSERT_GE(slot, 0) << slurp(log);
    // A joined member's records name it by member id; find its own.
    std::vector<double> joined;
    for (std::int64_t id = 0; id < 3 && joined.empty(); ++id) joined = losses_of(metrics(run), id);
    const auto local = losses_of(metrics("demo-local"), slot);
    ASSERT_EQ(local.size(), 30u);
    ASSERT_EQ(joined.size(), 30u) << slurp(log);
    for (std::size_t i = 0; i < local.size(); ++i)
      ASSERT_EQ(joined[i], local[i]) << who << " (slot " << slot << ") step " << i + 1;
    const std::string t = theta_of_round(metrics(run), 3);
    ASSERT_EQ(t.size(), 64u) << who << ": " << t;
    if (theta.empty()) theta = t;
    EXPECT_EQ(t, theta) << who;
  }
}

}  // namespace
}  // namespace pico
