// models/src/cpu/kernels.h — the fp32 CPU kernels behind pico's fused ops (ops.h), one
// table of plain functions per instruction set, chosen at run time.
//
// Each kernel works on raw float pointers over a range of independent work items (rows,
// or (batch, head) pairs); the caller (ops.cpp) splits the range over threads with
// at::parallel_for. The kernels are written once (kernels_impl.h) and compiled three times:
// AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and the baseline of the build. Not a BLAS:
// the only matrix products here are the small per-head blocks of causal attention.
#pragma once

#include <cstdint>

namespace pico::models::cpu {

// Causal grouped-query attention with half-split RoPE on a packed projection.
//   qkv   (B, T, (H + 2·KV)·hd)  [q heads | k heads | v heads] per token, unrotated
//   cos/sin (T, hd)             RoPE tables (both halves duplicated, as rotate_half uses)
//   y     (B, T, H·hd)          the attention output, heads side by side (o_proj's input)
//   lse   (B, H, T)             log-sum-exp of each softmax row (saved for the backward)
//   dy, dqkv                    gradients of y and qkv (backward)
// Work items are (batch, kv head) pairs b·KV + g; each needs attention_scratch_floats(a)
// floats of scratch. hdp = hd rounded up to 16, Tp = T rounded up to 16.
struct AttentionArgs {
  std::int64_t B = 0, T = 0, Tp = 0, H = 0, KV = 0, hd = 0, hdp = 0;
  float scale = 1;  // 1/sqrt(hd)
  const float* qkv = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  float* y = nullptr;
  float* lse = nullptr;
  const float* dy = nullptr;
  float* dqkv = nullptr;  // fully written by attention_backward
};

struct KernelTable {
  const char* isa;
  // Work items [i0, i1) of b·KV + g: forward writes y and lse, backward writes dqkv.
  void (*attention_forward)(const AttentionArgs& a, std::int64_t i0, std::int64_t i1, float* scratch);
  void (*attention_backward)(const AttentionArgs& a, std::int64_t i0, std::int64_t i1, float* scratch);

  // RMSNorm over rows [r0, r1) of width c: y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps).
  void (*rmsnorm_forward)(const float* x, const float* w, float* y, float* rstd, std::int64_t c, float eps,
                          std::int64_t r0, std::int64_t r1);
  // dx for rows [r0, r1); dw_acc (c) += this range's contribution to the weight's gradient.
  void (*rmsnorm_backward)(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw_acc,
                           std::int64_t c, std::int64_t r0, std::int64_t r1);

  // SwiGLU activation on rows [r0, r1) of ab (rows, 2h) = [a | b]: out (rows, h) = silu(a)·b.
  void (*swiglu_forward)(const float* ab, float* out, std::int64_t h, std::int64_t r0, std::int64_t r1);
  // dab (rows, 2h) = [dout·b·silu'(a) | dout·silu(a)].
  void (*swiglu_backward)(const float* ab, const float* dout, float* dab, std::int64_t h, std::int64_t r0,
                          std::int64_t r1);

  // Cross-entropy on rows [r0, r1) of logits (rows, v): loss[r] = logsumexp(row) − row[target].
  // If grad_scale != 0, the row is overwritten with grad_scale · (softmax(row) − onehot(target)).
  void (*cross_entropy_rows)(float* logits, const std::int64_t* targets, float* loss, std::int64_t v, float grad_scale,
                             std::int64_t r0, std::int64_t r1);
};

// Floats of scratch attention_forward/backward need per call.
std::int64_t attention_scratch_floats(const AttentionArgs& a);
// Query rows per block in the attention kernels.
inline constexpr std::int64_t kAttentionBlock = 64;

// The table for the best instruction set this CPU supports, or the one named by
// set_isa_for_testing ("avx512", "avx2", "generic"; "" = best). Names of the tables this
// CPU can run, best first.
const KernelTable& kernels();
const char* const* available_isas();
void set_isa_for_testing(const char* name);

// Tables defined by the per-ISA translation units (the AVX ones on x86-64 builds only).
extern const KernelTable kTableAvx512;
extern const KernelTable kTableAvx2;
extern const KernelTable kTableGeneric;

}  // namespace pico::models::cpu
