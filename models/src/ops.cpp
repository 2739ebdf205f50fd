// models/src/ops.cpp — the fused ops of ops.h: autograd functions around the SIMD kernels
// (cpu/kernels.h) and oneDNN's sgemm, their dispatch, and the plain-op references. Not a
// kernel library: anything that is not float32 on the CPU goes to the references.
#include "pico/models/ops.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <dlfcn.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>

#include "cpu/kernels.h"
#include "pico/common/error.h"

namespace pico::models::ops {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

std::atomic<bool>& fused_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("PICO_FUSED_KERNELS");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }()};
  return flag;
}

bool use_fused(std::initializer_list<const Tensor*> tensors) {
  if (!fused_flag().load(std::memory_order_relaxed)) return false;
  for (const Tensor* t : tensors)
    if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat32) return false;
  return true;
}

const cpu::KernelTable& k() {
  return cpu::kernels();
}

// ---------------------------------------------------------------------------------------
// Matrix products. LibTorch's CPU products go to the system BLAS (OpenBLAS, with its own
// pthread pool). oneDNN's sgemm, when LibTorch brings it along as a shared library (Debian's
// libdnnl.so.2; pip wheels link it statically and hide it), runs on the same OpenMP threads
// as every other op, so two thread pools do not take turns at the cores between ops, and
// it is faster on the narrow products of small models (experiments/inner_throughput).
// PICO_GEMM=blas|dnnl chooses; the default is dnnl where found.

using DnnlSgemm = int (*)(char transa, char transb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                          std::int64_t ldc);

DnnlSgemm dnnl_sgemm() {
  static const DnnlSgemm fn = [] {
    const char* env = std::getenv("PICO_GEMM");
    if (env != nullptr && std::strcmp(env, "blas") == 0) return DnnlSgemm{nullptr};
    return reinterpret_cast<DnnlSgemm>(::dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
  }();
  return fn;
}

// A 2-D float32 operand as (transposed?, leading dimension), or nullopt if its strides fit
// neither row-major nor transposed row-major.
struct GemmOperand {
  char trans;
  std::int64_t ld;
};
std::optional<GemmOperand> gemm_operand(const Tensor& t) {
  if (t.stride(1) == 1 && t.stride(0) >= std::max<std::int64_t>(1, t.size(1))) return GemmOperand{'N', t.stride(0)};
  if (t.stride(0) == 1 && t.stride(1) >= std::max<std::int64_t>(1, t.size(0))) return GemmOperand{'T', t.stride(1)};
  return std::nullopt;
}

// out = beta·out + a·b for 2-D float32 CPU tensors (out with unit column stride). With
// beta = 0, out's old contents are never read.
void gemm_into(Tensor& out, const Tensor& a, const Tensor& b, float beta) {
  RECORD_FUNCTION("pico::gemm", std::vector<c10::IValue>());
  const auto fn = dnnl_sgemm();
  if (fn != nullptr && out.stride(1) == 1 && a.numel() > 0 && b.numel() > 0) {
    const auto oa = gemm_operand(a), ob = gemm_operand(b);
    if (oa && ob) {
      const int status = fn(oa->trans, ob->trans, a.size(0), b.size(1), a.size(1), 1.0f, a.data_ptr<float>(), oa->ld,
                            b.data_ptr<float>(), ob->ld, beta, out.data_ptr<float>(), out.stride(0));
      PICO_CHECK_EQ(status, 0, "dnnl_sgemm failed");
      return;
    }
  }
  if (beta == 0.0f)
    torch::mm_out(out, a, b);
  else
    out.addmm_(a, b, beta, 1.0f);
}

Tensor gemm(const Tensor& a, const Tensor& b) {
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  gemm_into(out, a, b, 0.0f);
  return out;
}

// y = x·wᵀ with both gradients through gemm(): x (N, in), w (out, in).
struct LinearFunction : torch::autograd::Function<LinearFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w) {
    ctx->save_for_backward({x, w});
    return gemm(x, w.t());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor dy = grads[0].contiguous();
    Tensor dx, dw;
    if (ctx->needs_input_grad(0)) dx = gemm(dy, s[1]);      // (N, out)·(out, in)
    if (ctx->needs_input_grad(1)) dw = gemm(dy.t(), s[0]);  // (out, N)·(N, in)
    return {dx, dw};
  }
};

// (…, C) → (rows, C) contiguous.
Tensor rows_of(const Tensor& x) {
  return x.contiguous().view({-1, x.size(-1)});
}

// ---------------------------------------------------------------------------------------

struct RMSNormFunction : torch::autograd::Function<RMSNormFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, double eps) {
    const Tensor x2 = rows_of(x);
    const Tensor w = weight.contiguous();
    const std::int64_t rows = x2.size(0), c = x2.size(1);
    auto y = torch::empty_like(x2);
    auto rstd = torch::empty({rows}, x2.options());
    const float* xp = x2.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* rp = rstd.data_ptr<float>();
    const auto& kt = k();
    at::parallel_for(0, rows, std::max<std::int64_t>(1, 8192 / c), [&](std::int64_t r0, std::int64_t r1) {
      kt.rmsnorm_forward(xp, wp, yp, rp, c, static_cast<float>(eps), r0, r1);
    });
    ctx->save_for_backward({x2, w, rstd});
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x2 = saved[0], &w = saved[1], &rstd = saved[2];
    const Tensor dy = rows_of(grads[0]);
    const std::int64_t rows = x2.size(0), c = x2.size(1);
    auto dx = torch::empty_like(x2);
    // The weight's gradient is a sum over rows: fixed chunks of rows, each its own partial
    // sum, added in chunk order, so the result does not depend on the thread count.
    constexpr std::int64_t kChunk = 256;
    const std::int64_t chunks = (rows + kChunk - 1) / kChunk;
    auto partial = torch::zeros({chunks, c}, x2.options());
    const float *xp = x2.data_ptr<float>(), *wp = w.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    const float* dyp = dy.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    float* pp = partial.data_ptr<float>();
    const auto& kt = k();
    at::parallel_for(0, chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
      for (std::int64_t ch = c0; ch < c1; ++ch)
        kt.rmsnorm_backward(xp, wp, rp, dyp, dxp, pp + ch * c, c, ch * kChunk, std::min(rows, (ch + 1) * kChunk));
    });
    return {dx.view(grads[0].sizes()), partial.sum(0), Tensor()};
  }
};

struct SwiGLUFunction : torch::autograd::Function<SwiGLUFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& ab) {
    const Tensor ab2 = rows_of(ab);
    const std::int64_t rows = ab2.size(0), h = ab2.size(1) / 2;
    auto out = torch::empty({rows, h}, ab2.options());
    const float* abp = ab2.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const auto& kt = k();
    at::parallel_for(0, rows, std::max<std::int64_t>(1, 8192 / h),
                     [&](std::int64_t r0, std::int64_t r1) { kt.swiglu_forward(abp, op, h, r0, r1); });
    ctx->save_for_backward({ab2});
    auto sizes = ab.sizes().vec();
    sizes.back() = h;
    return out.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor ab2 = ctx->get_saved_variables()[0];
    const Tensor g = rows_of(grads[0]);
    const std::int64_t rows = ab2.size(0), h = ab2.size(1) / 2;
    auto dab = torch::empty_like(ab2);
    const float* abp = ab2.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    float* dp = dab.data_ptr<float>();
    const auto& kt = k();
    at::parallel_for(0, rows, std::max<std::int64_t>(1, 8192 / h),
                     [&](std::int64_t r0, std::int64_t r1) { kt.swiglu_backward(abp, gp, dp, h, r0, r1); });
    auto sizes = grads[0].sizes().vec();
    sizes.back() = 2 * h;
    return {dab.view(sizes)};
  }
};

// ---------------------------------------------------------------------------------------

std::int64_t round_up16(std::int64_t x) {
  return (x + 15) / 16 * 16;
}

struct AttentionFunction : torch::autograd::Function<AttentionFunction> {
  static cpu::AttentionArgs args(const Tensor& qkv, const Tensor& cos, const Tensor& sin, std::int64_t n_heads,
                                 std::int64_t n_kv_heads) {
    cpu::AttentionArgs a;
    a.B = qkv.size(0);
    a.T = qkv.size(1);
    a.H = n_heads;
    a.KV = n_kv_heads;
    a.hd = qkv.size(2) / (n_heads + 2 * n_kv_heads);
    a.Tp = round_up16(a.T);
    a.hdp = round_up16(a.hd);
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.hd)));
    a.qkv = qkv.data_ptr<float>();
    a.cos = cos.data_ptr<float>();
    a.sin = sin.data_ptr<float>();
    return a;
  }

  // Items (b, kv head) over the threads; each thread's scratch allocated once per call.
  template <typename Kernel>
  static void run(const cpu::AttentionArgs& a, Kernel kernel) {
    const std::int64_t scratch = cpu::attention_scratch_floats(a);
    at::parallel_for(0, a.B * a.KV, 1, [&](std::int64_t i0, std::int64_t i1) {
      std::vector<float> buf(static_cast<std::size_t>(scratch));
      kernel(a, i0, i1, buf.data());
    });
  }

  static Tensor forward(AutogradContext* ctx, const Tensor& qkv_in, const Tensor& cos_in, const Tensor& sin_in,
                        std::int64_t n_heads, std::int64_t n_kv_heads) {
    const Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    cpu::AttentionArgs a = args(qkv, cos, sin, n_heads, n_kv_heads);
    Tensor y = torch::empty({a.B, a.T, a.H * a.hd}, qkv.options());
    Tensor lse = torch::empty({a.B, a.H, a.T}, qkv.options());
    a.y = y.data_ptr<float>();
    a.lse = lse.data_ptr<float>();
    run(a, k().attention_forward);
    ctx->save_for_backward({qkv, cos, sin, y, lse});
    ctx->saved_data["heads"] = torch::IValue(std::vector<std::int64_t>{n_heads, n_kv_heads});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto heads = ctx->saved_data["heads"].toIntVector();
    const Tensor dy = grads[0].contiguous();
    cpu::AttentionArgs a = args(s[0], s[1], s[2], heads[0], heads[1]);
    a.y = s[3].data_ptr<float>();
    a.lse = s[4].data_ptr<float>();
    a.dy = dy.data_ptr<float>();
    Tensor dqkv = torch::empty_like(s[0]);
    a.dqkv = dqkv.data_ptr<float>();
    run(a, k().attention_backward);
    return {dqkv, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------------------------------

// Rows of logits per chunk: about 4 MiB of them, so a chunk stays in the last-level cache
// between the product that makes it, the softmax, and the two products of the gradient.
std::int64_t ce_chunk_rows(std::int64_t n, std::int64_t v) {
  const std::int64_t rows = std::max<std::int64_t>(64, (std::int64_t{1} << 20) / std::max<std::int64_t>(1, v));
  return std::min(n, rows);
}

struct LinearCrossEntropyFunction : torch::autograd::Function<LinearCrossEntropyFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& h_in, const Tensor& w_in, const Tensor& targets_in,
                        bool need_grad) {
    const Tensor h = h_in.contiguous(), w = w_in.contiguous(), targets = targets_in.contiguous();
    const std::int64_t n = h.size(0), v = w.size(0);
    const std::int64_t chunk = ce_chunk_rows(n, v);
    auto logits = torch::empty({chunk, v}, h.options());
    auto loss_rows = torch::empty({n}, h.options());
    Tensor dh, dw;
    if (need_grad) {
      dh = torch::empty_like(h);
      dw = torch::empty_like(w);  // the first chunk's product overwrites it
    }
    const float grad_scale = need_grad ? static_cast<float>(1.0 / static_cast<double>(n)) : 0.0f;
    const std::int64_t* tp = targets.data_ptr<std::int64_t>();
    float* lp = loss_rows.data_ptr<float>();
    const auto& kt = k();
    for (std::int64_t r = 0; r < n; r += chunk) {
      const std::int64_t m = std::min(chunk, n - r);
      auto lg = logits.narrow(0, 0, m);
      const auto hc = h.narrow(0, r, m);
      gemm_into(lg, hc, w.t(), 0.0f);  // (m, V)
      float* lgp = lg.data_ptr<float>();
      at::parallel_for(0, m, 16, [&](std::int64_t r0, std::int64_t r1) {
        kt.cross_entropy_rows(lgp, tp + r, lp + r, v, grad_scale, r0, r1);
      });
      if (need_grad) {
        auto dhc = dh.narrow(0, r, m);
        gemm_into(dhc, lg, w, 0.0f);                      // (m, C)
        gemm_into(dw, lg.t(), hc, r == 0 ? 0.0f : 1.0f);  // (V, C), summed over chunks
      }
    }
    if (need_grad) ctx->save_for_backward({dh, dw});
    return (loss_rows.sum(torch::kFloat64) / static_cast<double>(n)).to(torch::kFloat32);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    PICO_CHECK(!s.empty(), "linear_cross_entropy: backward without gradients from the forward pass");
    const Tensor g = grads[0];
    // The usual case is loss.backward() (g = 1): hand the gradients over without a copy.
    if (g.numel() == 1 && g.item<float>() == 1.0f) return {s[0], s[1], Tensor(), Tensor()};
    return {s[0] * g, s[1] * g, Tensor(), Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Plain-op references (and the path for cuda and non-float32 tensors).

Tensor rms_norm_reference(const Tensor& x, const Tensor& weight, double eps) {
  // Normalize in fp32 (as HF and pico-train do), scale in the input's dtype.
  const auto xf = x.to(torch::kFloat32);
  const auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return normed.to(x.scalar_type()) * weight;
}

Tensor swiglu_reference(const Tensor& ab) {
  const auto h = ab.size(-1) / 2;
  return torch::silu(ab.narrow(-1, 0, h)) * ab.narrow(-1, h, h);
}

namespace {
// (…, D) → (…, D): [x1, x2] ↦ [−x2, x1], the half-split rotation of HF Llama.
Tensor rotate_half(const Tensor& x) {
  const auto half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

Tensor causal_attention_reference(const Tensor& qkv, const Tensor& cos, const Tensor& sin, std::int64_t n_heads,
                                  std::int64_t n_kv_heads) {
  const auto B = qkv.size(0), T = qkv.size(1);
  const auto hd = qkv.size(2) / (n_heads + 2 * n_kv_heads);
  auto q = qkv.narrow(2, 0, n_heads * hd).view({B, T, n_heads, hd}).transpose(1, 2);  // (B, H, T, hd)
  auto k = qkv.narrow(2, n_heads * hd, n_kv_heads * hd).view({B, T, n_kv_heads, hd}).transpose(1, 2);
  auto v = qkv.narrow(2, (n_heads + n_kv_heads) * hd, n_kv_heads * hd).view({B, T, n_kv_heads, hd}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (n_kv_heads != n_heads) {
    const auto rep = n_heads / n_kv_heads;
    k = k.unsqueeze(2).expand({B, n_kv_heads, rep, T, hd}).reshape({B, n_heads, T, hd});
    v = v.unsqueeze(2).expand({B, n_kv_heads, rep, T, hd}).reshape({B, n_heads, T, hd});
  }
  Tensor y;  // (B, H, T, hd)
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // (B, H, T, T)
  auto mask = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(qkv.device())).triu(1);
  scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
  y = torch::matmul(torch::softmax(scores, -1), v);
#endif
  return y.transpose(1, 2).reshape({B, T, n_heads * hd});
}

Tensor linear_cross_entropy_reference(const Tensor& h, const Tensor& weight, const Tensor& targets) {
  auto logits = torch::matmul(h, weight.t());  // (N, V), at least float32 for the softmax
  if (logits.scalar_type() != torch::kFloat64) logits = logits.to(torch::kFloat32);
  return torch::nn::functional::cross_entropy(logits, targets);
}

// ---------------------------------------------------------------------------------------
// Dispatch.

Tensor linear(const Tensor& x, const Tensor& weight) {
  if (!use_fused({&x, &weight}) || dnnl_sgemm() == nullptr) return torch::matmul(x, weight.t());
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  RECORD_FUNCTION("pico::linear", std::vector<c10::IValue>());
  return LinearFunction::apply(rows_of(x), weight).view(sizes);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  if (!use_fused({&x, &weight})) return rms_norm_reference(x, weight, eps);
  PICO_CHECK_EQ(x.size(-1), weight.numel(), "rms_norm: width of x vs weight");
  RECORD_FUNCTION("pico::rms_norm", std::vector<c10::IValue>());
  return RMSNormFunction::apply(x, weight, eps);
}

Tensor swiglu(const Tensor& ab) {
  if (!use_fused({&ab})) return swiglu_reference(ab);
  PICO_CHECK_EQ(ab.size(-1) % 2, 0, "swiglu: the last dimension holds [a | b]");
  RECORD_FUNCTION("pico::swiglu", std::vector<c10::IValue>());
  return SwiGLUFunction::apply(ab);
}

Tensor causal_attention(const Tensor& qkv, const Tensor& cos, const Tensor& sin, std::int64_t n_heads,
                        std::int64_t n_kv_heads) {
  const auto hd = qkv.size(2) / (n_heads + 2 * n_kv_heads);
  if (!use_fused({&qkv, &cos, &sin})) return causal_attention_reference(qkv, cos, sin, n_heads, n_kv_heads);
  PICO_CHECK_EQ(qkv.dim(), 3, "causal_attention: qkv is (B, T, (H + 2 KV) hd)");
  PICO_CHECK_EQ(qkv.size(2), (n_heads + 2 * n_kv_heads) * hd, "causal_attention: packed width");
  PICO_CHECK_EQ(n_heads % n_kv_heads, 0, "causal_attention: heads per kv head");
  PICO_CHECK_EQ(hd % 2, 0, "causal_attention: RoPE needs an even head size");
  PICO_CHECK_EQ(cos.size(0), qkv.size(1), "causal_attention: RoPE table rows vs sequence length");
  PICO_CHECK_EQ(cos.size(1), hd, "causal_attention: RoPE table width vs head size");
  RECORD_FUNCTION("pico::causal_attention", std::vector<c10::IValue>());
  return AttentionFunction::apply(qkv, cos, sin, n_heads, n_kv_heads);
}

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets) {
  if (!use_fused({&h, &weight})) return linear_cross_entropy_reference(h, weight, targets);
  PICO_CHECK_EQ(h.dim(), 2, "linear_cross_entropy: h is (N, C)");
  PICO_CHECK_EQ(targets.numel(), h.size(0), "linear_cross_entropy: one target per row");
  PICO_CHECK_EQ(h.size(1), weight.size(1), "linear_cross_entropy: width of h vs weight");
  const Tensor t = targets.reshape({-1}).to(torch::kLong);
  if (t.numel() > 0) {
    const auto lo = t.min().item<std::int64_t>(), hi = t.max().item<std::int64_t>();
    if (lo < 0 || hi >= weight.size(0))
      throw Error(str("target token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ", weight.size(0), ")"),
                  "the data was tokenized with a larger vocabulary than model.vocab_size");
  }
  const bool need_grad = torch::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  RECORD_FUNCTION("pico::linear_cross_entropy", std::vector<c10::IValue>());
  return LinearCrossEntropyFunction::apply(h, weight, t, need_grad);
}

bool fused_kernels_enabled() {
  return fused_flag().load();
}
void set_fused_kernels_enabled(bool enabled) {
  fused_flag().store(enabled);
}

std::string cpu_kernel_isa() {
  return cpu::kernels().isa;
}

std::vector<std::string> available_cpu_kernel_isas() {
  std::vector<std::string> out;
  for (const char* const* n = cpu::available_isas(); *n != nullptr; ++n) out.emplace_back(*n);
  return out;
}

void set_cpu_kernel_isa_for_testing(const std::string& isa) {
  if (!isa.empty()) {
    const auto all = available_cpu_kernel_isas();
    if (std::find(all.begin(), all.end(), isa) == all.end())
      throw Error(str("CPU kernels for '", isa, "' are not available on this CPU"),
                  "use one of available_cpu_kernel_isas()");
  }
  cpu::set_isa_for_testing(isa.c_str());
}

int fused_op_threads_for_testing() {
  std::mutex mu;
  std::set<int> ids;
  at::parallel_for(0, std::int64_t{1} << 20, 1, [&](std::int64_t, std::int64_t) {
    const std::lock_guard<std::mutex> lock(mu);
    ids.insert(at::get_thread_num());
  });
  return static_cast<int>(ids.size());
}

}  // namespace pico::models::ops
