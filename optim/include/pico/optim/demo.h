// pico/optim/demo.h — DeMo (Decoupled Momentum Optimization, Peng, Quesnelle, Kingma 2024).
//
// Runs every step in place of the data-parallel all-reduce and the inner optimizer. It is
// bloc97/DeMo's `DeMo.step()` (REFERENCE.md "DeMo"; tests/fixtures/demo/README.md, which
// this implementation reproduces), split around the all-gather that the trainer runs:
//
//   prepare(lr), per parameter p with gradient g (fp32, on CPU; β = compression_decay):
//     δ ← fmaf(g, fl(lr), fl(δ·fl(β)))          fused: lr·g is not rounded on its own
//     E ← chunked DCT-II of δ (dct.h)            per chunk of n1×n2 (or n) coefficients
//     keep the k = min(compression_topk, n1·n2) largest |E| per chunk (ties: lower index)
//     δ ← fl(δ − decode(own top-k))              error feedback: only what this rank sent
//     → this rank's payload (below)
//   apply(payloads in rank order, lr), per parameter:
//     p ← fl(p · fl(1 − lr·wd))                  only if weight_decay ≠ 0 (decoupled; on every
//                                                 parameter, norms included, as the reference)
//     A ← at each coefficient, (fp32 left-to-right sum, in rank order, of the values of the
//         ranks that chose it) / (how many chose it); 0 where nobody did
//     s ← sign(decode(A));  p.grad ← s (in place, if p has a grad);  p ← fl(p − fl(lr)·s)
//
// "Mean" is over the ranks that chose an index, not over all ranks: an index only one rank
// chose keeps its full value. Every element of p moves by ±lr per step (0 only where the
// decoded value is exactly 0). All arithmetic is on CPU (the DCT in double, rounded to fp32
// once; see dct.h) in a fixed order, so every contributor — CPU or GPU — derives the same
// signs from the same payloads and the parameters stay bit-identical. Parameters and
// gradients may live on any device in any floating dtype; δ is fp32 on CPU. Only 1-D and
// 2-D parameters are supported (as in the reference).
//
// Payload of one rank for one step (little-endian; payload_bytes() long, fixed per model):
//   offset 0   u32  magic 0x4f4d4544 ("DEMO")
//          4   u16  format version (1)
//          6   u8   index width in bytes: 2 (uint16) when every chunk has ≤ 65536
//                   coefficients (always with compression_chunk ≤ 256), else 4 (uint32)
//          7   u8   value type: 0 = fp32, 1 = fp16, 2 = bf16 (common/codec.h's WireDtype)
//          8   u32  layout tag: CRC-32C of the parameters' shapes, chunk sizes and k
//         12   u32  Σ chunks over the parameters
//         16   indices: for each parameter in order, for each chunk (row-major over the chunk
//              grid), k indices into the chunk's row-major coefficients, ascending
//              then the values (value type) in the same order
// The reference sends int64 indices: 12 bytes per coefficient against 6 here.
//
// Not here: the all-gather (comm/), the learning-rate schedule (the trainer passes lr).
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pico/common/codec.h"
#include "pico/optim/dct.h"
#include "pico/optim/outer.h"

namespace pico::optim {

struct DeMoConfig {
  double lr = 4e-4;                     // demo.lr: base learning rate (the published OLMo runs);
                                        //   prepare/apply take the scheduled value
  double compression_decay = 0.999;     // demo.compression_decay: β of δ, in [0, 1)
  std::int64_t compression_topk = 32;   // demo.compression_topk: coefficients kept per chunk, ≥ 1
  std::int64_t compression_chunk = 64;  // demo.compression_chunk: target chunk side, in [1, 1024]
  double weight_decay = 0.0;            // demo.weight_decay: decoupled, p ← p·(1 − lr·wd), in [0, 10)
  // How the kept coefficients travel: fp32 (as the reference) or fp16/bf16 (2 bytes instead
  // of 4). Error feedback subtracts what was sent, after rounding, so nothing is lost for good.
  WireDtype value_dtype = WireDtype::kFloat32;
  void validate() const;  // throws pico::Error naming the demo.* key
};

// One parameter's top-k coefficients, chunk by chunk.
struct SparseCoeffs {
  std::int64_t chunks = 0;         // Y·X
  std::int64_t k = 0;              // kept per chunk
  std::vector<std::uint32_t> idx;  // (chunks, k): index into the chunk's n1·n2 coefficients
  std::vector<float> val;          // (chunks, k): the signed coefficient there
};

// The k largest |coeffs| of each of `chunks` consecutive runs of `chunk_numel` values (ties
// broken by the lower index), indices ascending within a chunk. k is clamped to
// [1, chunk_numel]. Throws pico::Error if a coefficient is not finite.
SparseCoeffs demo_topk(const float* coeffs, std::int64_t chunks, std::int64_t chunk_numel, std::int64_t k);
// coeffs[0, chunks·chunk_numel) ← 0, then the kept values at their indices.
void demo_scatter(const SparseCoeffs& s, std::int64_t chunk_numel, float* coeffs);
// coeffs[0, chunks·chunk_numel) ← the "mean over the ranks that chose an index" of `ranks`
// (in rank order; each with the same chunks), 0 where none did. Indices must be valid and,
// within one rank's chunk, distinct (unpack() checks both).
void demo_aggregate(const std::vector<const SparseCoeffs*>& ranks, std::int64_t chunk_numel, float* coeffs);

class DeMo {
 public:
  // `params` are the model's parameters (handles: apply() updates them in place).
  DeMo(NamedTensors params, DeMoConfig cfg);

  // Local phase: consumes every parameter's .grad (which must be defined and finite; checked
  // before any state changes), updates δ with error feedback, returns this rank's payload.
  // Must alternate with apply(): a second prepare() before apply() throws. If the all-gather
  // fails, retry it with the same payload (do not call prepare() again).
  std::vector<std::uint8_t> prepare(double lr);
  // Update phase: `payloads` are every participating rank's prepare() output, in rank order,
  // this rank's included; every contributor must pass the same list. All payloads are
  // validated first: a bad one throws pico::Error naming its position, and nothing changes.
  void apply(const std::vector<std::vector<std::uint8_t>>& payloads, double lr);

  // Validates one payload (`rank` only names it in errors) and returns its top-k per parameter.
  std::vector<SparseCoeffs> unpack(const std::vector<std::uint8_t>& payload, std::size_t rank) const;
  // The aggregated coefficients (fp32 CPU, each parameter's coefficient shape) of `payloads`.
  std::vector<torch::Tensor> aggregate(const std::vector<std::vector<std::uint8_t>>& payloads) const;
  // The chunked DCT of parameter i.
  const ChunkedDct& transform(std::size_t i) const { return dct_[i]; }

  std::size_t payload_bytes() const { return payload_bytes_; }  // sent per rank per step
  // What bloc97/DeMo would send for the same model: Σ chunks·k·(8-byte index + 4-byte value).
  std::size_t reference_payload_bytes() const;
  // What a dense fp32 all-reduce of the gradient would send: 4·numel().
  std::size_t dense_bytes() const { return 4 * static_cast<std::size_t>(numel_); }
  std::int64_t numel() const { return numel_; }
  std::int64_t step_count() const { return step_; }
  bool pending() const { return pending_; }  // prepare() done, apply() not yet

  // "<param>.delta" (δ, fp32 CPU, parameter shape) for each parameter, then "step" (int64,
  // shape {1}): completed steps. Save it after apply(), not between prepare() and apply().
  NamedTensors state() const;
  // Restores state(); throws pico::Error naming a missing or mismatched entry (nothing
  // changes then). Clears a pending prepare().
  void load_state(const NamedTensors& state);

  const NamedTensors& params() const { return params_; }
  const DeMoConfig& config() const { return cfg_; }

 private:
  NamedTensors params_;
  DeMoConfig cfg_;
  std::vector<ChunkedDct> dct_;
  std::vector<std::int64_t> k_;       // top-k per chunk, per parameter
  std::vector<torch::Tensor> delta_;  // δ, fp32 CPU contiguous
  std::uint32_t layout_tag_ = 0;
  std::uint8_t index_bytes_ = 2;
  std::uint32_t total_chunks_ = 0;
  std::size_t payload_bytes_ = 0;
  std::int64_t numel_ = 0;
  std::int64_t step_ = 0;
  bool pending_ = false;
};

}  // namespace pico::optim
