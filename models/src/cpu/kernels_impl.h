// models/src/cpu/kernels_impl.h — the bodies of the kernels in kernels.h, written once
// with GCC/Clang vector extensions and compiled once per instruction set: each of
// kernels_{avx512,avx2,generic}.cpp defines PICO_ISA (a namespace), PICO_VEC_BYTES (64, 32,
// 16) and the register tiles, then includes this file.
//
// Deliberately plain C on raw pointers: no std:: templates or inline library functions, no
// torch, no OpenMP. A template instantiated here under -march=x86-64-v4 could otherwise be
// the copy the linker keeps for the whole program and crash a CPU without AVX-512.
// Everything here has internal linkage except the one KernelTable per ISA.
#ifndef PICO_ISA
#error "define PICO_ISA, PICO_VEC_BYTES and PICO_TILE_* before including kernels_impl.h"
#endif

#include "cpu/kernels.h"

namespace pico::models::cpu {
namespace PICO_ISA {
namespace {

using i64 = std::int64_t;
constexpr int kW = PICO_VEC_BYTES / 4;  // floats per vector
typedef float vf __attribute__((vector_size(PICO_VEC_BYTES)));
typedef int vi __attribute__((vector_size(PICO_VEC_BYTES)));

#define PICO_INLINE inline __attribute__((always_inline))

PICO_INLINE vf vload(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
PICO_INLINE void vstore(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
// x − (+0) is x for every x (−0 included), so this folds to one broadcast; `vf{} + x` would
// not (−0 + 0 = +0), nor would a loop over the lanes.
PICO_INLINE vf vbroadcast(float x) { return x - vf{}; }
PICO_INLINE float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}
PICO_INLINE float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < kW; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
PICO_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
PICO_INLINE vi lane_index() {
  vi idx;
  for (int i = 0; i < kW; ++i) idx[i] = i;
  return idx;
}
PICO_INLINE float sqrt_f(float x) { return __builtin_sqrtf(x); }
PICO_INLINE float log_f(float x) { return __builtin_logf(x); }
PICO_INLINE float exp_f(float x) { return __builtin_expf(x); }
PICO_INLINE i64 min_i(i64 a, i64 b) { return a < b ? a : b; }
PICO_INLINE i64 round_up(i64 x, i64 m) { return (x + m - 1) / m * m; }

// e^x for every lane: Cephes' expf (range reduction by ln 2, degree-6 polynomial), within
// 2 ulp of the exact value on [-87, 88]; inputs are clamped to that range (e^-87 ≈ 1.6e-38,
// callers that need exact zeros mask them), NaN stays NaN.
PICO_INLINE vf vexp(vf x) {
  x = x > vbroadcast(88.0f) ? vbroadcast(88.0f) : x;
  x = x < vbroadcast(-87.0f) ? vbroadcast(-87.0f) : x;
  const vf magic = vbroadcast(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  const vf n = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const vf z = r * r;
  vf p = vbroadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  __builtin_memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

// ---------------------------------------------------------------------------------------
// Small matrix products for the attention blocks (all operands L1/L2-resident):
//   C[i, j] (+)= alpha · Σ_p A(i, p) · B[p, j]     i < m, j < n (n a multiple of kW)
// A(i, p) = a[i·a_rs + p·a_cs] (row-major: a_rs = lda, a_cs = 1; transposed: a_rs = 1,
// a_cs = lda). B row-major with row stride ldb. Register tiles of MR rows × NV vectors.

template <int MR, int NV>
PICO_INLINE void gemm_tile(i64 k, const float* a, i64 a_rs, i64 a_cs, const float* b, i64 ldb, float* c, i64 ldc,
                           float alpha, bool accumulate) {
  vf acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  for (i64 p = 0; p < k; ++p) {
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * ldb + v * kW);
    const float* ap = a + p * a_cs;
    for (int r = 0; r < MR; ++r) {
      const vf av = vbroadcast(ap[r * a_rs]);
      for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      float* cp = c + r * ldc + v * kW;
      vf out = acc[r][v] * alpha;
      if (accumulate) out += vload(cp);
      vstore(cp, out);
    }
}

// Rows [0, m) of one column panel, MR at a time, then the remainder one tile height below.
template <int MR, int NV>
PICO_INLINE void gemm_panel_rows(i64 m, i64 k, const float* a, i64 a_rs, i64 a_cs, const float* b, i64 ldb, float* c,
                                 i64 ldc, float alpha, bool accumulate) {
  i64 i = 0;
  for (; i + MR <= m; i += MR) gemm_tile<MR, NV>(k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc, alpha, accumulate);
  if constexpr (MR > 1) {
    if (i < m) {
      const i64 rest = m - i;
      // rest < MR: split it into tiles of MR/2, MR/4, ... rows
      gemm_panel_rows<(MR / 2 > 0 ? MR / 2 : 1), NV>(rest, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc,
                                                       alpha, accumulate);
    }
  }
}

// Columns from j0 in panels of NV vectors; returns the first column not done.
template <int MR, int NV>
PICO_INLINE i64 gemm_panels(i64 j0, i64 m, i64 n, i64 k, const float* a, i64 a_rs, i64 a_cs, const float* b, i64 ldb,
                            float* c, i64 ldc, float alpha, bool accumulate) {
  i64 j = j0;
  for (; j + NV * kW <= n; j += NV * kW)
    gemm_panel_rows<MR, NV>(m, k, a, a_rs, a_cs, b + j, ldb, c + j, ldc, alpha, accumulate);
  return j;
}

__attribute__((noinline)) void gemm(i64 m, i64 n, i64 k, const float* a, i64 a_rs, i64 a_cs, const float* b, i64 ldb,
                                    float* c, i64 ldc, float alpha, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  i64 j = 0;
  j = gemm_panels<PICO_TILE_MR4, 4>(j, m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, alpha, accumulate);
  j = gemm_panels<PICO_TILE_MR2, 2>(j, m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, alpha, accumulate);
  gemm_panels<PICO_TILE_MR1, 1>(j, m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, alpha, accumulate);
}

// ---------------------------------------------------------------------------------------
// RoPE, half-split (rotate_half): for i < D/2,
//   out[i] = x[i]·cos[i] − x[i+D/2]·sin[i],   out[i+D/2] = x[i+D/2]·cos[i+D/2] + x[i]·sin[i+D/2]
// and its transpose for the backward pass.
PICO_INLINE void rope_rotate(const float* x, const float* cs, const float* sn, i64 d, float* out) {
  const i64 half = d / 2;
  for (i64 i = 0; i < half; ++i) {
    out[i] = x[i] * cs[i] - x[i + half] * sn[i];
    out[i + half] = x[i + half] * cs[i + half] + x[i] * sn[i + half];
  }
}
PICO_INLINE void rope_rotate_back(const float* g, const float* cs, const float* sn, i64 d, float* out) {
  const i64 half = d / 2;
  for (i64 i = 0; i < half; ++i) {
    out[i] = g[i] * cs[i] + g[i + half] * sn[i + half];
    out[i + half] = g[i + half] * cs[i + half] - g[i] * sn[i];
  }
}

void attention_pack(const AttentionArgs& a, i64 t0, i64 t1) {
  const i64 width = (a.H + 2 * a.KV) * a.hd;
  for (i64 bt = t0; bt < t1; ++bt) {
    const i64 b = bt / a.T, t = bt % a.T;
    const float* row = a.qkv + bt * width;
    const float* cs = a.cos + t * a.hd;
    const float* sn = a.sin + t * a.hd;
    for (i64 h = 0; h < a.H; ++h) rope_rotate(row + h * a.hd, cs, sn, a.hd, a.q + ((b * a.H + h) * a.T + t) * a.hdp);
    for (i64 g = 0; g < a.KV; ++g) {
      const i64 bg = b * a.KV + g;
      float* kr = a.k + (bg * a.Tp + t) * a.hdp;
      float* vr = a.v + (bg * a.Tp + t) * a.hdp;
      rope_rotate(row + (a.H + g) * a.hd, cs, sn, a.hd, kr);
      const float* vs = row + (a.H + a.KV + g) * a.hd;
      for (i64 d = 0; d < a.hd; ++d) vr[d] = vs[d];
      float* ktc = a.kt + bg * a.hdp * a.Tp + t;
      float* vtc = a.vt + bg * a.hdp * a.Tp + t;
      for (i64 d = 0; d < a.hd; ++d) {
        ktc[d * a.Tp] = kr[d];
        vtc[d * a.Tp] = vr[d];
      }
    }
  }
}

// Scratch layout per call: s (kAttentionBlock × Tp), dp (kAttentionBlock × Tp),
// o (kAttentionBlock × hdp), d (kAttentionBlock).
void attention_forward(const AttentionArgs& a, i64 i0, i64 i1, float* scratch) {
  const i64 Tp = a.Tp, hdp = a.hdp, group = a.H / a.KV;
  float* s = scratch;
  float* o = s + 2 * kAttentionBlock * Tp;
  const vi lanes = lane_index();
  for (i64 bh = i0; bh < i1; ++bh) {
    const i64 b = bh / a.H, h = bh % a.H, bg = b * a.KV + h / group;
    const float* q = a.q + bh * a.T * hdp;
    const float* kt = a.kt + bg * hdp * Tp;
    const float* v = a.v + bg * Tp * hdp;
    for (i64 r0 = 0; r0 < a.T; r0 += kAttentionBlock) {
      const i64 rows = min_i(kAttentionBlock, a.T - r0);
      const i64 keys = round_up(r0 + rows, kW);  // causal: later keys are never needed
      gemm(rows, keys, hdp, q + r0 * hdp, hdp, 1, kt, Tp, s, Tp, a.scale, false);
      for (i64 r = 0; r < rows; ++r) {
        const i64 i = r0 + r;  // query position: keys 0..i are visible
        float* sr = s + r * Tp;
        vf mv = vbroadcast(-3.0e38f);
        for (i64 j = 0; j < keys; j += kW) {
          const vi visible = (lanes + static_cast<int>(j)) <= static_cast<int>(i);
          mv = vmax(mv, visible ? vload(sr + j) : vbroadcast(-3.0e38f));
        }
        const float m = hmax(mv);
        vf lv = vf{};
        for (i64 j = 0; j < keys; j += kW) {
          const vi visible = (lanes + static_cast<int>(j)) <= static_cast<int>(i);
          const vf p = visible ? vexp(vload(sr + j) - m) : vf{};
          vstore(sr + j, p);
          lv += p;
        }
        const float l = hsum(lv);
        a.lse[bh * a.T + i] = m + log_f(l);
        s[2 * kAttentionBlock * Tp + kAttentionBlock * hdp + r] = 1.0f / l;
      }
      gemm(rows, hdp, keys, s, Tp, 1, v, hdp, o, hdp, 1.0f, false);
      const float* inv_l = s + 2 * kAttentionBlock * Tp + kAttentionBlock * hdp;
      for (i64 r = 0; r < rows; ++r) {
        float* yr = a.y + ((b * a.T + r0 + r) * a.H + h) * a.hd;
        const float* orow = o + r * hdp;
        for (i64 d = 0; d < a.hd; ++d) yr[d] = orow[d] * inv_l[r];
      }
    }
  }
}

void attention_backward(const AttentionArgs& a, i64 i0, i64 i1, float* scratch) {
  const i64 Tp = a.Tp, hdp = a.hdp, group = a.H / a.KV;
  const i64 width = (a.H + 2 * a.KV) * a.hd;
  float* p = scratch;                       // (block, Tp) probabilities
  float* ds = p + kAttentionBlock * Tp;     // (block, Tp) dP, then dS
  float* dob = ds + kAttentionBlock * Tp;   // (block, hdp) dO of the block, zero-padded
  float* dvec = dob + kAttentionBlock * hdp;  // (block) rowsum(dO ∘ O)
  float* dq = dvec + kAttentionBlock;       // (block, hdp)
  const vi lanes = lane_index();
  for (i64 bh = i0; bh < i1; ++bh) {
    const i64 b = bh / a.H, h = bh % a.H, bg = b * a.KV + h / group;
    const float* q = a.q + bh * a.T * hdp;
    const float* k = a.k + bg * Tp * hdp;
    const float* kt = a.kt + bg * hdp * Tp;
    const float* vt = a.vt + bg * hdp * Tp;
    float* dk = a.dk_h + bh * Tp * hdp;
    float* dv = a.dv_h + bh * Tp * hdp;
    for (i64 r0 = 0; r0 < a.T; r0 += kAttentionBlock) {
      const i64 rows = min_i(kAttentionBlock, a.T - r0);
      const i64 keys = round_up(r0 + rows, kW);
      for (i64 r = 0; r < rows; ++r) {
        const i64 tok = (b * a.T + r0 + r) * a.H + h;
        const float* dyr = a.dy + tok * a.hd;
        const float* yr = a.y + tok * a.hd;
        float* dor = dob + r * hdp;
        float acc = 0;
        for (i64 d = 0; d < a.hd; ++d) {
          dor[d] = dyr[d];
          acc += dyr[d] * yr[d];
        }
        for (i64 d = a.hd; d < hdp; ++d) dor[d] = 0;
        dvec[r] = acc;
      }
      // P = exp(scale·Q Kᵀ − lse), zero above the diagonal
      gemm(rows, keys, hdp, q + r0 * hdp, hdp, 1, kt, Tp, p, Tp, a.scale, false);
      for (i64 r = 0; r < rows; ++r) {
        const i64 i = r0 + r;
        const float lse = a.lse[bh * a.T + i];
        float* pr = p + r * Tp;
        for (i64 j = 0; j < keys; j += kW) {
          const vi visible = (lanes + static_cast<int>(j)) <= static_cast<int>(i);
          vstore(pr + j, visible ? vexp(vload(pr + j) - lse) : vf{});
        }
      }
      // dV += Pᵀ dO
      gemm(keys, hdp, rows, p, 1, Tp, dob, hdp, dv, hdp, 1.0f, true);
      // dP = dO Vᵀ, then dS = P ∘ (dP − rowsum(dO ∘ O))
      gemm(rows, keys, hdp, dob, hdp, 1, vt, Tp, ds, Tp, 1.0f, false);
      for (i64 r = 0; r < rows; ++r) {
        float* dr = ds + r * Tp;
        const float* pr = p + r * Tp;
        const vf dd = vbroadcast(dvec[r]);
        for (i64 j = 0; j < keys; j += kW) vstore(dr + j, vload(pr + j) * (vload(dr + j) - dd));
      }
      // dQ = scale · dS K (then un-rotate into dqkv); dK += scale · dSᵀ Q
      gemm(rows, hdp, keys, ds, Tp, 1, k, hdp, dq, hdp, a.scale, false);
      for (i64 r = 0; r < rows; ++r) {
        const i64 t = r0 + r;
        rope_rotate_back(dq + r * hdp, a.cos + t * a.hd, a.sin + t * a.hd, a.hd,
                         a.dqkv + (b * a.T + t) * width + h * a.hd);
      }
      gemm(keys, hdp, rows, ds, 1, Tp, q + r0 * hdp, hdp, dk, hdp, a.scale, true);
    }
  }
}

void attention_unpack_kv(const AttentionArgs& a, i64 t0, i64 t1) {
  const i64 width = (a.H + 2 * a.KV) * a.hd, group = a.H / a.KV;
  float sum_k[512], sum_v[512];  // hd <= 512 (checked by the caller)
  for (i64 bt = t0; bt < t1; ++bt) {
    const i64 b = bt / a.T, t = bt % a.T;
    float* row = a.dqkv + bt * width;
    for (i64 g = 0; g < a.KV; ++g) {
      for (i64 d = 0; d < a.hd; ++d) sum_k[d] = sum_v[d] = 0;
      for (i64 h = g * group; h < (g + 1) * group; ++h) {
        const float* dk = a.dk_h + ((b * a.H + h) * a.Tp + t) * a.hdp;
        const float* dv = a.dv_h + ((b * a.H + h) * a.Tp + t) * a.hdp;
        for (i64 d = 0; d < a.hd; ++d) {
          sum_k[d] += dk[d];
          sum_v[d] += dv[d];
        }
      }
      rope_rotate_back(sum_k, a.cos + t * a.hd, a.sin + t * a.hd, a.hd, row + (a.H + g) * a.hd);
      float* vr = row + (a.H + a.KV + g) * a.hd;
      for (i64 d = 0; d < a.hd; ++d) vr[d] = sum_v[d];
    }
  }
}

// ---------------------------------------------------------------------------------------
// RMSNorm. Vector loops over the row with a scalar tail (any width c).

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, i64 c, float eps, i64 r0, i64 r1) {
  for (i64 r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    vf acc = vf{};
    i64 j = 0;
    for (; j + kW <= c; j += kW) {
      const vf xv = vload(xr + j);
      acc += xv * xv;
    }
    float ss = hsum(acc);
    for (; j < c; ++j) ss += xr[j] * xr[j];
    const float rs = 1.0f / sqrt_f(ss / static_cast<float>(c) + eps);
    rstd[r] = rs;
    j = 0;
    for (; j + kW <= c; j += kW) vstore(yr + j, (vload(xr + j) * rs) * vload(w + j));
    for (; j < c; ++j) yr[j] = (xr[j] * rs) * w[j];
  }
}

// With x̂ = x·rstd and g = dy·w:  dx = rstd · (g − x̂ · mean(g ∘ x̂)),  dw = Σ_rows dy ∘ x̂.
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw_acc, i64 c,
                      i64 r0, i64 r1) {
  for (i64 r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    const float* dyr = dy + r * c;
    float* dxr = dx + r * c;
    const float rs = rstd[r];
    vf acc = vf{};
    i64 j = 0;
    for (; j + kW <= c; j += kW) {
      const vf xh = vload(xr + j) * rs;
      const vf dyv = vload(dyr + j);
      acc += dyv * vload(w + j) * xh;
      vstore(dw_acc + j, vload(dw_acc + j) + dyv * xh);
    }
    float dot = hsum(acc);
    for (; j < c; ++j) {
      const float xh = xr[j] * rs;
      dot += dyr[j] * w[j] * xh;
      dw_acc[j] += dyr[j] * xh;
    }
    const float mean = dot / static_cast<float>(c);
    j = 0;
    for (; j + kW <= c; j += kW) {
      const vf xh = vload(xr + j) * rs;
      vstore(dxr + j, (vload(dyr + j) * vload(w + j) - xh * mean) * rs);
    }
    for (; j < c; ++j) dxr[j] = (dyr[j] * w[j] - xr[j] * rs * mean) * rs;
  }
}

// ---------------------------------------------------------------------------------------
// SwiGLU: silu(a) = a·σ(a).

PICO_INLINE vf vsigmoid(vf a) { return 1.0f / (1.0f + vexp(-a)); }
PICO_INLINE float sigmoid_f(float a) { return 1.0f / (1.0f + exp_f(-a)); }

void swiglu_forward(const float* ab, float* out, i64 h, i64 r0, i64 r1) {
  for (i64 r = r0; r < r1; ++r) {
    const float* ar = ab + r * 2 * h;
    const float* br = ar + h;
    float* orow = out + r * h;
    i64 j = 0;
    for (; j + kW <= h; j += kW) {
      const vf av = vload(ar + j);
      vstore(orow + j, av * vsigmoid(av) * vload(br + j));
    }
    for (; j < h; ++j) orow[j] = ar[j] * sigmoid_f(ar[j]) * br[j];
  }
}

void swiglu_backward(const float* ab, const float* dout, float* dab, i64 h, i64 r0, i64 r1) {
  for (i64 r = r0; r < r1; ++r) {
    const float* ar = ab + r * 2 * h;
    const float* br = ar + h;
    const float* gr = dout + r * h;
    float* dar = dab + r * 2 * h;
    float* dbr = dar + h;
    i64 j = 0;
    for (; j + kW <= h; j += kW) {
      const vf av = vload(ar + j), bv = vload(br + j), gv = vload(gr + j);
      const vf sg = vsigmoid(av);
      const vf silu = av * sg;
      vstore(dbr + j, gv * silu);
      vstore(dar + j, gv * bv * (sg + silu * (1.0f - sg)));
    }
    for (; j < h; ++j) {
      const float sg = sigmoid_f(ar[j]), silu = ar[j] * sg;
      dbr[j] = gr[j] * silu;
      dar[j] = gr[j] * br[j] * (sg + silu * (1.0f - sg));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Cross-entropy over rows of logits.

void cross_entropy_rows(float* logits, const i64* targets, float* loss, i64 v, float grad_scale, i64 r0, i64 r1) {
  for (i64 r = r0; r < r1; ++r) {
    float* x = logits + r * v;
    vf mv = vbroadcast(-3.0e38f);
    i64 j = 0;
    for (; j + kW <= v; j += kW) mv = vmax(mv, vload(x + j));
    float m = hmax(mv);
    for (; j < v; ++j) m = x[j] > m ? x[j] : m;
    vf sv = vf{};
    j = 0;
    for (; j + kW <= v; j += kW) sv += vexp(vload(x + j) - m);
    float sum = hsum(sv);
    for (; j < v; ++j) sum += exp_f(x[j] - m);
    const float lse = m + log_f(sum);
    const i64 target = targets[r];
    loss[r] = lse - x[target];
    if (grad_scale != 0.0f) {
      j = 0;
      for (; j + kW <= v; j += kW) vstore(x + j, vexp(vload(x + j) - lse) * grad_scale);
      for (; j < v; ++j) x[j] = exp_f(x[j] - lse) * grad_scale;
      x[target] -= grad_scale;
    }
  }
}

}  // namespace
}  // namespace PICO_ISA

extern const KernelTable PICO_TABLE_NAME = {
    PICO_ISA_NAME,
    PICO_ISA::attention_pack,
    PICO_ISA::attention_forward,
    PICO_ISA::attention_backward,
    PICO_ISA::attention_unpack_kv,
    PICO_ISA::rmsnorm_forward,
    PICO_ISA::rmsnorm_backward,
    PICO_ISA::swiglu_forward,
    PICO_ISA::swiglu_backward,
    PICO_ISA::cross_entropy_rows,
};

}  // namespace pico::models::cpu
