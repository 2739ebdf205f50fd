// pico analyze — learning-dynamics metrics over a run's checkpoints (analysis/, docs/ANALYSIS.md).
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/analysis/config.h"
#include "pico/analysis/report.h"
#include "pico/analysis/runner.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"

namespace pico::apps {
namespace {

struct AnalyzeArgs {
  std::string run_path;
  std::string config;
  analysis::QuickOptions quick;
  std::string target_step;
  std::string output;
  bool no_plots = false;
  bool overwrite = false;
  bool list_metrics = false;
  std::size_t summary_lines = 60;
};

// Results already in `dir` are replaced only with --overwrite.
void refuse_existing_results(const std::string& dir, bool overwrite) {
  if (overwrite) return;
  for (const char* name : {"metrics.csv", "metrics.json", "summary.txt"})
    if (std::filesystem::exists(dir + "/" + name))
      throw Error(str("analysis results already exist in ", dir, " (", name, ")"),
                  "pass --overwrite to replace them, or --output DIR for another directory");
}

void run_analyze(const AnalyzeArgs& a, const CLI::App& sub) {
  if (a.list_metrics) {
    for (const auto& m : analysis::metric_infos())
      std::cout << "  " << m.name << std::string(24 - m.name.size(), ' ') << m.summary << "\n";
    std::cout << "components: simple (one matrix per layer), ov_circuit (per attention head: V_h·O_h)\n";
    return;
  }
  analysis::AnalysisConfig cfg;
  if (!a.config.empty()) {
    for (const char* flag : {"--metrics", "--components", "--suffixes", "--data-type", "--data-split", "--layers",
                             "--target-step", "--decentralized", "--contributors"})
      if (sub.count(flag) > 0)
        throw Error(
            str("pico analyze: ", flag, " cannot be combined with --config (the config file says what to compute)"),
            "edit the config file, or drop --config and use the quick form");
    cfg = analysis::load_analysis_config(a.config);
    if (!a.run_path.empty()) cfg.run_path = a.run_path;
    if (sub.count("--steps") > 0) cfg.steps = analysis::parse_steps(a.quick.steps, "--steps");
    if (cfg.run_path.empty())
      throw Error(str("no run to analyze: ", a.config, " has no run_path and no RUN_DIR was given"),
                  str("pico analyze RUN_DIR --config ", a.config, ", or add run_path: runs/NAME to the config"));
  } else {
    if (a.run_path.empty())
      throw Error("pico analyze needs a run directory or --config FILE",
                  "e.g. pico analyze runs/demo --metrics gini,hoyer,per --layers all --output out/ "
                  "(pico analyze --list-metrics lists the metrics)");
    analysis::QuickOptions q = a.quick;
    q.run_path = a.run_path;
    if (!a.target_step.empty()) {
      const auto t = analysis::parse_steps(a.target_step, "--target-step");
      if (t.size() != 1)
        throw Error(str("--target-step: '", a.target_step, "' is not one step"), "e.g. --target-step 1000");
      q.target_step = t.front();
    }
    const auto info = analysis::inspect_run(q.run_path);
    if (q.decentralized && info.layout.contributors.size() < 2) {
      // One contributor has no pairs to compare: drift only.
      log_info("analyze: ", q.run_path, " has one contributor, so --decentralized computes drift only");
      q.decentralized = false;
      q.metrics.push_back("drift");
    }
    cfg = analysis::quick_config(q, info.recorded_suffixes);
  }
  // Refuse before the work when the output directory is known already, else after it.
  if (!a.output.empty())
    refuse_existing_results(a.output, a.overwrite);
  else if (!cfg.analysis_name.empty())
    refuse_existing_results(cfg.output_dir + "/" + cfg.analysis_name, a.overwrite);
  analysis::RunnerOptions ro;
  const auto result = analysis::run_analysis(cfg, ro);
  const std::string out_dir = !a.output.empty() ? a.output : cfg.output_dir + "/" + result.analysis_name;
  refuse_existing_results(out_dir, a.overwrite);
  const auto files = analysis::write_report(out_dir, result, cfg, !a.no_plots);

  std::cout << "\n"
            << result.analysis_name << ": " << result.rows.size() << " values from " << result.layout.describe()
            << "\n\n"
            << analysis::format_summary(result, a.summary_lines);
  for (const auto& n : result.notes) std::cout << "note: " << n << "\n";
  std::cout << "\nwrote " << out_dir << "/ (" << files.size() << " files: metrics.csv, metrics.json, summary.txt"
            << (a.no_plots ? "" : ", plots/*.png") << ")\n";
  log_info("analyze: ", analysis::format_profile(result.profile));
}

void register_analyze(CLI::App& app) {
  auto args = std::make_shared<AnalyzeArgs>();
  auto* sub = app.add_subcommand("analyze", "Learning-dynamics metrics over a run's checkpoints (CSV, JSON, PNG).");
  sub->footer(
      "Two forms:\n"
      "  pico analyze --config configs/analysis.yaml         a pico-analyze style config (metrics, components, steps)\n"
      "  pico analyze RUN_DIR --metrics gini,hoyer,per --layers all --output DIR\n"
      "Metrics: cka, pwcca (activations, vs --target-step), per, condition_number, gini, hoyer, norm (= "
      "norm_frobenius,\n"
      "norm_nuclear, norm_inf); for DiLoCo runs with several contributors: drift and pseudo_gradient_cosine\n"
      "(--decentralized). Output: DIR/metrics.csv, metrics.json, summary.txt, plots/<metric>.png (gnuplot).\n"
      "Definitions and the output columns: docs/ANALYSIS.md.");
  sub->add_option("run", args->run_path,
                  "Run directory (RUN_DIR with checkpoints/step_*.h5 or checkpoints/contributor_<w>/)");
  sub->add_option("--config,-c", args->config, "Analysis config YAML (see configs/analysis.yaml)");
  sub->add_option("--metrics,-m", args->quick.metrics, "Comma-separated metric names (pico analyze --list-metrics)")
      ->delimiter(',');
  sub->add_option("--components", args->quick.components, "simple and/or ov_circuit (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--suffixes", args->quick.suffixes,
                  "Module suffixes for simple components (default: those the run recorded, e.g. swiglu.w_2)")
      ->delimiter(',');
  sub->add_option("--data-type", args->quick.data_types,
                  "weights, gradients and/or activations (default: activations for cka/pwcca, weights otherwise)")
      ->delimiter(',');
  sub->add_option("--data-split", args->quick.data_split, "train or val")->capture_default_str();
  sub->add_option("--layers", args->quick.layers, "all, or a list such as 0,3,7")->capture_default_str();
  sub->add_option("--steps", args->quick.steps, "all, a list (100,200) or START:END:STEP")->capture_default_str();
  sub->add_option("--target-step", args->target_step, "The step cka/pwcca compare against (default: the last step)");
  sub->add_option("--contributors", args->quick.contributors, "Multi-contributor runs: all, or a list such as 0,2")
      ->capture_default_str();
  sub->add_flag("--decentralized", args->quick.decentralized,
                "DiLoCo runs: drift of each contributor from theta_g, and pairwise cosine of pseudo-gradients");
  sub->add_option("--output,-o", args->output, "Output directory (default: analysis_results/<analysis name>)");
  sub->add_flag("--no-plots", args->no_plots, "Do not draw PNGs with gnuplot");
  sub->add_flag("--overwrite", args->overwrite, "Replace results already in the output directory");
  sub->add_option("--summary-lines", args->summary_lines, "Lines of the terminal summary (0 = all)")
      ->capture_default_str();
  sub->add_flag("--list-metrics", args->list_metrics, "List the metrics and exit");
  sub->callback([args, sub] { run_analyze(*args, *sub); });
}

}  // namespace

PICO_COMMAND(80, register_analyze);

}  // namespace pico::apps
