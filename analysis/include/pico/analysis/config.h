// pico/analysis/config.h — what `pico analyze` computes: the metric table, the analysis
// config (modeled on pico-analyze's YAML), and the quick command-line form.
//
//   analysis_name: demo-analysis             # output goes to monitoring.output_dir/analysis_name
//   run_path: runs/demo                      # the run directory (pico-analyze's --run_path)
//   steps: {start: 0, end: 1000, step: 250}  # or a list; omitted = every saved step
//   contributors: all                        # multi-contributor runs: a list or all (default)
//   metrics:
//     - metric_name: cka                     # see metric_infos()
//       target_checkpoint: 1000              # comparative metrics; default: the last step
//       data_split: val                      # train | val (default train)
//       components:
//         - component_name: ov_circuit       # simple | ov_circuit
//           data_type: activations           # weights | gradients | activations
//           layer_suffixes: {value_layer: attention.v_proj, output_layer: attention.o_proj}
//           layers: [0, 3]                   # or `all`
//     - metric_name: norm
//       norm_type: nuclear                   # frobenius | nuclear | inf
//       components: [{component_name: simple, data_type: weights, layer_suffixes: swiglu.w_2, layers: all}]
//     - metric_name: drift                   # decentralized runs: no components
//       layers: all
//   monitoring: {output_dir: analysis_results}
//
// Parsing is the analysis folder's one yaml-cpp translation unit (src/config_io.cpp), which
// also reads the model shape from a checkpoint's /config YAML. Every error names the key,
// the bad value and what is allowed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pico/analysis/components.h"

namespace pico::analysis {

enum class MetricKind {
  kCka,
  kPwcca,
  kPer,
  kConditionNumber,
  kGini,
  kHoyer,
  kNorm,
  kDrift,                 // ‖θ_w − θ_g‖ per layer, per contributor (and relative to ‖θ_g‖)
  kPseudoGradientCosine,  // cos(Δ_a, Δ_b) per layer, per pair of contributors, per round
};

struct MetricInfo {
  std::string_view name;
  MetricKind kind;
  bool comparative = false;          // against the components of target_checkpoint
  bool decentralized = false;        // over contributors' θ_w, θ_g and Δ_w, not over components
  std::vector<DataType> data_types;  // those it may be computed on (empty for decentralized)
  std::string_view summary;          // one line, for --help and errors
};

const std::vector<MetricInfo>& metric_infos();
const MetricInfo* find_metric(std::string_view name);
std::vector<std::string> metric_names();

struct MetricConfig {
  std::string metric_name;
  std::string norm_type;                          // norm: frobenius | nuclear | inf
  std::string data_split = "train";               // train | val
  std::optional<std::int64_t> target_checkpoint;  // comparative; nullopt = the last analyzed step
  std::vector<ComponentSpec> components;          // not for decentralized metrics
  std::vector<std::int64_t> layers;               // decentralized metrics; empty = every layer
  const MetricInfo& info() const;
  // The `metric` column of the output: "norm_nuclear" for norm, else metric_name.
  std::string output_name() const;
};

struct AnalysisConfig {
  std::string analysis_name;                              // default: "<run name>_analysis"
  std::string run_path;                                   // run directory, or its checkpoints directory
  std::vector<std::int64_t> steps;                        // empty = every saved step
  std::optional<std::vector<std::int64_t>> contributors;  // multi-contributor runs; nullopt = all
  std::vector<MetricConfig> metrics;
  std::string output_dir = "analysis_results";  // monitoring.output_dir
  std::string source;                           // where it came from, for errors

  // Throws pico::Error naming the key and the value (metric/component/data type
  // combinations, norm types, splits). Layer ranges are checked against the model later.
  void validate() const;
};

AnalysisConfig parse_analysis_config(const std::string& yaml, const std::string& source);
AnalysisConfig load_analysis_config(const std::string& path);

// Steps: "100,200,300", "0:1000:250" (start:end:step, end included) or "all" (→ empty).
std::vector<std::int64_t> parse_steps(const std::string& text, const std::string& what);
// Layers: "0,3,5" or "all" (→ empty).
std::vector<std::int64_t> parse_layers(const std::string& text, const std::string& what);

// The quick form: pico analyze RUN_DIR --metrics gini,hoyer,per --layers all --output DIR.
struct QuickOptions {
  std::string run_path;
  std::vector<std::string> metrics;                  // names; "norm" = all three norms
  std::vector<std::string> components = {"simple"};  // simple, ov_circuit
  std::vector<std::string> suffixes;                 // simple: module suffixes; default = those the run recorded
  std::vector<std::string> data_types;               // default: activations for cka/pwcca, weights otherwise
  std::string data_split = "train";
  std::string layers = "all";
  std::string steps = "all";
  std::optional<std::int64_t> target_step;
  bool decentralized = false;        // adds drift and pseudo_gradient_cosine
  std::string contributors = "all";  // "all" or a list
};
// `recorded_suffixes`: /learning_dynamics@layer_suffixes of the run (the default suffixes).
AnalysisConfig quick_config(const QuickOptions& q, const std::vector<std::string>& recorded_suffixes);

// model.* (and outer.inner_steps) from a checkpoint's /config YAML.
ModelShape parse_model_shape(const std::string& config_yaml, const std::string& source);
// checkpointing.run_name from a checkpoint's /config YAML; "" when absent.
std::string run_name_from_config(const std::string& config_yaml);

}  // namespace pico::analysis
