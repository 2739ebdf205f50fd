// pico/trainer/contributor.h — one inner-loop trainer: a model, its AdamW and its data.
//
// A contributor owns a pico-decoder on its device, the inner optimizer and a sampler over
// its shards. Its steps are split so that a data-parallel wrapper can all-reduce the
// gradient between backward and update: train_step = forward_backward + optimizer_step.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "pico/data/manifest.h"
#include "pico/data/sampler.h"
#include "pico/models/decoder.h"
#include "pico/optim/adamw.h"
#include "pico/optim/schedule.h"
#include "pico/trainer/run_config.h"

namespace pico::trainer {

// "auto" → cuda if LibTorch sees a GPU, else cpu. Throws pico::Error for cuda without one.
torch::Device resolve_device(const std::string& name);

// (B, T) int64 tensor on `device` from row-major ids.
torch::Tensor ids_to_tensor(const std::vector<std::int64_t>& ids, std::int64_t rows, std::int64_t cols,
                            const torch::Device& device);

struct StepResult {
  double loss = 0;       // mean over the step's micro-batches
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  std::int64_t tokens = 0;  // tokens consumed by this step
};

class Contributor {
 public:
  // `index` of `count` contributors chooses the shards (data::assign_shards) and the sample
  // order; with data.same_data_for_all_contributors every contributor reads what a lone
  // contributor (index 0 of 1) would.
  Contributor(const RunConfig& cfg, std::shared_ptr<const data::Dataset> dataset, torch::Device device,
              std::size_t index = 0, std::size_t count = 1);

  // Forward and backward over every micro-batch of `step`; gradients accumulate in .grad
  // (zeroed first). Returns the mean loss. Throws pico::Error if the loss is not finite.
  double forward_backward(std::int64_t step);
  // Clips, then one AdamW update at the scheduled lr for `step`.
  StepResult optimizer_step(std::int64_t step, double loss);
  StepResult train_step(std::int64_t step) { return optimizer_step(step, forward_backward(step)); }
  // Global L2 norm of the current gradients (double accumulation, fixed order).
  double grad_norm() const;
  // Mean loss over evaluation.batches validation batches; NaN if there is no validation split.
  double evaluate();

  // Parameters flattened in registration order (what collectives move): numel, and copies
  // of the gradients into / out of a flat fp32 buffer. `scale` multiplies on the way in.
  std::int64_t numel() const { return numel_; }
  void grads_to(float* flat) const;
  void grads_from(const float* flat, float scale);

  models::PicoDecoder& model() { return model_; }
  optim::AdamW& inner_optimizer() { return *optimizer_; }
  const torch::Device& device() const { return device_; }
  std::int64_t tokens_per_step() const { return cfg_.data.batch_size * cfg_.model.max_seq_len; }
  const data::BatchSampler& sampler() const { return *sampler_; }
  const data::Dataset& dataset() const { return *dataset_; }
  std::size_t index() const { return index_; }
  const std::vector<std::size_t>& shards() const { return shards_; }
  const optim::ScheduleConfig& schedule() const { return schedule_; }

 private:
  RunConfig cfg_;
  std::shared_ptr<const data::Dataset> dataset_;
  torch::Device device_;
  std::size_t index_;
  std::vector<std::size_t> shards_;
  models::PicoDecoder model_{nullptr};
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<data::BatchSampler> sampler_, val_sampler_;
  optim::ScheduleConfig schedule_;
  std::int64_t numel_ = 0;
};

}  // namespace pico::trainer
