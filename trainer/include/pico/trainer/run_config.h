// pico/trainer/run_config.h — everything a run is configured by, one struct per section.
//
// Key names follow pico-train where it has them (model.*, training.max_steps,
// training.optimization.*, data.dataloader.batch_size, checkpointing.*,
// monitoring.logging.log_every_n_steps). config_io.h maps YAML and `--set` onto this; every
// struct's validate() throws pico::Error naming the key, the value and what is allowed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pico/models/model_config.h"
#include "pico/optim/adamw.h"

namespace pico::trainer {

struct OptimizationConfig {
  double lr = 3e-4;
  std::string lr_scheduler = "linear_with_warmup";  // linear_with_warmup | cosine | constant
  std::int64_t lr_warmup_steps = 0;
  double min_lr_ratio = 0.1;                 // cosine: final lr = lr × min_lr_ratio
  std::int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;                // global-norm clipping; 0 disables
  optim::AdamWConfig adamw;                  // beta1, beta2, eps, weight_decay
};

struct TrainingConfig {
  std::int64_t max_steps = 1000;  // optimizer steps per contributor
  OptimizationConfig optimization;
};

struct DataConfig {
  std::string path;              // directory written by `pico data prepare`
  std::int64_t batch_size = 32;  // data.dataloader.batch_size: sequences per optimizer step
  bool verify = true;            // check every shard's checksum when opening
};

struct EvaluationConfig {
  std::int64_t every_n_steps = 100;  // validation loss every N steps (and at the end); 0 = only at the end
  std::int64_t batches = 8;          // validation batches of data.dataloader.batch_size sequences
};

struct LearningDynamicsConfig {
  std::vector<std::string> layer_suffixes = {"attention.v_proj", "attention.o_proj", "swiglu.w_2"};
  std::int64_t sequence_idx = -1;  // token position whose module output is recorded
  std::int64_t batch_size = 8;     // sequences in the fixed batch
};

struct CheckpointingConfig {
  std::string run_name;             // default: the config file's name
  std::string runs_dir = "runs";
  std::string checkpoints_dir = "checkpoints";
  std::int64_t save_every_n_steps = 1000;
  std::int64_t keep_latest_k = 3;
  bool auto_resume = false;
  LearningDynamicsConfig learning_dynamics;
};

struct MonitoringConfig {
  std::int64_t log_every_n_steps = 10;
  std::string log_level = "info";
};

struct RunConfig {
  models::ModelConfig model;
  TrainingConfig training;
  DataConfig data;
  EvaluationConfig evaluation;
  CheckpointingConfig checkpointing;
  MonitoringConfig monitoring;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::int64_t threads = 0;     // intra-op CPU threads; 0 = all cores
  std::int64_t seed = 42;       // model initialization and data order

  void validate() const;
  std::int64_t micro_batch_size() const {
    return data.batch_size / training.optimization.gradient_accumulation_steps;
  }
  std::string run_dir() const { return checkpointing.runs_dir + "/" + checkpointing.run_name; }
};

}  // namespace pico::trainer
