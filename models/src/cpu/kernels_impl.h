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
PICO_INLINE void vstore(float* p, vf v) {
  __builtin_memcpy(p, &v, sizeof v);
}
// x − (+0) is x for every x (−0 included), so this folds to one broadcast; `vf{} + x` would
// not (−0 + 0 = +0), nor would a loop over the lanes.
PICO_INLINE vf vbroadcast(float x) {
  return x - vf{};
}
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
PICO_INLINE vf vmax(vf a, vf b) {
  return a > b ? a : b;
}
PICO_INLINE vi lane_index() {
  vi idx;
  for (int i = 0; i < kW; ++i) idx[i] = i;
  return idx;
}
PICO_INLINE float sqrt_f(float x) {
  return __builtin_sqrtf(x);
}
PICO_INLINE float log_f(float x) {
  return __builtin_logf(x);
}
PICO_INLINE float exp_f(float x) {
  return __builtin_expf(x);
}
PICO_INLINE i64 min_i(i64 a, i64 b) {
  return a < b ? a : b;
}
PICO_INLINE i64 round_up(i64 x, i64 m) {
  return (x + m - 1) / m * m;
}

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
  for (; i + MR <= m; i += MR)
    gemm_tile<MR, NV>(k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc, alpha, accumulate);
  if constexpr (MR > 1) {
    if (i < m) {
      const i64 rest = m - i;
      // rest < MR: split it into tiles of MR/2, MR/4, ... rows
      gemm_panel_rows<(MR / 2 > 0 ? MR / 2 : 1), NV>(rest, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc, alpha,
                                                     accumulate);
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
PICO_INLINE void rope_rotate(const float* __restrict x, const float* __restrict cs, const float* __restrict sn, i64 d,
                             float* __restrict out) {
  const i64 half = d / 2;
  for (i64 i = 0; i < half; ++i) {
    out[i] = x[i] * cs[i] - x[i + half] * sn[i];
    out[i + half] = x[i + half] * cs[i + half] + x[i] * sn[i + half];
  }
}
PICO_INLINE void rope_rotate_back(const float* __restrict g, const float* __restrict cs, const float* __restrict sn,
                                  i64 d, float* __restrict out) {
  const i64 half = d / 2;
  for (i64 i = 0; i < half; ++i) {
    out[i] = g[i] * cs[i] + g[i + half] * sn[i + half];
    out[i + half] = g[i + half] * cs[i + half] - g[i] * sn[i];
  }
}

// Per (batch, kv head) work item, in thread-local scratch (AttentionScratch below): the
// group's keys and values are rotated/transposed once, then each of its query heads runs
// through query blocks of kAttentionBlock rows. Nothing but y, lse and dqkv is written to
// shared memory.
struct AttentionScratch {
  float* k;    // (Tp, hdp) rotated keys
  float* kt;   // (hdp, Tp) the same, transposed
  float* v;    // (Tp, hdp)
  float* vt;   // (hdp, Tp)
  float* q;    // (Tp, hdp) rotated queries of one head
  float* dk;   // (Tp, hdp) gradient of the rotated keys, summed over the group's heads
  float* dv;   // (Tp, hdp)
  float* s;    // (block, Tp) scores, then probabilities
  float* ds;   // (block, Tp) dP, then dS
  float* o;    // (block, hdp) output rows / dO rows
  float* dq;   // (block, hdp)
  float* vec;  // (block) 1/l or rowsum(dO ∘ O)
};

AttentionScratch carve(const AttentionArgs& a, float* p) {
  const i64 th = a.Tp * a.hdp, bt = kAttentionBlock * a.Tp, bh = kAttentionBlock * a.hdp;
  AttentionScratch s{};
  s.k = p;
  s.kt = s.k + th;
  s.v = s.kt + th;
  s.vt = s.v + th;
  s.q = s.vt + th;
  s.dk = s.q + th;
  s.dv = s.dk + th;
  s.s = s.dv + th;
  s.ds = s.s + bt;
  s.o = s.ds + bt;
  s.dq = s.o + bh;
  s.vec = s.dq + bh;
  return s;
}

PICO_INLINE const float* qkv_row(const AttentionArgs& a, i64 b, i64 t) {
  return a.qkv + (b * a.T + t) * (a.H + 2 * a.KV) * a.hd;
}

// Rotated (rope = true) or plain head `col` (in units of hd) of every token of batch b into
// rows (Tp, hdp), and optionally its transpose (hdp, Tp); padding zeroed.
void load_head(const AttentionArgs& a, i64 b, i64 col, bool rope, float* __restrict rows, float* __restrict cols) {
  for (i64 t = 0; t < a.T; ++t) {
    const float* src = qkv_row(a, b, t) + col * a.hd;
    float* dst = rows + t * a.hdp;
    if (rope)
      rope_rotate(src, a.cos + t * a.hd, a.sin + t * a.hd, a.hd, dst);
    else
      for (i64 d = 0; d < a.hd; ++d) dst[d] = src[d];
    for (i64 d = a.hd; d < a.hdp; ++d) dst[d] = 0;
  }
  for (i64 t = a.T; t < a.Tp; ++t)
    for (i64 d = 0; d < a.hdp; ++d) rows[t * a.hdp + d] = 0;
  if (cols == nullptr) return;
  // Column by column: sequential stores, strided loads from the (L1/L2-resident) rows.
  for (i64 d = 0; d < a.hdp; ++d)
    for (i64 t = 0; t < a.Tp; ++t) cols[d * a.Tp + t] = rows[t * a.hdp + d];
}

void attention_forward(const AttentionArgs& a, i64 i0, i64 i1, float* scratch) {
  const i64 Tp = a.Tp, hdp = a.hdp, group = a.H / a.KV;
  const AttentionScratch w = carve(a, scratch);
  const vi lanes = lane_index();
  for (i64 item = i0; item < i1; ++item) {
    const i64 b = item / a.KV, g = item % a.KV;
    load_head(a, b, a.H + g, true, w.k, w.kt);
    load_head(a, b, a.H + a.KV + g, false, w.v, nullptr);
    for (i64 h = g * group; h < (g + 1) * group; ++h) {
      load_head(a, b, h, true, w.q, nullptr);
      for (i64 r0 = 0; r0 < a.T; r0 += kAttentionBlock) {
        const i64 rows = min_i(kAttentionBlock, a.T - r0);
        const i64 keys = round_up(r0 + rows, kW);  // causal: later keys are never needed
        gemm(rows, keys, hdp, w.q + r0 * hdp, hdp, 1, w.kt, Tp, w.s, Tp, a.scale, false);
        for (i64 r = 0; r < rows; ++r) {
          const i64 i = r0 + r;  // query position: keys 0..i are visible
          float* sr = w.s + r * Tp;
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
          a.lse[(b * a.H + h) * a.T + i] = m + log_f(l);
          w.vec[r] = 1.0f / l;
        }
        gemm(rows, hdp, keys, w.s, Tp, 1, w.v, hdp, w.o, hdp, 1.0f, false);
        for (i64 r = 0; r < rows; ++r) {
          float* yr = a.y + ((b * a.T + r0 + r) * a.H + h) * a.hd;
          const float* orow = w.o + r * hdp;
          for (i64 d = 0; d < a.hd; ++d) yr[d] = orow[d] * w.vec[r];
        }
      }
    }
  }
}

void attention_backward(const AttentionArgs& a, i64 i0, i64 i1, float* scratch) {
  const i64 Tp = a.Tp, hdp = a.hdp, group = a.H / a.KV;
  const i64 width = (a.H + 2 * a.KV) * a.hd;
  const AttentionScratch w = carve(a, scratch);
  const vi lanes = lane_index();
  for (i64 item = i0; item < i1; ++item) {
    const i64 b = item / a.KV, g = item % a.KV;
    load_head(a, b, a.H + g, true, w.k, w.kt);
    load_head(a, b, a.H + a.KV + g, false, w.v, w.vt);
    for (i64 x = 0; x < Tp * hdp; ++x) w.dk[x] = w.dv[x] = 0;
    for (i64 h = g * group; h < (g + 1) * group; ++h) {
      load_head(a, b, h, true, w.q, nullptr);
      for (i64 r0 = 0; r0 < a.T; r0 += kAttentionBlock) {
        const i64 rows = min_i(kAttentionBlock, a.T - r0);
        const i64 keys = round_up(r0 + rows, kW);
        for (i64 r = 0; r < rows; ++r) {  // dO rows (zero-padded) and rowsum(dO ∘ O)
          const i64 tok = (b * a.T + r0 + r) * a.H + h;
          const float* dyr = a.dy + tok * a.hd;
          const float* yr = a.y + tok * a.hd;
          float* dor = w.o + r * hdp;
          vf accv = vf{};
          i64 d = 0;
          for (; d + kW <= a.hd; d += kW) {
            const vf dv = vload(dyr + d);
            vstore(dor + d, dv);
            accv += dv * vload(yr + d);
          }
          float acc = hsum(accv);
          for (; d < a.hd; ++d) {
            dor[d] = dyr[d];
            acc += dyr[d] * yr[d];
          }
          for (d = a.hd; d < hdp; ++d) dor[d] = 0;
          w.vec[r] = acc;
        }
        // P = exp(scale·Q Kᵀ − lse), zero above the diagonal
        gemm(rows, keys, hdp, w.q + r0 * hdp, hdp, 1, w.kt, Tp, w.s, Tp, a.scale, false);
        for (i64 r = 0; r < rows; ++r) {
          const i64 i = r0 + r;
          const float lse = a.lse[(b * a.H + h) * a.T + i];
          float* pr = w.s + r * Tp;
          for (i64 j = 0; j < keys; j += kW) {
            const vi visible = (lanes + static_cast<int>(j)) <= static_cast<int>(i);
            vstore(pr + j, visible ? vexp(vload(pr + j) - lse) : vf{});
          }
        }
        // dV += Pᵀ dO
        gemm(keys, hdp, rows, w.s, 1, Tp, w.o, hdp, w.dv, hdp, 1.0f, true);
        // dP = dO Vᵀ, then dS = P ∘ (dP − rowsum(dO ∘ O))
        gemm(rows, keys, hdp, w.o, hdp, 1, w.vt, Tp, w.ds, Tp, 1.0f, false);
        for (i64 r = 0; r < rows; ++r) {
          float* dr = w.ds + r * Tp;
          const float* pr = w.s + r * Tp;
          const vf dd = vbroadcast(w.vec[r]);
          for (i64 j = 0; j < keys; j += kW) vstore(dr + j, vload(pr + j) * (vload(dr + j) - dd));
        }
        // dQ = scale · dS K, un-rotated straight into dqkv; dK += scale · dSᵀ Q
        gemm(rows, hdp, keys, w.ds, Tp, 1, w.k, hdp, w.dq, hdp, a.scale, false);
        for (i64 r = 0; r < rows; ++r) {
          const i64 t = r0 + r;
          rope_rotate_back(w.dq + r * hdp, a.cos + t * a.hd, a.sin + t * a.hd, a.hd,
                           a.dqkv + (b * a.T + t) * width + h * a.hd);
        }
        gemm(keys, hdp, rows, w.ds, 1, Tp, w.q + r0 * hdp, hdp, w.dk, hdp, a.scale, true);
      }
    }
    for (i64 t = 0; t < a.T; ++t) {
      float* row = a.dqkv + (b * a.T + t) * width;
      rope_rotate_back(w.dk + t * hdp, a.cos + t * a.hd, a.sin + t * a.hd, a.hd, row + (a.H + g) * a.hd);
      float* vr = row + (a.H + a.KV + g) * a.hd;
      for (i64 d = 0; d < a.hd; ++d) vr[d] = w.dv[t * hdp + d];
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
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw_acc,
                      i64 c, i64 r0, i64 r1) {
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

PICO_INLINE vf vsigmoid(vf a) {
  return 1.0f / (1.0f + vexp(-a));
}
PICO_INLINE float sigmoid_f(float a) {
  return 1.0f / (1.0f + exp_f(-a));
}

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
    PICO_ISA::attention_forward,
    PICO_ISA::attention_backward,
    PICO_ISA::rmsnorm_forward,
    PICO_ISA::rmsnorm_backward,
    PICO_ISA::swiglu_forward,
    PICO_ISA::swiglu_backward,
    PICO_ISA::cross_entropy_rows,
};

}  // namespace pico::models::cpu
