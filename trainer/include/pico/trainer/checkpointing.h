// pico/trainer/checkpointing.h — a training run's state ↔ rich checkpoints, and resume.
//
// The glue between a Contributor and checkpoints/: what goes into a checkpoint (the
// layout of docs/CHECKPOINT_FORMAT.md), learning-dynamics capture as pico-train does it,
// restoring for a bit-exact resume, and the policy of when to save. checkpoints/ itself
// knows none of these types.
//
// The outer algorithm's state (θ_g, momentum, error-feedback residual, DeMo's δ) and the
// last pseudo-gradient come from the algorithm through OuterStateIO; without one (or for
// ddp, which has none) /optim/outer and /pseudo_gradient are empty groups.
//
// What this is not: the algorithms themselves (trainer/src/algorithms.h), nor the file
// format and directory handling (checkpoints/).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/data/manifest.h"
#include "pico/optim/outer.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/run_config.h"

namespace pico::trainer {

struct TrainState {
  std::int64_t step = 0;    // completed optimizer steps
  std::int64_t round = 0;   // completed outer rounds (0 until an outer optimizer exists)
  std::int64_t tokens = 0;  // tokens consumed by this contributor
  // The networked run this contributor is a member of (its broker's run id, →
  // /train_state@run_id); "" for a local run, whose identity is its run directory.
  std::string run_id;
};

// What an outer algorithm puts into a checkpoint and takes back on resume. Implemented by
// the trainer's Algorithm (ddp: nothing). Names map onto HDF5 as:
//   "<param>.theta_g"           → /optim/outer/theta_g/<param>
//   "<param>.<field>"           → /optim/outer/<param>/<field>   (momentum, delta, residual …)
//   "<scalar>" (int64, 1 value) → attribute /optim/outer@<scalar> (step, round_tokens …)
//   pseudo_gradient() "<param>" → /pseudo_gradient/<param>
class OuterStateIO {
 public:
  virtual ~OuterStateIO() = default;
  // The outer state, as named tensors (any device; copied to the host when saved).
  virtual optim::NamedTensors outer_state() const = 0;
  // Restores outer_state() output; throws pico::Error naming a missing or mismatched entry,
  // changing nothing in that case.
  virtual void load_outer_state(const optim::NamedTensors& state) = 0;
  // This contributor's last pseudo-gradient Δ = θ_g − θ_local before weighting, per
  // parameter (parameter shape, fp32); empty before the first round and without rounds.
  virtual optim::NamedTensors pseudo_gradient() const = 0;
  virtual void load_pseudo_gradient(const optim::NamedTensors& delta) = 0;
  // Completed outer rounds (→ /train_state@round).
  virtual std::int64_t rounds_done() const = 0;
};

// Adds `outer` (its state and pseudo-gradient, host copies) to `d` with the mapping above.
void add_outer_state(const OuterStateIO& outer, checkpoints::CheckpointData& d);
// The inverse: /optim/outer and /pseudo_gradient of `d` as named tensors.
optim::NamedTensors read_outer_state(const checkpoints::CheckpointData& d);
optim::NamedTensors read_pseudo_gradient(const checkpoints::CheckpointData& d);

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
// {train,val}, and /optim/outer and /pseudo_gradient from `outer` (empty groups without
// one). Every tensor is a host copy, so training may continue while the data is written.
// `tokenizer_model` is the bytes of the run's sentencepiece model (embedded so the
// checkpoint stands alone).
checkpoints::CheckpointData gather_checkpoint(const RunConfig& cfg, Contributor& c, const TrainState& state,
                                              const std::string& tokenizer_model, const OuterStateIO* outer = nullptr);
// Its two halves: the state (host copies; fast) and the learning dynamics (a forward and
// backward on each fixed batch; the larger part of a save's pause on a CPU).
checkpoints::CheckpointData gather_state(const RunConfig& cfg, Contributor& c, const TrainState& state,
                                         const std::string& tokenizer_model, const OuterStateIO* outer = nullptr);
void gather_learning_dynamics(const RunConfig& cfg, Contributor& c, const TrainState& state,
                              checkpoints::CheckpointData& out);

// Checks that a checkpoint written with `saved` can continue as a run configured by
// `current` over `dataset`. Throws pico::Error (naming the key, both values and `source`,
// with a HINT) for what would make it a different run: any model.* key, seed,
// data.dataloader.batch_size, the dataset hash, outer.algorithm, local_workers. Returns warnings for keys whose change
// is allowed but makes the continuation differ from an uninterrupted run (lr, schedule, max_steps, ...).
std::vector<std::string> check_resume_compatible(const RunConfig& saved, const std::string& saved_dataset_hash,
                                                 const RunConfig& current, const std::string& current_dataset_hash,
                                                 const std::string& source);

// Restores the model, AdamW moments and step count, and the torch RNG states into `c`,
// and the outer state and pseudo-gradient into `outer` (when given); returns the saved
// TrainState. Everything is validated (names, shapes, dtypes, config, data cursor, outer
// state, round) before anything is changed. Throws checkpoints::CorruptCheckpoint for a
// file that lacks what it should hold, pico::Error for one that does not fit this run.
// `shards_must_match` = false (a networked member, whose broker may hand it another data
// slot when it rejoins) accepts a checkpoint of other train shards with a warning.
TrainState restore_checkpoint(const checkpoints::CheckpointData& data, const RunConfig& cfg, Contributor& c,
                              OuterStateIO* outer = nullptr, bool shards_must_match = true);

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
  // Only files of steps ≤ `max_step` are considered (contributors that must agree on a
  // step retry with the lowest one any of them found). `outer` receives the outer state.
  std::optional<TrainState> resume(Contributor& c, OuterStateIO* outer = nullptr,
                                   std::int64_t max_step = std::numeric_limits<std::int64_t>::max());
  // A networked member: resume() refuses checkpoints whose /train_state@run_id is not
  // `run_id` (another run's), and accepts other train shards (see restore_checkpoint).
  void set_member_of(const std::string& run_id) { member_of_ = run_id; }
  // For a run that starts at step 0: throws pico::Error when the directory already holds
  // checkpoints, unless `overwrite`, in which case they (and the manifest) are deleted.
  void start_fresh(bool overwrite);

  // Saves when state.step is a multiple of checkpointing.save_every_n_steps, or when
  // `force` (the end of training), unless this step was saved already. Blocks only for
  // the snapshot (host copies + learning dynamics); the file is written by a background
  // thread while training continues. Rethrows the previous background save's error.
  // `outer` (may be null) supplies /optim/outer and /pseudo_gradient.
  bool maybe_save(Contributor& c, const TrainState& state, const OuterStateIO* outer = nullptr, bool force = false);
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
  std::string member_of_;  // "" = a local run
  std::int64_t last_saved_step_ = -1;
  std::int64_t saves_ = 0;
  double snapshot_seconds_ = 0;
};

}  // namespace pico::trainer
