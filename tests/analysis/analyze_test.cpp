// Components, `pico analyze` end to end on synthetic runs (checked against an independent
// h5py + numpy computation of every row), the quick form, decentralized metrics with known
// answers, and the errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "fixture.h"
#include "pico/analysis/components.h"
#include "pico/analysis/metrics.h"
#include "pico/common/strings.h"
#include "support/test_util.h"

namespace pico::test {
namespace {

namespace fs = std::filesystem;
using namespace pico::analysis;

std::string pico(const std::string& args) {
  return pico_binary() + " analyze " + args;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool is_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in && std::string(magic, 8) == std::string("\x89PNG\r\n\x1a\n", 8);
}

// The row identity both sides agree on.
std::string row_key(const nlohmann::json& r) {
  auto s = [&](const char* k) { return r.contains(k) && !r[k].is_null() ? r[k].dump() : std::string("-"); };
  std::string head =
      r.contains("head") ? (r["head"].is_string() ? r["head"].get<std::string>() : r["head"].dump()) : "";
  return str(s("metric"), "|", s("component"), "|", s("data_type"), "|", s("data_split"), "|", s("layer"), "|",
             s("step"), "|", head, "|", s("contributor"));
}

double value_of(const nlohmann::json& r) {
  return r["value"].is_null() ? std::numeric_limits<double>::quiet_NaN() : r["value"].get<double>();
}

class Analyze : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    write_tiny_run(run(), TinyModel{}, {10, 20, 30, 40});
    TinyModel no_val;
    no_val.val = false;
    write_tiny_run(dir_->file("noval"), no_val, {10, 20});
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string run() { return dir_->file("run"); }
  static std::string step_file(int s) { return run() + "/checkpoints/" + checkpoints::CheckpointDir::file_name(s); }
  static TempDir* dir_;
};
TempDir* Analyze::dir_ = nullptr;

TEST_F(Analyze, OvCircuitFollowsPicoAnalyzeWithGroupedQueryAttention) {
  TinyModel m;  // 4 query heads share 2 kv heads: heads 0,1 → kv 0; heads 2,3 → kv 1
  auto params = tiny_params(m, 5);
  // Zero kv head 1's value rows: heads 2 and 3 (and only they) must have zero V·O.
  params["layers.0.attention.v_proj.weight"].narrow(0, m.head_dim(), m.head_dim()).zero_();
  const auto d = tiny_checkpoint(m, "t", 1, 0, params);
  const CheckpointView view(d, "train");
  ModelShape shape{m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, 0};
  ComponentSpec spec;
  spec.name = "ov_circuit";
  spec.data_type = DataType::kWeights;
  const auto t = build_component(view, spec, shape, 0);
  ASSERT_EQ(t.size(), 5u);  // 4 heads + the layer
  const std::int64_t hd = m.head_dim();
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(t[h].head, h);
    EXPECT_EQ(t[h].value.sizes(), torch::IntArrayRef({hd, hd}));  // V_h (hd, C) · O_h (C, hd)
    EXPECT_EQ(t[h].value.abs().sum().item<double>() == 0, h >= 2) << "head " << h;
  }
  EXPECT_EQ(t[4].head, -1);
  EXPECT_EQ(t[4].value.sizes(), torch::IntArrayRef({hd, 4 * hd}));
  // Head 1 by hand: v rows [0, hd) (kv 0), o columns [hd, 2hd).
  const auto wv = params["layers.0.attention.v_proj.weight"].to(torch::kDouble);
  const auto wo = params["layers.0.attention.o_proj.weight"].to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(t[1].value, wv.narrow(0, 0, hd).mm(wo.narrow(1, hd, hd)), 1e-12, 1e-12));

  spec.data_type = DataType::kActivations;
  const auto a = build_component(view, spec, shape, 1);
  EXPECT_EQ(a[3].value.sizes(), torch::IntArrayRef({m.ld_batch, m.d_model}));  // the head's write to the residual
  EXPECT_EQ(a[4].value.sizes(), torch::IntArrayRef({m.ld_batch, 4 * m.d_model}));
  spec.data_type = DataType::kGradients;
  const auto g = build_component(view, spec, shape, 1);
  EXPECT_EQ(g[0].value.sizes(), torch::IntArrayRef({m.d_model, m.d_model}));  // d(O_h V_h)
  EXPECT_EQ(g[4].value.sizes(), torch::IntArrayRef({m.d_model, 4 * m.d_model}));

  // A model shape that does not match the tensors is an error naming the dataset.
  ModelShape wrong = shape;
  wrong.n_kv_heads = 4;
  spec.data_type = DataType::kWeights;
  try {
    build_component(view, spec, wrong, 0);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.attention.v_proj weight has shape"), std::string::npos) << e.what();
  }
}

TEST_F(Analyze, ConfigFormWritesCsvJsonPngsThatMatchAnIndependentComputation) {
  const std::string out = dir_->file("out_config");
  const std::string cfg = dir_->file("analysis.yaml");
  write_text(cfg, str(R"(analysis_name: e2e
run_path: )",
                      run(), R"(
steps: {start: 10, end: 40, step: 10}
metrics:
  - metric_name: cka
    target_checkpoint: 40
    data_split: val
    components:
      - component_name: ov_circuit
        data_type: activations
        layer_suffixes: {value_layer: attention.v_proj, output_layer: attention.o_proj}
        layers: all
      - {component_name: simple, data_type: activations, layer_suffixes: swiglu.w_2, layers: [1]}
  - metric_name: pwcca
    target_checkpoint: 20
    data_split: train
    components:
      - {component_name: simple, data_type: activations, layer_suffixes: attention.o_proj, layers: all}
  - metric_name: per
    data_split: train
    components:
      - {component_name: ov_circuit, data_type: gradients, layers: [0]}
      - {component_name: simple, data_type: weights, layer_suffixes: swiglu.w_2, layers: all}
  - metric_name: condition_number
    components: [{component_name: ov_circuit, data_type: weights, layers: all}]
  - metric_name: gini
    data_split: val
    components: [{component_name: simple, data_type: gradients, layer_suffixes: attention.v_proj, layers: all}]
  - metric_name: hoyer
    components: [{component_name: simple, data_type: activations, layer_suffixes: swiglu.w_2, layers: all}]
  - metric_name: norm
    norm_type: nuclear
    components: [{component_name: ov_circuit, data_type: weights, layers: [1]}]
  - metric_name: norm
    norm_type: inf
    components: [{component_name: simple, data_type: weights, layer_suffixes: attention.q_proj, layers: all}]
monitoring:
  output_dir: )",
                      out, "\n"));
  const auto r = run_command(pico("--config " + cfg));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string dir = out + "/e2e";  // monitoring.output_dir/analysis_name, as pico-analyze
  for (const char* f : {"metrics.csv", "metrics.json", "summary.txt"}) EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  for (const char* m : {"cka", "pwcca", "per", "condition_number", "gini", "hoyer", "norm_nuclear", "norm_inf"})
    EXPECT_TRUE(is_png(dir + "/plots/" + m + ".png")) << m;
  // The terminal summary.
  for (const char* s : {"metric", "component", "first", "last", "cka", "ov_circuit", "swiglu.w_2", "wrote"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;

  // 4 steps × (cka: 2 layers × 5 + 1; pwcca 2; per 5 + 2; cond 10; gini 2; hoyer 2; nuclear 5; inf 2)
  const std::size_t expected_rows = 4 * (10 + 1 + 2 + 5 + 2 + 10 + 2 + 2 + 5 + 2);
  const auto csv = lines_of(dir + "/metrics.csv");
  ASSERT_FALSE(csv.empty());
  EXPECT_EQ(csv[0], "metric,component,data_type,data_split,layer,step,value,head,contributor,round,target_step");
  EXPECT_EQ(csv.size(), expected_rows + 1);
  const auto json = nlohmann::json::parse(read_text(dir + "/metrics.json"));
  ASSERT_EQ(json["rows"].size(), expected_rows);
  EXPECT_EQ(json["analysis"]["analysis_name"], "e2e");
  EXPECT_EQ(json["analysis"]["steps"], nlohmann::json({10, 20, 30, 40}));

  // The same rows from h5py + numpy (tests/python/analysis_reference.py run).
  nlohmann::json spec;
  spec["shape"] = {{"n_heads", 4}, {"n_kv_heads", 2}, {"d_model", 32}};
  auto files = nlohmann::json::array();
  for (int s : {10, 20, 30, 40}) files.push_back({s, step_file(s)});
  auto metric = [&](const std::string& name, const std::string& split, nlohmann::json comps, int target = -1) {
    nlohmann::json m{{"metric", name}, {"data_split", split}, {"components", comps}, {"files", files}};
    if (target > 0) m["target_file"] = step_file(target);
    return m;
  };
  auto simple = [](const std::string& kind, const std::string& suffix, std::vector<int> layers) {
    return nlohmann::json{
        {"component_name", "simple"}, {"data_type", kind}, {"layer_suffix", suffix}, {"layers", layers}};
  };
  auto ov = [](const std::string& kind, std::vector<int> layers) {
    return nlohmann::json{{"component_name", "ov_circuit"}, {"data_type", kind}, {"layers", layers}};
  };
  spec["metrics"] = {
      metric("cka", "val", {ov("activations", {0, 1}), simple("activations", "swiglu.w_2", {1})}, 40),
      metric("pwcca", "train", {simple("activations", "attention.o_proj", {0, 1})}, 20),
      metric("per", "train", {ov("gradients", {0}), simple("weights", "swiglu.w_2", {0, 1})}),
      metric("condition_number", "train", {ov("weights", {0, 1})}),
      metric("gini", "val", {simple("gradients", "attention.v_proj", {0, 1})}),
      metric("hoyer", "train", {simple("activations", "swiglu.w_2", {0, 1})}),
      metric("norm_nuclear", "train", {ov("weights", {1})}),
      metric("norm_inf", "train", {simple("weights", "attention.q_proj", {0, 1})}),
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
  // float64 on both sides from the same float32 data; SVDs by different LAPACK paths.
  for (const auto& e : expected) {
    const std::string key = row_key(e);
    ASSERT_TRUE(got.count(key)) << "missing row " << key;
    const double want = value_of(e), have = got[key];
    EXPECT_LE(std::abs(have - want), 1e-7 * std::max(1.0, std::abs(want))) << key << ": " << have << " vs " << want;
  }
  // Comparative rows carry their target; CKA of the target step with itself is 1.
  for (const auto& row : json["rows"])
    if (row["metric"] == "cka") {
      EXPECT_EQ(row["target_step"], 40);
      if (row["step"] == 40) {
        EXPECT_NEAR(value_of(row), 1.0, 1e-12);
      }
    }
}

TEST_F(Analyze, QuickFormComputesTheRequestedMetricsForEveryLayerAndStep) {
  const std::string out = dir_->file("out_quick");
  auto r = run_command(pico(run() + " --metrics gini,hoyer,per --layers all --output " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 3 metrics × 3 recorded suffixes × 2 layers × 4 steps
  const auto json = nlohmann::json::parse(read_text(out + "/metrics.json"));
  EXPECT_EQ(json["rows"].size(), 3u * 3 * 2 * 4);
  std::set<std::string> metrics, components;
  for (const auto& row : json["rows"]) {
    metrics.insert(row["metric"]);
    components.insert(row["component"]);
    EXPECT_EQ(row["data_type"], "weights");
    EXPECT_EQ(row["data_split"], "train");
  }
  EXPECT_EQ(metrics, (std::set<std::string>{"gini", "hoyer", "per"}));
  EXPECT_EQ(components, (std::set<std::string>{"attention.v_proj", "attention.o_proj", "swiglu.w_2"}));
  for (const char* m : {"gini", "hoyer", "per"}) EXPECT_TRUE(is_png(out + "/plots/" + m + ".png")) << m;
  // Steps, layers, data types, norms and the OV circuit from the command line.
  r = run_command(pico(run() +
                       " --metrics norm,condition_number --components ov_circuit --data-type weights,gradients "
                       "--layers 1 --steps 10:30:20 --no-plots --output " +
                       out + "2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j2 = nlohmann::json::parse(read_text(out + "2/metrics.json"));
  // (3 norms + cond) × 2 data types × 5 tensors (4 heads + layer) × 2 steps
  EXPECT_EQ(j2["rows"].size(), 4u * 2 * 5 * 2);
  for (const auto& row : j2["rows"]) {
    EXPECT_TRUE(row["step"] == 10 || row["step"] == 30) << row;
    EXPECT_EQ(row["layer"], "1");
  }
  EXPECT_FALSE(fs::exists(out + "2/plots"));
  // cka defaults to activations against the last step.
  r = run_command(pico(run() + " --metrics cka --data-split val --no-plots --output " + out + "3"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j3 = nlohmann::json::parse(read_text(out + "3/metrics.json"));
  EXPECT_EQ(j3["rows"].size(), 3u * 2 * 4);
  for (const auto& row : j3["rows"]) EXPECT_EQ(row["target_step"], 40);
}

TEST_F(Analyze, BadInputGetsAClearErrorWithAHint) {
  auto expect_error = [](const std::string& args, std::vector<std::string> needles) {
    const auto r = run_command(pico(args));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    needles.push_back("HINT");
    for (const auto& n : needles)
      EXPECT_NE(r.output.find(n), std::string::npos) << args << ": " << n << "\n" << r.output;
  };
  const std::string o = " --no-plots --output " + dir_->file("err_out");
  expect_error(run() + " --metrics ginni" + o, {"unknown metric 'ginni'", "did you mean 'gini'"});
  expect_error(run() + " --metrics gini --components ov_circut" + o, {"unknown component 'ov_circut'", "ov_circuit"});
  expect_error(run() + " --metrics gini --steps 15,20" + o,
               {"no checkpoint for step 15", "it has steps 10, 20, 30, 40", "keep_latest_k"});
  expect_error(run() + " --metrics gini --steps 30:10:5" + o, {"bad step range"});
  expect_error(dir_->file("nowhere") + " --metrics gini" + o, {"does not exist", "runs/demo"});
  expect_error(dir_->file("noval") + " --metrics gini --data-type gradients --data-split val" + o,
               {"has no val learning dynamics", "no validation split", "--val-fraction"});
  expect_error(run() + " --metrics gini --data-type gradients --suffixes attention.q_proj" + o,
               {"/learning_dynamics/train/gradients/layers.0.attention.q_proj",
                "checkpointing.learning_dynamics.layer_suffixes"});
  expect_error(run() + " --metrics per --data-type activations" + o,
               {"per cannot be computed on activations", "weights, gradients"});
  expect_error(run() + " --metrics pwcca --components ov_circuit" + o,
               {"more samples than neurons", "48 samples of 128", "checkpointing.learning_dynamics.batch_size"});
  expect_error(run() + " --metrics gini --layers 5" + o, {"layer 5 does not exist", "2 layers"});
  expect_error(run() + " --metrics gini --target-step 20" + o, {"only for comparative"});
  expect_error(run() + " --metrics drift" + o, {"has no /optim/outer/theta_g", "DiLoCo"});
  expect_error(run() + " --metrics pseudo_gradient_cosine" + o, {"one contributor", "use drift"});
  expect_error("--config " + dir_->file("missing.yaml"), {"cannot be read", "configs/analysis.yaml"});
  write_text(dir_->file("typo.yaml"), "run_path: " + run() + "\nmetrcs: [{metric_name: gini}]\n");
  expect_error("--config " + dir_->file("typo.yaml"), {"unknown key 'metrcs'", "did you mean 'metrics'"});
  write_text(dir_->file("nocomp.yaml"), "run_path: " + run() + "\nmetrics: [{metric_name: gini, norm_type: inf}]\n");
  expect_error("--config " + dir_->file("nocomp.yaml"), {"norm_type is only for the norm metric"});
  expect_error("--config " + dir_->file("typo.yaml") + " --metrics gini", {"cannot be combined with --config"});
  // A damaged checkpoint: the file is named.
  const std::string bad = dir_->file("bad_run");
  fs::create_directories(bad + "/checkpoints");
  fs::copy_file(step_file(10), bad + "/checkpoints/step_000010.h5");
  fs::resize_file(bad + "/checkpoints/step_000010.h5", fs::file_size(step_file(10)) / 2);
  expect_error(bad + " --metrics gini" + o, {"step_000010.h5"});
}

// A DiLoCo run with 3 local contributors and H = 5: checkpoints at steps 3, 5, 8, 10 with
// known drifts and pseudo-gradients whose cosines are 1, -1 and 0 by construction.
class AnalyzeDecentralized : public ::testing::Test {
 protected:
  static constexpr int kContributors = 3;
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    m_.inner_steps = 5;
    const auto names = tiny_param_shapes(m_);
    for (int round = 0; round <= 2; ++round) theta_[round] = tiny_params(m_, 100 + static_cast<std::uint64_t>(round));
    torch::manual_seed(7);
    std::map<std::string, torch::Tensor> r, z;
    for (const auto& [n, shape] : names) {
      r[n] = torch::randn(shape);
      const torch::Tensor zr = torch::randn(shape);
      z[n] = zr - (zr * r[n]).sum() / (r[n] * r[n]).sum() * r[n];  // ⟂ r[n]
    }
    for (int w = 0; w < kContributors; ++w) {
      const std::string cdir = str(dir_->path(), "/run/checkpoints/contributor_", w);
      make_dirs(cdir);
      checkpoints::CheckpointDir cd(cdir, 100);
      for (int step : {3, 5, 8, 10}) {
        const int round = step / 5;
        const auto& tg = theta_[round];
        std::map<std::string, torch::Tensor> model;
        for (const auto& [n, t] : tg) model[n] = t + drift_scale(w, step);  // θ_w = θ_g + c·1
        auto d = tiny_checkpoint(m_, "dl", step, round, model, w);
        for (const auto& [n, shape] : names) {
          d.add("/optim/outer/" + n, "momentum", torch::zeros(shape));
          d.add("/optim/outer/theta_g", n, tg.at(n));
        }
        // Δ_w at the steps ending rounds 1 and 2, and a stale Δ at step 8 that must be ignored.
        if (step == 5 || step == 10 || step == 8)
          for (const auto& [n, shape] : names) {
            torch::Tensor delta = r[n];
            if (w == 1) delta = 2 * r[n];
            if (w == 2) delta = starts_with(n, "layers.0.") ? -r[n] : starts_with(n, "layers.1.") ? z[n] : r[n];
            if (step == 8) delta = torch::randn(shape);
            d.add("/pseudo_gradient", n, delta * (1.0 + 0.1 * step));
          }
        cd.save(step, d);
      }
    }
    r_ = r;
    z_ = z;
  }
  static void TearDownTestSuite() { delete dir_; }
  static double drift_scale(int w, int step) { return 0.01 * (w + 1) * (step % 5 + 1); }
  static TempDir* dir_;
  static TinyModel m_;
  static std::map<int, std::map<std::string, torch::Tensor>> theta_;
  static std::map<std::string, torch::Tensor> r_, z_;
};
TempDir* AnalyzeDecentralized::dir_ = nullptr;
TinyModel AnalyzeDecentralized::m_;
std::map<int, std::map<std::string, torch::Tensor>> AnalyzeDecentralized::theta_;
std::map<std::string, torch::Tensor> AnalyzeDecentralized::r_, AnalyzeDecentralized::z_;

TEST_F(AnalyzeDecentralized, DriftAndPseudoGradientCosineHaveTheKnownValues) {
  const std::string out = dir_->file("out");
  const auto r = run_command(pico(dir_->file("run") + " --decentralized --output " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto json = nlohmann::json::parse(read_text(out + "/metrics.json"));
  for (const char* m : {"drift", "drift_relative", "pseudo_gradient_cosine", "pseudo_gradient_norm"})
    EXPECT_TRUE(is_png(out + "/plots/" + m + ".png")) << m;
  // Groups: embedding_proj, 0, 1, output_norm, de_embedding_proj, all.
  std::map<std::string, std::int64_t> numel;
  for (const auto& [n, shape] : tiny_param_shapes(m_)) {
    std::int64_t k = 1;
    for (auto s : shape) k *= s;
    const std::string g = starts_with(n, "layers.") ? n.substr(7, 1) : n.substr(0, n.size() - 7);
    numel[g] += k;
    numel["all"] += k;
  }
  std::size_t drift_rows = 0, cos_rows = 0, norm_rows = 0;
  for (const auto& row : json["rows"]) {
    const std::string metric = row["metric"], layer = row["layer"];
    const int step = row["step"];
    ASSERT_TRUE(row.contains("round")) << row;
    EXPECT_EQ(row["round"], step / 5);
    if (metric == "drift") {
      ++drift_rows;
      const int w = std::stoi(row["contributor"].get<std::string>());
      const double want = drift_scale(w, step) * std::sqrt(static_cast<double>(numel[layer]));
      EXPECT_NEAR(value_of(row), want, 1e-5 * want) << row;
    } else if (metric == "pseudo_gradient_cosine") {
      ++cos_rows;
      EXPECT_TRUE(step == 5 || step == 10) << "cosine only at steps ending a round (H = 5): " << row;
      const std::string pair = row["contributor"];
      double want = 1.0;
      if (pair != "0-1") {
        if (layer == "0")
          want = -1.0;
        else if (layer == "1")
          want = 0.0;
        else if (layer == "all") {
          double dot = 0, n2 = 0, n1 = 0;
          for (const auto& [n, t] : r_) {
            const torch::Tensor d2 = starts_with(n, "layers.0.") ? -t : starts_with(n, "layers.1.") ? z_.at(n) : t;
            dot += (t * d2).sum().item<double>();
            n1 += (t * t).sum().item<double>();
            n2 += (d2 * d2).sum().item<double>();
          }
          want = dot / std::sqrt(n1 * n2);
        }
      }
      EXPECT_NEAR(value_of(row), want, 1e-6) << row;
    } else if (metric == "pseudo_gradient_norm") {
      ++norm_rows;
    }
  }
  EXPECT_EQ(drift_rows, 3u * 4 * 6);  // contributors × steps × groups
  EXPECT_EQ(cos_rows, 3u * 2 * 6);    // pairs × round-ending steps × groups
  EXPECT_EQ(norm_rows, 3u * 2 * 6);

  // The same rows from h5py + numpy.
  nlohmann::json spec;
  spec["shape"] = {{"n_heads", 4}, {"n_kv_heads", 2}, {"d_model", 32}};
  spec["decentralized"]["round_steps"] = {5, 10};
  auto steps = nlohmann::json::array();
  for (int s : {3, 5, 8, 10}) {
    auto files = nlohmann::json::array();
    for (int w = 0; w < kContributors; ++w)
      files.push_back(
          {w, str(dir_->path(), "/run/checkpoints/contributor_", w, "/", checkpoints::CheckpointDir::file_name(s))});
    steps.push_back({s, files});
  }
  spec["decentralized"]["steps"] = steps;
  write_text(dir_->file("spec.json"), spec.dump());
  const auto py = run_command(python() + " " + source_dir() + "/tests/python/analysis_reference.py run " +
                              dir_->file("spec.json") + " " + dir_->file("expected.json"));
  ASSERT_EQ(py.exit_code, 0) << py.output;
  std::map<std::string, double> got;
  for (const auto& row : json["rows"])
    got[str(row["metric"], row["layer"], row["step"], row["contributor"])] = value_of(row);
  const auto expected = nlohmann::json::parse(read_text(dir_->file("expected.json")));
  EXPECT_EQ(expected.size(), drift_rows * 2 + cos_rows);
  for (const auto& e : expected) {
    const std::string key = str(e["metric"], e["layer"], e["step"], e["contributor"]);
    ASSERT_TRUE(got.count(key)) << key;
    EXPECT_NEAR(got[key], value_of(e), 1e-9 * std::max(1.0, std::abs(value_of(e)))) << key;
  }
}

TEST_F(AnalyzeDecentralized, MissingPseudoGradientsAndSelectionsAreExplained) {
  const std::string o = " --no-plots --output " + dir_->file("err");
  auto r = run_command(pico(dir_->file("run") + " --metrics pseudo_gradient_cosine --steps 3,8" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* s : {"outer.inner_steps = 5", "multiple of outer.inner_steps", "HINT"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  r = run_command(pico(dir_->file("run") + " --metrics pseudo_gradient_cosine --contributors 1" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("use drift"), std::string::npos) << r.output;
  r = run_command(pico(dir_->file("run") + " --metrics drift --contributors 4" + o));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("has no contributor 4 (it has 0, 1, 2"), std::string::npos) << r.output;
  // Drift of chosen contributors and layers only.
  r = run_command(pico(dir_->file("run") + " --metrics drift --contributors 0,2 --layers 1 --steps 8" + o));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto json = nlohmann::json::parse(read_text(dir_->file("err") + "/metrics.json"));
  EXPECT_EQ(json["rows"].size(), 2u * 2);  // (drift, drift_relative) × 2 contributors
  for (const auto& row : json["rows"]) {
    EXPECT_EQ(row["layer"], "1");
    EXPECT_NE(row["contributor"], "1");
  }
  // Model metrics on a multi-contributor run carry the contributor.
  // (into the same directory: that takes --overwrite)
  r = run_command(pico(dir_->file("run") + " --metrics gini --suffixes swiglu.w_2 --layers 0 --steps 10" + o));
  ASSERT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("analysis results already exist in " + dir_->file("err")), std::string::npos) << r.output;
  r = run_command(
      pico(dir_->file("run") + " --metrics gini --suffixes swiglu.w_2 --layers 0 --steps 10 --overwrite" + o));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j2 = nlohmann::json::parse(read_text(dir_->file("err") + "/metrics.json"));
  ASSERT_EQ(j2["rows"].size(), 3u);
  for (int w = 0; w < 3; ++w) EXPECT_EQ(j2["rows"][w]["contributor"], std::to_string(w));
}

}  // namespace
}  // namespace pico::test
