#include "pico/trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "pico/common/blas.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/trainer/checkpointing.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/metrics.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void set_threads(std::int64_t threads) {
  const int n = threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

std::string format_rate(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", tokens_per_s / 1e6);
  else if (tokens_per_s >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  return buf;
}

}  // namespace

TrainSummary run_training(const RunConfig& cfg, const TrainOptions& options) {
  cfg.validate();
  set_log_level(parse_log_level(cfg.monitoring.log_level));
  warn_if_slow_blas();
  set_threads(cfg.threads);

  const std::string run_dir = cfg.run_dir();
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  if (std::filesystem::exists(metrics_path) && !options.resume && !options.overwrite)
    throw Error(str("run directory ", run_dir, " already holds a run (", metrics_path, ")"),
                "pass --resume to continue it, --overwrite to start it over, or --set checkpointing.run_name=NEW");
  make_dirs(run_dir);
  const std::string yaml = to_yaml(cfg);
  write_file_atomic(run_dir + "/config.yaml", yaml);
  log_info("resolved config:\n", yaml);

  const torch::Device device = resolve_device(cfg.device);
  auto dataset = data::Dataset::open(cfg.data.path, cfg.data.verify);
  log_info("dataset ", cfg.data.path, ": ", dataset->manifest().train_tokens(), " train tokens, ",
           dataset->manifest().val_tokens(), " validation tokens (", dataset->manifest().dataset_hash.substr(0, 12), ")");
  Contributor contributor(cfg, dataset, device);
  log_info("model: ", cfg.model.num_params() / 1e6, "M parameters on ", device.str(), ", ", torch::get_num_threads(),
           " threads; ", contributor.tokens_per_step(), " tokens per step");

  RunCheckpointer checkpointer(cfg, *dataset);
  TrainState resumed;
  if (options.resume) {
    if (auto st = checkpointer.resume(contributor)) resumed = *st;
    truncate_metrics_after(metrics_path, resumed.step);  // the resumed run redoes every later step
  } else {
    checkpointer.start_fresh(options.overwrite);
  }

  MetricsWriter metrics(metrics_path, /*truncate=*/!options.resume);
  TrainSummary summary;
  summary.run_dir = run_dir;
  summary.val_loss = std::nan("");

  const std::int64_t max_steps = cfg.training.max_steps;
  const std::int64_t log_every = cfg.monitoring.log_every_n_steps;
  const std::int64_t eval_every = cfg.evaluation.every_n_steps;
  std::int64_t step = resumed.step;  // completed optimizer steps
  std::int64_t tokens = resumed.tokens;
  const std::int64_t stop_step = options.stop_after_step > 0 ? std::min(options.stop_after_step, max_steps) : max_steps;
  double interval_loss = 0;
  std::int64_t interval_steps = 0, interval_tokens = 0;
  const auto t_start = Clock::now();
  auto t_interval = Clock::now();
  double tok_per_s = 0;
  ProgressLine progress;

  while (step < stop_step) {
    const StepResult r = contributor.train_step(step);
    ++step;
    tokens += r.tokens;
    interval_loss += r.loss;
    ++interval_steps;
    interval_tokens += r.tokens;

    const bool last = step == max_steps;
    checkpointer.maybe_save(contributor, {step, 0, tokens}, /*force=*/step == stop_step);
    const bool do_eval = last || (eval_every > 0 && step % eval_every == 0);
    const bool do_log = last || do_eval || step % log_every == 0;
    if (!do_log) continue;

    const double dt = seconds_since(t_interval);
    tok_per_s = dt > 0 ? static_cast<double>(interval_tokens) / dt : 0;
    nlohmann::json rec = {{"step", step},
                          {"tokens", tokens},
                          {"loss", interval_loss / static_cast<double>(interval_steps)},
                          {"lr", r.lr},
                          {"grad_norm", r.grad_norm},
                          {"tok_per_s", tok_per_s},
                          {"elapsed_s", seconds_since(t_start)}};
    summary.loss = interval_loss / static_cast<double>(interval_steps);
    if (do_eval) {
      const double v = contributor.evaluate();
      if (std::isfinite(v)) {
        rec["val_loss"] = v;
        summary.val_loss = v;
      }
    }
    metrics.write(rec);

    const double elapsed = seconds_since(t_start);
    const double eta = elapsed / static_cast<double>(step - resumed.step) * static_cast<double>(stop_step - step);
    std::string line = str("step ", step, "/", max_steps, " | loss ", std::round(summary.loss * 1000) / 1000);
    if (std::isfinite(summary.val_loss)) line += str(" | val ", std::round(summary.val_loss * 1000) / 1000);
    char lr_buf[16];
    std::snprintf(lr_buf, sizeof lr_buf, "%.2e", r.lr);
    line += str(" | ", format_rate(tok_per_s), " tok/s | lr ", lr_buf, " | ETA ", format_duration(eta));
    progress.update(line, /*force=*/do_eval);

    interval_loss = 0;
    interval_steps = 0;
    interval_tokens = 0;
    t_interval = Clock::now();
  }

  checkpointer.maybe_save(contributor, {step, 0, tokens}, /*force=*/true);  // no-op when this step is saved
  checkpointer.finish();
  summary.steps = step;
  summary.tokens = tokens;
  summary.seconds = seconds_since(t_start);
  std::string done = str("done: ", step, " steps, ", tokens, " tokens in ", format_duration(summary.seconds),
                         " | loss ", summary.loss);
  if (std::isfinite(summary.val_loss)) done += str(" | val_loss ", summary.val_loss);
  progress.finish(done);
  log_info("metrics: ", metrics_path);
  return summary;
}

}  // namespace pico::trainer
