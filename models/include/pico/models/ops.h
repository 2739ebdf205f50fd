// pico/models/ops.h — the fused operations the pico-decoder is built from.
//
// Each op has a fused CPU path (custom autograd functions over the SIMD kernels in
// models/src/cpu/, fp32 only, multi-threaded with LibTorch's intra-op threads) and a
// `_reference` version in plain torch ops. The fused path is taken for float32 CPU tensors
// while fused_kernels_enabled(); anything else (cuda, float64, bf16) runs the reference, so
// the model works everywhere and tests can compare the two. The fused backward passes are
// first-order only (no double backward).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace pico::models::ops {

// Bias-free linear layer: x (…, in), weight (out, in) → x·weightᵀ (…, out). The fused path
// runs the products on oneDNN's sgemm where LibTorch's oneDNN is a shared library (see
// ops.cpp); otherwise torch::matmul.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight);

// RMSNorm: x (…, C), weight (C) → x / sqrt(mean(x²) + eps) · weight (normalized in fp32).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// SwiGLU activation of a packed projection: ab (…, 2h) = [a | b] → silu(a) · b (…, h).
torch::Tensor swiglu(const torch::Tensor& ab);
torch::Tensor swiglu_reference(const torch::Tensor& ab);

// Causal grouped-query self-attention with half-split RoPE (rotate_half) on a packed
// projection: qkv (B, T, (H + 2·KV)·hd) = [q heads | k heads | v heads], cos/sin (T, hd)
// → (B, T, H·hd), heads side by side. Softmax scale 1/sqrt(hd).
torch::Tensor causal_attention(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                               std::int64_t n_heads, std::int64_t n_kv_heads);
torch::Tensor causal_attention_reference(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                                         std::int64_t n_heads, std::int64_t n_kv_heads);

// Mean cross-entropy of the logits h·weightᵀ: h (N, C), weight (V, C), targets (N) int64 in
// [0, V) → scalar (float32, or float64 for float64 inputs). The fused path never holds all N × V logits: it works
// through row chunks and computes the gradients during the forward pass.
torch::Tensor linear_cross_entropy(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& targets);
torch::Tensor linear_cross_entropy_reference(const torch::Tensor& h, const torch::Tensor& weight,
                                             const torch::Tensor& targets);

// Global switch for the fused CPU path (default on; PICO_FUSED_KERNELS=0 in the
// environment turns it off at start-up).
bool fused_kernels_enabled();
void set_fused_kernels_enabled(bool enabled);
// The instruction set of the CPU kernels in use ("avx512", "avx2", "generic"), and the ones
// this CPU can run, best first. Forcing one is for tests ("" = best).
std::string cpu_kernel_isa();
std::vector<std::string> available_cpu_kernel_isas();
void set_cpu_kernel_isa_for_testing(const std::string& isa);
// How many of LibTorch's intra-op threads the fused ops' at::parallel_for spreads a large
// range over (torch::get_num_threads(), capped by the range). 1 means ops.cpp was compiled
// without OpenMP: ATen's parallel_for is inline and then degrades to a serial loop, and every
// fused kernel runs on one core. For tests.
int fused_op_threads_for_testing();

}  // namespace pico::models::ops
