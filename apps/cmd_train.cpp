// pico train — start a run from a YAML config.
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/common/error.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/trainer.h"

namespace pico::apps {
namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  bool overwrite = false;
  std::int64_t stop_after_step = 0;
  bool help_config = false;
};

void run_train(const TrainArgs& a) {
  if (a.help_config) {
    std::cout << "Config keys (YAML sections, or --set section.key=value):\n";
    for (const auto& line : trainer::describe_keys()) std::cout << "  " << line << "\n";
    return;
  }
  if (a.config.empty()) throw Error("pico train needs --config FILE", "e.g. pico train --config configs/demo.yaml");
  const trainer::RunConfig cfg = trainer::load_run_config(a.config, a.overrides);
  trainer::TrainOptions opts;
  opts.resume = a.resume || cfg.checkpointing.auto_resume;
  opts.overwrite = a.overwrite;
  opts.stop_after_step = a.stop_after_step;
  trainer::run_training(cfg, opts);
}

}  // namespace

namespace {

void register_train(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "Train a model: start a run from a YAML config.");
  sub->add_option("--config,-c", args->config, "YAML run config (see configs/demo.yaml)");
  sub->add_option("--set", args->overrides,
                  "Override a config key, e.g. --set training.max_steps=100 (repeatable)")
      ->take_all();
  sub->add_flag("--resume", args->resume, "Continue from the latest valid checkpoint of the run");
  sub->add_flag("--overwrite", args->overwrite, "Start over in a run directory that already holds a run");
  sub->add_option("--stop-after-step", args->stop_after_step,
                  "Stop after this step of the schedule (saving a checkpoint there); --resume continues the run")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--help-config", args->help_config, "List every config key with its type and meaning");
  sub->callback([args] { run_train(*args); });
}

}  // namespace

PICO_COMMAND(10, register_train);

}  // namespace pico::apps
