// pico/optim/adamw.h — the inner optimizer: AdamW with decoupled weight decay.
//
// Same update as torch.optim.AdamW (bias-corrected, eps outside the sqrt):
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)
// Weight decay applies to matrices (dim ≥ 2: projections and embeddings), not to RMSNorm
// gains. On CPU float32 the update is one fused pass over each tensor; elsewhere torch ops.
// Its state is named tensors, so the checkpointer can save it without knowing this type.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace pico::optim {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  void validate() const;  // throws pico::Error naming training.optimization.* keys
};

class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWConfig cfg);

  // One update of every parameter with a defined grad, at learning rate `lr`.
  void step(double lr);
  void zero_grad();
  std::int64_t step_count() const { return step_; }

  // Named state: "<param>.exp_avg", "<param>.exp_avg_sq" (on the params' device).
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  // Restores state saved by state(); throws pico::Error on a missing name or shape mismatch.
  void load_state(const std::vector<std::pair<std::string, torch::Tensor>>& state, std::int64_t step);
  // Forget the moments (DeMo and tests).
  void reset();
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }

 private:
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  AdamWConfig cfg_;
  std::int64_t step_ = 0;
};

}  // namespace pico::optim
