// End to end: `pico data prepare` → `pico train` (a tiny model, a checkpoint every 5 steps)
// → `pico analyze` with every metric on every data type and both components, each row
// checked against an independent h5py + numpy/scipy computation on the same real
// checkpoints (tests/python/analysis_reference.py); then bad input on a real run: a step that
// was not saved, a damaged checkpoint, a checkpoint without learning dynamics.
//
// What this is not: the metric definitions on fixed matrices (metrics_test.cpp) or the
// DiLoCo metrics (analyze_test.cpp; pico train on this branch has no outer optimizer, so
// those use checkpoints written by the checkpoints library in the documented layout).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/common/strings.h"
#include "support/test_util.h"

namespace pico::test {
namespace {

namespace fs = std::filesystem;

constexpr int kLdBatch = 96;  // > d_model (32): pwcca on the residual-stream activations works

double value_of(const nlohmann::json& r) {
  return r["value"].is_null() ? std::numeric_limits<double>::quiet_NaN() : r["value"].get<double>();
}

std::string row_key(const nlohmann::json& r) {
  auto s = [&](const char* k) {
    if (!r.contains(k) || r[k].is_null() || r[k] == "") return std::string("-");  // "" = no head
    return r[k].is_string() ? r[k].get<std::string>() : r[k].dump();
  };
  return str(s("metric"), "|", s("component"), "|", s("data_type"), "|", s("data_split"), "|", s("layer"), "|",
             s("step"), "|", s("head"));
}

class AnalyzeTrained : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto r = run_command(pico_binary() + " data prepare --input " + test_data("kjv_small.txt") + " --output " +
                         dir_->file("ds") + " --vocab-size 512 --shards 2 --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    write_text(dir_->file("train.yaml"),
               str("model: {d_model: 32, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
                   " attention_n_kv_heads: 2, activation_hidden_dim: 64}\n"
                   "training: {max_steps: 20, optimization: {lr: 3.0e-3, lr_scheduler: cosine, lr_warmup_steps: 4}}\n"
                   "data: {path: ",
                   dir_->file("ds"),
                   ", dataloader: {batch_size: 8}}\n"
                   "evaluation: {every_n_steps: 0, batches: 1}\n"
                   "checkpointing: {runs_dir: ",
                   dir_->file("runs"),
                   ", run_name: tiny, save_every_n_steps: 5, keep_latest_k: 10,"
                   " learning_dynamics: {batch_size: ",
                   kLdBatch,
                   "}}\n"
                   "monitoring: {logging: {log_every_n_steps: 10}}\n"
                   "threads: 2\nseed: 3\n"));
    r = run_command(pico_binary() + " train --config " + dir_->file("train.yaml"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string run() { return dir_->file("runs/tiny"); }
  static std::string step_file(int s) { return run() + "/checkpoints/" + checkpoints::CheckpointDir::file_name(s); }
  static std::string pico(const std::string& args) { return pico_binary() + " analyze " + args; }
  static TempDir* dir_;
};
TempDir* AnalyzeTrained::dir_ = nullptr;

TEST_F(AnalyzeTrained, EveryMetricOnRealCheckpointsMatchesNumpyScipy) {
  for (int s : {5, 10, 15, 20}) ASSERT_TRUE(fs::exists(step_file(s))) << step_file(s);
  const std::string out = dir_->file("analysis");
  write_text(dir_->file("analysis.yaml"), str(R"(analysis_name: tiny-e2e
run_path: )",
                                              run(), R"(
steps: {start: 5, end: 20, step: 5}
metrics:
  - metric_name: cka
    target_checkpoint: 20
    data_split: val
    components:
      - {component_name: ov_circuit, data_type: activations, layers: all}
      - {component_name: simple, data_type: activations, layer_suffixes: swiglu.w_2, layers: all}
  - metric_name: pwcca
    target_checkpoint: 20
    data_split: val
    components:
      - {component_name: simple, data_type: activations, layer_suffixes: swiglu.w_2, layers: all}
      - {component_name: simple, data_type: activations, layer_suffixes: attention.v_proj, layers: [1]}
      - {component_name: simple, data_type: activations, layer_suffixes: attention.o_proj, layers: [0]}
  - metric_name: per
    components:
      - {component_name: simple, data_type: weights, layer_suffixes: swiglu.w_2, layers: all}
      - {component_name: ov_circuit, data_type: gradients, layers: [0]}
  - metric_name: condition_number
    components:
      - {component_name: ov_circuit, data_type: weights, layers: all}
      - {component_name: simple, data_type: gradients, layer_suffixes: attention.v_proj, layers: all}
  - metric_name: gini
    data_split: val
    components:
      - {component_name: simple, data_type: gradients, layer_suffixes: swiglu.w_2, layers: all}
      - {component_name: simple, data_type: weights, layer_suffixes: attention.q_proj, layers: [0]}
  - metric_name: hoyer
    components:
      - {component_name: simple, data_type: activations, layer_suffixes: swiglu.w_2, layers: all}
  - metric_name: norm
    norm_type: frobenius
    components: [{component_name: simple, data_type: gradients, layer_suffixes: attention.o_proj, layers: all}]
  - metric_name: norm
    norm_type: nuclear
    components: [{component_name: ov_circuit, data_type: weights, layers: [1]}]
  - metric_name: norm
    norm_type: inf
    components: [{component_name: simple, data_type: weights, layer_suffixes: swiglu.w_2, layers: all}]
monitoring:
  output_dir: )",
                                              out, "\n"));
  const auto r = run_command(pico("--config " + dir_->file("analysis.yaml")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string dir = out + "/tiny-e2e";
  // per step: cka 2·5 + 2; pwcca 2 + 1 + 1; per 2 + 5; cond 10 + 2; gini 2 + 1; hoyer 2; fro 2; nuc 5; inf 2
  const std::size_t expected_rows = 4 * (12 + 4 + 7 + 12 + 3 + 2 + 2 + 5 + 2);
  const auto json = nlohmann::json::parse(read_text(dir + "/metrics.json"));
  ASSERT_EQ(json["rows"].size(), expected_rows);
  std::ifstream csv(dir + "/metrics.csv");
  std::size_t csv_lines = 0;
  for (std::string line; std::getline(csv, line);) ++csv_lines;
  EXPECT_EQ(csv_lines, expected_rows + 1);
  for (const char* m :
       {"cka", "pwcca", "per", "condition_number", "gini", "hoyer", "norm_frobenius", "norm_nuclear", "norm_inf"})
    EXPECT_GT(fs::file_size(dir + "/plots/" + m + ".png"), 1000u) << m;

  // The independent computation over the same files.
  auto files = nlohmann::json::array();
  for (int s : {5, 10, 15, 20}) files.push_back({s, step_file(s)});
  auto metric = [&](const std::string& name, const std::string& split, nlohmann::json comps, bool target = false) {
    nlohmann::json m{{"metric", name}, {"data_split", split}, {"components", comps}, {"files", files}};
    if (target) m["target_file"] = step_file(20);
    return m;
  };
  auto simple = [](const std::string& kind, const std::string& suffix, std::vector<int> layers) {
    return nlohmann::json{
        {"component_name", "simple"}, {"data_type", kind}, {"layer_suffix", suffix}, {"layers", layers}};
  };
  auto ov = [](const std::string& kind, std::vector<int> layers) {
    return nlohmann::json{{"component_name", "ov_circuit"}, {"data_type", kind}, {"layers", layers}};
  };
  nlohmann::json spec;
  spec["shape"] = {{"n_heads", 4}, {"n_kv_heads", 2}, {"d_model", 32}};
  spec["metrics"] = {
      metric("cka", "val", {ov("activations", {0, 1}), simple("activations", "swiglu.w_2", {0, 1})}, true),
      metric("pwcca", "val",
             {simple("activations", "swiglu.w_2", {0, 1}), simple("activations", "attention.v_proj", {1}),
              simple("activations", "attention.o_proj", {0})},
             true),
      metric("per", "train", {simple("weights", "swiglu.w_2", {0, 1}), ov("gradients", {0})}),
      metric("condition_number", "train", {ov("weights", {0, 1}), simple("gradients", "attention.v_proj", {0, 1})}),
      metric("gini", "val", {simple("gradients", "swiglu.w_2", {0, 1}), simple("weights", "attention.q_proj", {0})}),
      metric("hoyer", "train", {simple("activations", "swiglu.w_2", {0, 1})}),
      metric("norm_frobenius", "train", {simple("gradients", "attention.o_proj", {0, 1})}),
      metric("norm_nuclear", "train", {ov("weights", {1})}),
      metric("norm_inf", "train", {simple("weights", "swiglu.w_2", {0, 1})}),
  };
  write_text(dir_->file("spec.json"), spec.dump());
  const auto py = run_command(python() + " " + source_dir() + "/tests/python/analysis_reference.py run " +
                              dir_->file("spec.json") + " " + dir_->file("expected.json"));
  ASSERT_EQ(py.exit_code, 0) << py.output;
  const auto expected = nlohmann::json::parse(read_text(dir_->file("expected.json")));
  ASSERT_EQ(expected.size(), expected_rows);
  std::map<std::string, double> got;
  for (const auto& row : json["rows"]) {
    nlohmann::json k = row;
    if (k.contains("head")) k["head"] = std::to_string(k["head"].get<int>());
    got[row_key(k)] = value_of(row);
  }
  ASSERT_EQ(got.size(), expected_rows) << "duplicate row keys";
  // Both sides in float64 from the same float32 datasets. Tolerances (relative, floor 1):
  // elementwise metrics and CKA 1e-9; SVD metrics 1e-7 (torch's gesdd vs scipy's gesdd
  // through different BLAS calls; the condition number of a trained OV product reaches
  // ~1e4); PWCCA 1e-6 (eigh of Σ vs eigh of pinv(Σ), Σ conditioned up to 1/ε = 1e6), except on
  // attention.o_proj: its input, the heads' outputs, has near-duplicate halves in this barely
  // trained GQA model (two query heads share each kv head; attention is nearly uniform), so
  // its covariance has eigenvalues near ε, the canonical correlations come in near-degenerate
  // clusters, and PWCCA's weights (which depend on the singular vectors inside a cluster) are
  // only determined to ~1e-4 by any LAPACK path: 1e-3 there.
  std::set<std::string> metrics_seen;
  for (const auto& e : expected) {
    const std::string key = row_key(e);
    ASSERT_TRUE(got.count(key)) << "missing row " << key;
    const std::string m = e["metric"];
    metrics_seen.insert(m);
    const bool svd = m == "per" || m == "condition_number" || m == "norm_nuclear";
    const double tol = m == "pwcca" ? (e["component"] == "attention.o_proj" ? 1e-3 : 1e-6) : svd ? 1e-7 : 1e-9;
    const double want = value_of(e), have = got[key];
    ASSERT_TRUE(std::isfinite(want)) << key;  // real checkpoints: every value defined
    EXPECT_LE(std::abs(have - want), tol * std::max(1.0, std::abs(want))) << key << ": " << have << " vs " << want;
  }
  EXPECT_EQ(metrics_seen.size(), 9u);
  // The target step compared with itself: CKA exactly 1; PWCCA 1 − O(ε/λ_min) with its ε = 1e-6
  // regularization of the normalized covariances.
  for (const auto& row : json["rows"]) {
    if (row["step"] != 20) continue;
    if (row["metric"] == "cka") {
      EXPECT_NEAR(value_of(row), 1.0, 1e-12) << row;
    } else if (row["metric"] == "pwcca") {
      EXPECT_NEAR(value_of(row), 1.0, 1e-3) << row;
    }
  }
}

TEST_F(AnalyzeTrained, QuickFormOnEveryDataTypeAndBothComponents) {
  const std::string out = dir_->file("quick");
  const auto r = run_command(pico(run() +
                                  " --metrics gini,hoyer,per,condition_number,norm --components simple,ov_circuit "
                                  "--data-type weights,gradients --layers all --no-plots --output " +
                                  out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto json = nlohmann::json::parse(read_text(out + "/metrics.json"));
  // metrics (gini, hoyer, per, cond, 3 norms) × data types 2 × (3 suffixes + 5 ov tensors) × 2 layers × 4 steps
  EXPECT_EQ(json["rows"].size(), 7u * 2 * (3 + 5) * 2 * 4);
  std::set<std::string> components;
  for (const auto& row : json["rows"]) {
    components.insert(row["component"]);
    // Finite, except the condition number of the per-head OV gradient O_h·∂V_h + ∂O_h·V_h
    // (C × C of rank ≤ 2·head_dim < C), whose smallest singular value may be exactly 0.
    if (!(row["metric"] == "condition_number" && row["component"] == "ov_circuit" && row["data_type"] == "gradients")) {
      EXPECT_TRUE(row["value"].is_number()) << row;
    }
  }
  EXPECT_EQ(components, (std::set<std::string>{"attention.v_proj", "attention.o_proj", "swiglu.w_2", "ov_circuit"}));
  // The summary table on the terminal.
  for (const char* s : {"first", "last", "min", "max", "ov_circuit", "gradients"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
}

TEST_F(AnalyzeTrained, PlotsLandInARelativeOutputDirectory) {
  // gnuplot runs inside the plots directory: a relative --output must still work.
  const auto r = run_command("cd " + dir_->path() + " && " + pico(run() + " --metrics norm --output rel_out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_->file("rel_out/plots/norm_frobenius.png"))) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_->file("rel_out/metrics.csv")));
}

TEST_F(AnalyzeTrained, BadInputOnARealRunIsExplained) {
  const std::string o = " --no-plots --output " + dir_->file("bad_out");
  // A step that was not saved: the available ones are listed.
  auto r = run_command(pico(run() + " --metrics gini --steps 5,7"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"no checkpoint for step 7", "it has steps 5, 10, 15, 20", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  // cka against a target step that was not saved.
  r = run_command(pico(run() + " --metrics cka --target-step 12" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"no checkpoint for metrics[0].target_checkpoint 12", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;

  // A damaged chunk: Fletcher32 catches it and the file is named.
  const std::string bad = dir_->file("damaged");
  fs::create_directories(bad + "/checkpoints");
  for (int s : {5, 10}) fs::copy_file(step_file(s), bad + "/checkpoints/" + checkpoints::CheckpointDir::file_name(s));
  const std::string victim = bad + "/checkpoints/step_000010.h5";
  // Damage the middle of a dataset the analysis reads (found by its first 256 bytes; the
  // gradient, since the weight's bytes also appear in /model and the val split).
  const auto d = checkpoints::read_checkpoint(victim, {{"/model", "/optim", "/learning_dynamics/val"}});
  const auto& w = d.tensor("/learning_dynamics/train/gradients", "layers.1.swiglu.w_2");
  const std::string bytes = read_text(victim);
  const auto pos = bytes.find(std::string(static_cast<const char*>(w.data_ptr()), 256));
  ASSERT_NE(pos, std::string::npos);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(pos) + 100);
    const char junk[4] = {0x11, 0x22, 0x33, 0x44};
    f.write(junk, 4);
  }
  r = run_command(pico(bad + " --metrics gini --data-type gradients --suffixes swiglu.w_2" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"step_000010.h5", "layers.1.swiglu.w_2", "Fletcher32", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;

  // Not an HDF5 file at all.
  const std::string junk_run = dir_->file("junk");
  fs::create_directories(junk_run + "/checkpoints");
  write_text(junk_run + "/checkpoints/step_000005.h5", "this is not a checkpoint\n");
  r = run_command(pico(junk_run + " --metrics gini" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"step_000005.h5", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;

  // A module the run did not record.
  r = run_command(pico(run() + " --metrics hoyer --data-type activations --suffixes swiglu.w_0" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"/learning_dynamics/train/activations/layers.0.swiglu.w_0", "layer_suffixes", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
}

}  // namespace
}  // namespace pico::test
