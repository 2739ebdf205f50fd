// pico/analysis/runner.h — runs an analysis over a run's checkpoints: one row per
// (metric, component, layer[, head][, contributor], step).
//
// Per analyzed contributor, the checkpoints of the requested steps are read one after the
// other; while one is analyzed the next is read on a second thread (HDF5 reads are
// serialized inside the checkpoints library, so one reader is all there is). Only the groups
// the metrics need are read: /optim/inner, /tokenizer, the other split and unused data
// types are skipped. Components are built once per step and shared by the metrics that use
// them; singular values once per tensor and shared by per, condition_number and the nuclear
// norm. Comparative metrics (cka, pwcca) first build the components of their
// target_checkpoint.
//
// Decentralized metrics (DiLoCo runs; docs/ANALYSIS.md):
//   drift                  per contributor w and layer: ‖θ_w − θ_g‖ from /model and
//                          /optim/outer/theta_g (row metric "drift"), and that over ‖θ_g‖
//                          ("drift_relative"), at every analyzed step.
//   pseudo_gradient_cosine per pair (a, b) and layer: cos(Δ_a, Δ_b) from /pseudo_gradient at
//                          steps that end an outer round (step % outer.inner_steps == 0), and
//                          each contributor's ‖Δ_w‖ per layer ("pseudo_gradient_norm").
// A "layer" there is every parameter of layers.<l>; embedding_proj, output_norm and
// de_embedding_proj are their own rows, and "all" is the whole model.
//
// What this is not: no file output (report.h), no command line (apps/cmd_analyze.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pico/analysis/components.h"
#include "pico/analysis/config.h"
#include "pico/analysis/run_layout.h"

namespace pico::analysis {

struct Row {
  std::string metric;      // "gini", "norm_nuclear", "drift", ...
  std::string component;   // simple: the module suffix ("swiglu.w_2"); "ov_circuit"; "model"; "pseudo_gradient"
  std::string data_type;   // weights | gradients | activations | pseudo_gradients
  std::string data_split;  // train | val; "" for decentralized metrics
  std::string layer;       // "3"; decentralized: also "embedding_proj", "all", ...
  std::int64_t step = 0;
  double value = 0;                         // NaN / ±inf where the metric is undefined (see metrics.h)
  std::string head;                         // ov_circuit: the query head of a per-head row; "" = the whole layer
  std::string contributor;                  // multi-contributor runs: "w"; pseudo_gradient_cosine: "a-b"
  std::optional<std::int64_t> round;        // DiLoCo runs: completed outer rounds (/train_state@round)
  std::optional<std::int64_t> target_step;  // cka, pwcca: the step compared against
};

// Where the time went (seconds). The reader thread's time overlaps the analysis; the
// main thread's time is read_wait + plan + components + svd + metrics + decentralized.
struct Profile {
  double total_seconds = 0;
  double read_seconds = 0;                       // loader thread: inspect layout + HDF5 read + Fletcher32 checks
  double read_wait_seconds = 0;                  // main thread blocked on the loader (reading not hidden by analysis)
  double component_seconds = 0;                  // building components (OV products, concatenation)
  double svd_seconds = 0;                        // singular values (shared by per, condition_number, nuclear norm)
  std::map<std::string, double> metric_seconds;  // each metric's own arithmetic (excluding SVDs)
  double decentralized_seconds = 0;              // drift and cosine arithmetic
  std::int64_t files_read = 0;
  std::uint64_t bytes_read = 0;  // tensor payload read
};

struct AnalysisResult {
  std::string analysis_name;
  std::string run_path;
  RunLayout layout;
  ModelShape shape;
  std::vector<std::int64_t> steps;  // analyzed steps
  std::vector<Row> rows;            // sorted: metric (config order), component, layer, head, contributor, step
  std::vector<std::string> notes;   // warnings worth repeating in the summary
  Profile profile;
};

struct RunnerOptions {
  bool progress = true;  // a live progress line on stderr
};

// Throws pico::Error (bad steps or layers, with the available ones), MissingData (the
// checkpoints lack what a metric needs; the HINT names the config key that records it) or
// checkpoints::CorruptCheckpoint (a damaged file).
AnalysisResult run_analysis(const AnalysisConfig& cfg, const RunnerOptions& options = {});

// The layout and the model shape / recorded suffixes of a run, from its first checkpoint
// (read without its tensors). For the quick form's defaults.
struct RunInfo {
  RunLayout layout;
  ModelShape shape;
  std::string run_name;
  std::vector<std::string> recorded_suffixes;  // /learning_dynamics@layer_suffixes
};
RunInfo inspect_run(const std::string& run_path);

}  // namespace pico::analysis
