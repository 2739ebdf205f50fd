// Several contributors in one process (--local-workers): equivalences that hold by design.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "pico/common/error.h"
#include "pico/data/prepare.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/trainer.h"
#include "support/test_util.h"

namespace pico::trainer {
namespace {

class MultiContributor : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    data::PrepareOptions o;
    o.inputs = {test::test_data("kjv_small.txt")};
    o.output_dir = dir_->file("ds");
    o.vocab_size = 512;
    o.num_shards = 4;
    data::prepare_dataset(o);
  }
  static void TearDownTestSuite() { delete dir_; }

  static RunConfig config(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> o = {"data.path=" + dir_->file("ds"), "checkpointing.runs_dir=" + dir_->file("runs"),
                                  "checkpointing.run_name=" + name, "threads=2", "monitoring.logging.log_every_n_steps=1",
                                  "evaluation.every_n_steps=0", "evaluation.batches=2"};
    o.insert(o.end(), extra.begin(), extra.end());
    return parse_run_config(
        "model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
        " attention_n_kv_heads: 2, activation_hidden_dim: 96}\n"
        "training: {max_steps: 12, optimization: {lr: 3.0e-3, lr_scheduler: cosine, lr_warmup_steps: 2}}\n"
        "data: {dataloader: {batch_size: 8}}\n",
        "multi", o);
  }

  // (contributor → per-step records) from metrics.jsonl
  static std::map<int, std::vector<nlohmann::json>> steps_by_contributor(const std::string& run_dir) {
    std::map<int, std::vector<nlohmann::json>> out;
    std::ifstream in(run_dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("step")) out[j["contributor"].get<int>()].push_back(j);
    }
    return out;
  }

  static test::TempDir* dir_;
};
test::TempDir* MultiContributor::dir_ = nullptr;

TEST_F(MultiContributor, DdpWithTwoIdenticalContributorsEqualsOneBitForBit) {
  // Same data on both: the all-reduce sums g + g = 2g exactly and × 1/2 is exact, so every
  // update, and so every loss, is bitwise that of the single contributor.
  const auto one = config("ddp1", {});
  const auto two = config("ddp2", {"local_workers=2", "data.same_data_for_all_contributors=true"});
  run_training(one, {});
  run_training(two, {});
  const auto a = steps_by_contributor(one.run_dir()), b = steps_by_contributor(two.run_dir());
  ASSERT_EQ(a.at(0).size(), 12u);
  ASSERT_EQ(b.at(1).size(), 12u);
  for (std::size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(a.at(0)[i]["loss"].get<double>(), b.at(0)[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a.at(0)[i]["loss"].get<double>(), b.at(1)[i]["loss"].get<double>()) << "step " << i + 1;
  }
}

TEST_F(MultiContributor, DdpKeepsReplicasInSyncAndCountsBytes) {
  const auto cfg = config("ddp4", {"local_workers=4"});
  const auto s = run_training(cfg, {});
  const auto m = steps_by_contributor(cfg.run_dir());
  ASSERT_EQ(m.size(), 4u);
  // Different shards → different losses; the same averaged gradient → the same gradient norm.
  EXPECT_NE(m.at(0)[0]["loss"].get<double>(), m.at(1)[0]["loss"].get<double>());
  for (int w = 1; w < 4; ++w)
    for (std::size_t i = 0; i < 12; ++i)
      EXPECT_EQ(m.at(w)[i]["grad_norm"].get<double>(), m.at(0)[i]["grad_norm"].get<double>()) << w << " " << i;
  // Each step moves the ring's payload: 2·(W−1)/W of the fp32 gradient, per contributor.
  const double params = static_cast<double>(cfg.model.num_params());
  const double per_step = 2.0 * 3.0 / 4.0 * params * 4.0;
  const double sent = m.at(0).back()["bytes_sent"].get<double>();
  EXPECT_NEAR(sent, 12 * per_step, 12 * 16.0);  // chunk boundaries differ by < 4 values per chunk
  EXPECT_EQ(s.tokens, 4 * 12 * 8 * 32);
}

TEST_F(MultiContributor, AFailingContributorStopsTheRunWithItsOwnError) {
  // Contributor setup fails the same way on every worker; the error is the root cause, not
  // the abort seen by the others, and nothing hangs.
  auto cfg = config("bad", {"local_workers=3", "model.vocab_size=100"});
  try {
    run_training(cfg, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.vocab_size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pico::trainer
