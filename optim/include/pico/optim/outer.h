// pico/optim/outer.h — the outer-optimizer interface of a DiLoCo-style round, and helpers
// for named tensors.
//
// An outer optimizer owns the global parameters θ_g (fp32, CPU) and its own state. A round
// is split so that optim/ never calls comm/:
//   1. pseudo_gradient(local, buf)   every contributor, after its inner steps (local, no I/O)
//   2. the trainer all-reduces buf   (comm/; optionally through compress.h)
//   3. step(buf)                     every contributor, with the same reduced bytes
//   4. copy_to(local)                θ_g back into the model
//   5. state_hash()                  reported to the broker; equal on every contributor
// Every contributor must get bit-identical θ_g from the same reduced bytes, so
// implementations compute on CPU in fp32 with a fixed operation order (no reductions whose
// order depends on the thread count, no FMA contraction).
//
// This is not the inner optimizer (adamw.h), and not DeMo (demo.h), which runs every step
// and exchanges sparse payloads instead of a dense buffer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pico::optim {

// Parameters or state, in a fixed order: (name, tensor).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class OuterOptimizer {
 public:
  virtual ~OuterOptimizer() = default;

  // Short name for logs and checkpoints ("diloco").
  virtual std::string name() const = 0;
  // Length of the flat pseudo-gradient buffer (Σ numel over the parameters).
  virtual std::int64_t numel() const = 0;

  // out[0, numel()) ← the pseudo-gradient of `local` (same names, shapes and order as the
  // parameters this optimizer was built from; any device or floating dtype). Local only.
  // Throws pico::Error if `local` does not match, or holds a value that is not finite.
  virtual void pseudo_gradient(const NamedTensors& local, float* out) const = 0;
  // One outer update from the reduced pseudo-gradient (numel() fp32 values, parameter order).
  // Every contributor calls it with the same bytes and gets the same θ_g bit for bit.
  // Throws pico::Error (and changes nothing) if a value is not finite.
  virtual void step(const float* reduced) = 0;
  // Copies θ_g into `local` (converting to its device and dtype).
  virtual void copy_to(const NamedTensors& local) const = 0;

  // Named state for checkpoints and state transfer to joiners (θ_g included).
  virtual NamedTensors state() const = 0;
  // Restores state() output; throws pico::Error naming the missing or mismatched entry,
  // changing nothing in that case.
  virtual void load_state(const NamedTensors& state) = 0;
  // SHA-256 (64 hex chars) of θ_g and the outer state; equal on contributors in sync.
  virtual std::string state_hash() const = 0;
};

// SHA-256 over the raw little-endian fp32 bytes of each tensor (converted to fp32 CPU if
// needed), in order; names are not hashed. int64 tensors are hashed as int64 bytes.
std::string hash_tensors(const NamedTensors& tensors);

// A contiguous fp32 CPU copy (or the tensor itself if it already is one), without autograd.
torch::Tensor to_cpu_float(const torch::Tensor& t);

}  // namespace pico::optim
