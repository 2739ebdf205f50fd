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
  double min_lr_ratio = 0.1;  // cosine: final lr = lr × min_lr_ratio
  std::int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;  // global-norm clipping; 0 disables
  optim::AdamWConfig adamw;    // beta1, beta2, eps, weight_decay
};

struct TrainingConfig {
  std::int64_t max_steps = 1000;  // optimizer steps per contributor
  OptimizationConfig optimization;
};

struct DataConfig {
  std::string path;              // directory written by `pico data prepare`
  std::int64_t batch_size = 32;  // data.dataloader.batch_size: sequences per optimizer step, per contributor
  bool verify = true;            // check every shard's checksum when opening
  // Every contributor reads contributor 0's samples (equivalence tests: N identical
  // contributors must reproduce one). Off in real runs: each contributor has its own shards.
  bool same_data_for_all_contributors = false;
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
  std::string run_name;  // default: the config file's name
  std::string runs_dir = "runs";
  std::string checkpoints_dir = "checkpoints";
  std::int64_t save_every_n_steps = 1000;
  std::int64_t keep_latest_k = 0;       // 0: keep every checkpoint (the trajectory `pico analyze` reads)
  std::int64_t keep_every_n_steps = 0;  // with keep_latest_k >= 2: also keep every step multiple of this
  bool auto_resume = false;
  LearningDynamicsConfig learning_dynamics;
};

struct MonitoringConfig {
  std::int64_t log_every_n_steps = 10;
  std::string log_level = "info";
};

// How contributors combine their work (REFERENCE.md has the algorithms as published).
struct OuterConfig {
  std::string algorithm = "ddp";          // ddp: average gradients every step | diloco | demo
  std::int64_t inner_steps = 100;         // DiLoCo: H inner steps per outer round
  double lr = 0.7;                        // DiLoCo outer learning rate
  double momentum = 0.9;                  // DiLoCo outer momentum
  bool nesterov = true;                   // DiLoCo: Nesterov momentum
  std::string compression = "none";       // values on the wire for ddp/diloco: none | fp16 | bf16 | uint8
  bool error_feedback = false;            // DiLoCo: carry what compression lost into the next round
  double timeout_s = 600;                 // a collective that takes longer fails (a peer is dead or stalled)
  std::int64_t min_contributors = 1;      // networked: a round starts only when this many members are ready
  double round_seconds = 0;               // networked DiLoCo: inner steps for this long per round instead of H (0 = H)
  double demo_compression_decay = 0.999;  // DeMo β
  std::int64_t demo_compression_topk = 32;   // DeMo coefficients kept per chunk
  std::int64_t demo_compression_chunk = 64;  // DeMo largest DCT chunk
  std::string demo_value_dtype = "fp32";     // DeMo: coefficients on the wire as fp32 (reference), fp16 or bf16
};

struct RunConfig {
  models::ModelConfig model;
  TrainingConfig training;
  DataConfig data;
  EvaluationConfig evaluation;
  CheckpointingConfig checkpointing;
  MonitoringConfig monitoring;
  OuterConfig outer;
  std::string device = "auto";     // auto | cpu | cuda | cuda:N
  std::int64_t threads = 0;        // intra-op CPU threads; 0 = all cores
  std::int64_t seed = 42;          // model initialization and data order
  std::int64_t local_workers = 1;  // contributors simulated in this process (--local-workers)

  void validate() const;
  std::int64_t micro_batch_size() const { return data.batch_size / training.optimization.gradient_accumulation_steps; }
  std::string run_dir() const { return checkpointing.runs_dir + "/" + checkpointing.run_name; }
};

}  // namespace pico::trainer
