// pico/optim/diloco.h — DiLoCo's outer optimizer: SGD with Nesterov momentum on θ_g.
//
// Holds θ_g as fp32 CPU copies of the model's parameters (parameter order, named) and the
// outer momentum buffer b. With Δ the reduced pseudo-gradient (θ_g − θ_local, averaged by
// the trainer), one step is PyTorch's SGD (dampening 0), REFERENCE.md "DiLoCo" item 4:
//   b ← μ·b + Δ            (b ← Δ on the first step)
//   θ_g ← θ_g − lr·(Δ + μ·b)   nesterov
//   θ_g ← θ_g − lr·b           otherwise
// With μ = 0 both forms are θ_g ← θ_g − lr·Δ (PyTorch refuses nesterov without momentum;
// here it is allowed and means exactly that). Arithmetic is fp32 with every operation
// rounded on its own (no FMA, no reassociation, lr and μ rounded to fp32 once):
//   b = fl(fl(μ·b) + Δ);  u = nesterov ? fl(Δ + fl(μ·b)) : b;  θ_g = fl(θ_g − fl(lr·u)).
// It is elementwise, so threads do not change the result: every contributor computes the
// same θ_g bit for bit from the same reduced bytes.
//
// Not here: the collective (comm/), compression of the buffer (compress.h), weighting of
// contributors (the trainer scales Δ_i before the reduce).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pico/optim/outer.h"

namespace pico::optim {

struct DiLoCoConfig {
  double lr = 0.7;        // outer.lr: outer learning rate (> 0)
  double momentum = 0.9;  // outer.momentum: μ in [0, 1)
  bool nesterov = true;   // outer.nesterov
  void validate() const;  // throws pico::Error naming outer.lr / outer.momentum
};

class DiLoCo final : public OuterOptimizer {
 public:
  // θ_g ← fp32 CPU copies of `params` (any device or floating dtype); b ← 0, step 0.
  DiLoCo(const NamedTensors& params, DiLoCoConfig cfg);

  std::string name() const override { return "diloco"; }
  std::int64_t numel() const override { return numel_; }
  // out ← θ_g − θ_local, flattened in parameter order (fp32; bf16/cuda locals are converted).
  void pseudo_gradient(const NamedTensors& local, float* out) const override;
  // The Nesterov step above with Δ = reduced[0, numel()).
  void step(const float* reduced) override;
  void copy_to(const NamedTensors& local) const override;

  // "<param>.theta_g" (θ_g, fp32 CPU, parameter shape) for each parameter, then
  // "<param>.momentum" for each parameter, then "step" (int64, shape {1}): outer steps taken.
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;
  // SHA-256 of, in order: every θ_g tensor's fp32 bytes, every momentum tensor's fp32 bytes,
  // the step count as int64 little-endian (exactly hash_tensors(state())).
  std::string state_hash() const override;

  std::int64_t step_count() const { return step_; }
  // θ_g as named fp32 CPU tensors (parameter order). Do not modify.
  const NamedTensors& global_params() const { return theta_; }
  const DiLoCoConfig& config() const { return cfg_; }
  // A flat pseudo-gradient in θ_g's layout (what pseudo_gradient() writes) as named tensors
  // shaped like θ_g, for checkpoints; empty when `flat` is empty.
  NamedTensors unflatten(const std::vector<float>& flat) const;
  // The inverse: named tensors (a checkpoint's /pseudo_gradient) into θ_g's flat layout. Every
  // name and shape must match θ_g (Error with a HINT otherwise); empty in, empty out.
  std::vector<float> flatten(const NamedTensors& named) const;

 private:
  void check_local(const NamedTensors& local, const char* what) const;

  DiLoCoConfig cfg_;
  NamedTensors theta_;                   // θ_g, fp32 CPU contiguous
  std::vector<torch::Tensor> momentum_;  // b, same shapes
  std::vector<std::int64_t> offset_;     // start of each parameter in the flat buffer
  std::int64_t numel_ = 0;
  std::int64_t step_ = 0;
};

}  // namespace pico::optim
