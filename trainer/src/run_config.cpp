#include "pico/trainer/run_config.h"

#include "pico/common/codec.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/optim/schedule.h"

namespace pico::trainer {
namespace {

template <typename T>
void require(bool ok, const char* key, const T& value, const std::string& allowed) {
  if (!ok) throw Error(str("bad value for ", key, ": ", value), str(key, " must be ", allowed));
}

}  // namespace

void RunConfig::validate() const {
  model.validate();
  training.optimization.adamw.validate();
  const auto& o = training.optimization;
  require(training.max_steps > 0, "training.max_steps", training.max_steps, "> 0");
  require(o.lr > 0 && o.lr < 10, "training.optimization.lr", o.lr, "in (0, 10)");
  optim::parse_lr_schedule(o.lr_scheduler);
  require(o.lr_warmup_steps >= 0, "training.optimization.lr_warmup_steps", o.lr_warmup_steps, ">= 0");
  require(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "training.optimization.min_lr_ratio", o.min_lr_ratio,
          "in [0, 1]");
  require(o.gradient_accumulation_steps >= 1, "training.optimization.gradient_accumulation_steps",
          o.gradient_accumulation_steps, ">= 1");
  require(o.max_grad_norm >= 0, "training.optimization.max_grad_norm", o.max_grad_norm, ">= 0 (0 disables clipping)");
  require(data.batch_size >= 1, "data.dataloader.batch_size", data.batch_size, ">= 1");
  if (data.batch_size % o.gradient_accumulation_steps != 0)
    throw Error(str("data.dataloader.batch_size (", data.batch_size,
                    ") is not divisible by training.optimization.gradient_accumulation_steps (",
                    o.gradient_accumulation_steps, ")"),
                "each micro-batch holds batch_size / gradient_accumulation_steps sequences");
  require(evaluation.every_n_steps >= 0, "evaluation.every_n_steps", evaluation.every_n_steps, ">= 0");
  require(evaluation.batches >= 1, "evaluation.batches", evaluation.batches, ">= 1");
  require(!checkpointing.runs_dir.empty(), "checkpointing.runs_dir", "\"\"", "a directory");
  require(checkpointing.run_name.find('/') == std::string::npos, "checkpointing.run_name", checkpointing.run_name,
          "a plain name without '/'");
  require(checkpointing.save_every_n_steps >= 0, "checkpointing.save_every_n_steps", checkpointing.save_every_n_steps,
          ">= 0 (0 = only at the end)");
  require(checkpointing.keep_latest_k == 0 || checkpointing.keep_latest_k >= 2, "checkpointing.keep_latest_k",
          checkpointing.keep_latest_k,
          "0 (keep every checkpoint) or >= 2 (a crash while saving must leave a valid one)");
  require(checkpointing.keep_every_n_steps >= 0, "checkpointing.keep_every_n_steps", checkpointing.keep_every_n_steps,
          ">= 0 (0 = none)");
  const auto& ld = checkpointing.learning_dynamics;
  require(ld.batch_size >= 1, "checkpointing.learning_dynamics.batch_size", ld.batch_size, ">= 1");
  require(ld.sequence_idx >= -model.max_seq_len && ld.sequence_idx < model.max_seq_len,
          "checkpointing.learning_dynamics.sequence_idx", ld.sequence_idx,
          str("in [-max_seq_len, max_seq_len) = [", -model.max_seq_len, ", ", model.max_seq_len, ")"));
  require(monitoring.log_every_n_steps >= 1, "monitoring.logging.log_every_n_steps", monitoring.log_every_n_steps,
          ">= 1");
  parse_log_level(monitoring.log_level);
  require(device == "auto" || device == "cpu" || device.rfind("cuda", 0) == 0, "device", device,
          "auto, cpu, cuda or cuda:N");
  require(threads >= 0, "threads", threads, ">= 0 (0 = all cores)");
  require(seed >= 0, "seed", seed, ">= 0");
  require(local_workers >= 1 && local_workers <= 64, "local_workers", local_workers, "in [1, 64]");
  require(outer.algorithm == "ddp" || outer.algorithm == "diloco" || outer.algorithm == "demo", "outer.algorithm",
          outer.algorithm, "ddp, diloco or demo");
  require(outer.inner_steps >= 1, "outer.inner_steps", outer.inner_steps, ">= 1");
  require(outer.lr > 0 && outer.lr <= 10, "outer.lr", outer.lr, "in (0, 10]");
  require(outer.momentum >= 0 && outer.momentum < 1, "outer.momentum", outer.momentum, "in [0, 1)");
  parse_wire_dtype(outer.compression);
  require(outer.timeout_s > 0, "outer.timeout_s", outer.timeout_s, "> 0");
  require(outer.min_contributors >= 1, "outer.min_contributors", outer.min_contributors, ">= 1");
  require(outer.round_seconds >= 0, "outer.round_seconds", outer.round_seconds, ">= 0 (0 = inner_steps per round)");
  require(outer.demo_compression_decay > 0 && outer.demo_compression_decay < 1, "outer.demo.compression_decay",
          outer.demo_compression_decay, "in (0, 1)");
  require(outer.demo_compression_topk >= 1, "outer.demo.compression_topk", outer.demo_compression_topk, ">= 1");
  require(outer.demo_compression_chunk >= 1, "outer.demo.compression_chunk", outer.demo_compression_chunk, ">= 1");
  if (outer.error_feedback && outer.compression == "none")
    throw Error("outer.error_feedback is on but outer.compression is none",
                "error feedback only matters with lossy compression: set outer.compression (fp16, bf16, uint8)");
}

}  // namespace pico::trainer
