// pico/trainer/checkpointing.h — a training run's state ↔ rich checkpoints, and resume.
//
// The glue between a Contributor and checkpoints/: what goes into a checkpoint (the
// layout of docs/CHECKPOINT_FORMAT.md), learning-dynamics capture as pico-train does it,
// restoring for a bit-exact resume, and the policy of when to save. checkpoints/ itself
// knows none of these types.
//
// What this is not: the outer optimizer's state (θ_g, momentum) and the pseudo-gradient
// are added by the code that owns them: gather_checkpoint() leaves /optim/outer and
// /pseudo_gradient empty, and callers append tensors/attributes to the returned data.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/data/manifest.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/run_config.h"

namespace pico::trainer {

struct TrainState {
  std::int64_t step = 0;    // completed optimizer steps
  std::int64_t round = 0;   // completed outer rounds (0 until an outer optimizer exists)
  std::int64_t tokens = 0;  // tokens consumed by this contributor
};

// Learning dynamics as pico-train records them, for the modules whose names end in
// ld.layer_suffixes: the weight (out, in), the full gradient of the mean next-token loss
// over `inputs` w.r.t. that weight (out, in), and the module's output at token position
// ld.sequence_idx (B, out). inputs/targets (B, T) int64 on the model's device. Written to
// GROUP/{weights,gradients,activations}/<module> plus GROUP/{input_ids,target_ids} and
// GROUP@{loss,num_samples,sequence_length,sequence_idx}.
// Uses autograd::grad, so parameters' .grad and every other piece of training state are
// left untouched. Blocks for one forward and backward.
void capture_learning_dynamics(models::PicoDecoder& model, const torch::Tensor& inputs, const torch::Tensor& targets,
                               const LearningDynamicsConfig& ld, const std::string& group,
                               checkpoints::CheckpointData& out);

// The contributor's state as CheckpointData: /config, /train_state (step, round, tokens,
// data cursor, torch RNG states), /tokenizer, /model, /optim/inner, /learning_dynamics/
// {train,val}, and the empty /optim/outer and /pseudo_gradient. Every tensor is a host
// copy, so training may continue while the data is written. `tokenizer_model` is the
// bytes of the run's sentencepiece model (embedded so the checkpoint stands alone).
checkpoints::CheckpointData gather_checkpoint(const RunConfig& cfg, Contributor& c, const TrainState& state,
                                              const std::string& tokenizer_model);
// Its two halves: the state (host copies; fast) and the learning dynamics (a forward and
// backward on each fixed batch; the larger part of a save's pause on a CPU).
checkpoints::CheckpointData gather_state(const RunConfig& cfg, Contributor& c, const TrainState& state,
                                         const std::string& tokenizer_model);
void gather_learning_dynamics(const RunConfig& cfg, Contributor& c, const TrainState& state,
                              checkpoints::CheckpointData& out);

// Checks that a checkpoint written with `saved` can continue as a run configured by
// `current` over `dataset`. Throws pico::Error (naming the key, both values and `source`,
// with a HINT) for what would make it a different run: any model.* key, seed,
// data.dataloader.batch_size, the dataset hash. Returns warnings for keys whose change is
// allowed but makes the continuation differ from an uninterrupted run (lr, schedule,
// max_steps, ...).
std::vector<std::string> check_resume_compatible(const RunConfig& saved, const std::string& saved_dataset_hash,
                                                 const RunConfig& current, const std::string& current_dataset_hash,
                                                 const std::string& source);

// Restores the model, AdamW moments and step count, and the torch RNG states into `c`;
// returns the saved TrainState. Everything is validated (names, shapes, dtypes, config,
// data cursor) before anything is changed. Throws checkpoints::CorruptCheckpoint for a
// file that lacks what it should hold, pico::Error for one that does not fit this run.
TrainState restore_checkpoint(const checkpoints::CheckpointData& data, const RunConfig& cfg, Contributor& c);

// When to save, where, and resuming: one per run directory (RUN_DIR/checkpoints_dir).
class RunCheckpointer {
 public:
  // `dir` defaults to RUN_DIR/checkpointing.checkpoints_dir; a run with several local
  // contributors gives each its own (e.g. ".../checkpoints/contributor_1").
  RunCheckpointer(const RunConfig& cfg, const data::Dataset& dataset, const std::string& dir = "");
  ~RunCheckpointer();  // waits for a pending save

  const checkpoints::CheckpointDir& dir() const { return dir_; }

  // Restores the newest valid checkpoint into `c` and returns its state, or nullopt when
  // the directory holds none. A corrupt file (truncated, bad checksum, wrong version,
  // SHA-256 differing from the manifest) is logged, renamed to NAME.invalid, and the next
  // older one is tried; a file that does not fit this run's config is logged and skipped.
  // If step files exist but none can be used, throws pico::Error listing each reason.
  std::optional<TrainState> resume(Contributor& c);
  // For a run that starts at step 0: throws pico::Error when the directory already holds
  // checkpoints, unless `overwrite`, in which case they (and the manifest) are deleted.
  void start_fresh(bool overwrite);

  // Saves when state.step is a multiple of checkpointing.save_every_n_steps, or when
  // `force` (the end of training), unless this step was saved already. Blocks only for
  // the snapshot (host copies + learning dynamics); the file is written by a background
  // thread while training continues. Rethrows the previous background save's error.
  bool maybe_save(Contributor& c, const TrainState& state, bool force = false);
  // Waits for the pending save; rethrows its error. Logs a summary of the run's saves.
  void finish();

  // Seconds training was paused for snapshots, and for waiting on a previous save.
  double snapshot_seconds() const { return snapshot_seconds_; }
  double wait_seconds() const { return saver_->waited_seconds(); }
  std::int64_t saves() const { return saves_; }

 private:
  RunConfig cfg_;
  std::string tokenizer_model_;
  checkpoints::CheckpointDir dir_;
  std::unique_ptr<checkpoints::AsyncSaver> saver_;
  std::int64_t last_saved_step_ = -1;
  std::int64_t saves_ = 0;
  double snapshot_seconds_ = 0;
};

}  // namespace pico::trainer
