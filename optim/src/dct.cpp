#include "pico/optim/dct.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "parallel.h"
#include "pico/common/error.h"

namespace pico::optim {

std::int64_t dct_chunk_size(std::int64_t n, std::int64_t target) {
  PICO_CHECK(n >= 1 && target >= 1, "dct_chunk_size(", n, ", ", target, ")");
  for (std::int64_t d = std::min(n, target); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

std::vector<float> dct_basis(std::int64_t n) {
  PICO_CHECK(n >= 1, "dct_basis(", n, ")");
  std::vector<float> c(static_cast<std::size_t>(n * n));
  const double s0 = std::sqrt(1.0 / static_cast<double>(n));
  const double sk = std::sqrt(2.0 / static_cast<double>(n));
  for (std::int64_t k = 0; k < n; ++k) {
    for (std::int64_t i = 0; i < n; ++i) {
      // cos(π·m/(2n)) with m = (2i+1)·k reduced mod 4n, so the argument stays in [0, 2π).
      const std::int64_t m = ((2 * i + 1) * k) % (4 * n);
      const double v =
          (k == 0 ? s0 : sk) * std::cos(std::numbers::pi * static_cast<double>(m) / (2.0 * static_cast<double>(n)));
      c[static_cast<std::size_t>(k * n + i)] = static_cast<float>(v);
    }
  }
  return c;
}

namespace {

std::vector<double> widen(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

std::vector<double> transpose(const std::vector<double>& m, std::int64_t n) {
  std::vector<double> t(m.size());
  for (std::int64_t a = 0; a < n; ++a)
    for (std::int64_t b = 0; b < n; ++b)
      t[static_cast<std::size_t>(b * n + a)] = m[static_cast<std::size_t>(a * n + b)];
  return t;
}

}  // namespace

ChunkedDct::ChunkedDct(const std::vector<std::int64_t>& shape, std::int64_t target_chunk) {
  if (shape.size() > 2)
    throw Error(str("DeMo's DCT handles 1-D and 2-D tensors, got ", shape.size(), " dimensions"),
                "reshape the parameter to 2-D or leave it out of DeMo");
  for (auto s : shape) PICO_CHECK(s >= 1, "empty dimension in a DCT shape");
  two_d_ = shape.size() == 2;
  rows_ = two_d_ ? shape[0] : 1;
  cols_ = shape.empty() ? 1 : shape.back();
  n1_ = two_d_ ? dct_chunk_size(rows_, target_chunk) : 1;
  n2_ = dct_chunk_size(cols_, target_chunk);
  gy_ = rows_ / n1_;
  gx_ = cols_ / n2_;
  c1_ = widen(dct_basis(n1_));
  c2_ = widen(dct_basis(n2_));
  c2t_ = transpose(c2_, n2_);
}

std::vector<std::int64_t> ChunkedDct::coeff_shape() const {
  if (two_d_) return {gy_, gx_, n1_, n2_};
  return {gx_, n2_};
}

void ChunkedDct::encode(const float* x, float* coeffs) const {
  const std::int64_t n1 = n1_, n2 = n2_, gx = gx_, cols = cols_, nchunks = chunks();
  const double* c1 = c1_.data();
  const double* c2t = c2t_.data();
#pragma omp parallel if (nchunks > 1 && numel() >= kParallelTransform)
  {
    std::vector<double> t(static_cast<std::size_t>(n1 * n2)), e(static_cast<std::size_t>(n2));
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < nchunks; ++ch) {
      const std::int64_t y = ch / gx, xc = ch % gx;
      const float* xin = x + (y * n1) * cols + xc * n2;  // chunk row h is xin + h·cols
      float* out = coeffs + ch * n1 * n2;
      // T = C1 · X : T[b, w] = Σ_h C1[b, h] · X[h, w]
      std::fill(t.begin(), t.end(), 0.0);
      for (std::int64_t b = 0; b < n1; ++b) {
        double* tb = t.data() + b * n2;
        for (std::int64_t h = 0; h < n1; ++h) {
          const double a = c1[b * n1 + h];
          const float* xh = xin + h * cols;
          for (std::int64_t w = 0; w < n2; ++w) tb[w] += a * static_cast<double>(xh[w]);
        }
      }
      // E = T · C2ᵀ : E[b, d] = Σ_w T[b, w] · C2[d, w]
      for (std::int64_t b = 0; b < n1; ++b) {
        std::fill(e.begin(), e.end(), 0.0);
        const double* tb = t.data() + b * n2;
        for (std::int64_t w = 0; w < n2; ++w) {
          const double a = tb[w];
          const double* row = c2t + w * n2;
          for (std::int64_t d = 0; d < n2; ++d) e[d] += a * row[d];
        }
        for (std::int64_t d = 0; d < n2; ++d) out[b * n2 + d] = static_cast<float>(e[d]);
      }
    }
  }
}

void ChunkedDct::decode(const float* coeffs, float* x) const {
  const std::int64_t n1 = n1_, n2 = n2_, gx = gx_, cols = cols_, nchunks = chunks();
  const double* c1 = c1_.data();
  const double* c2 = c2_.data();
#pragma omp parallel if (nchunks > 1 && numel() >= kParallelTransform)
  {
    std::vector<double> t(static_cast<std::size_t>(n1 * n2)), o(static_cast<std::size_t>(n1 * n2));
    std::vector<std::int64_t> live;  // rows b of the chunk with a nonzero coefficient
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < nchunks; ++ch) {
      const std::int64_t y = ch / gx, xc = ch % gx;
      const float* c = coeffs + ch * n1 * n2;
      // T = E · C2 : T[b, w] = Σ_d E[b, d] · C2[d, w]
      live.clear();
      for (std::int64_t b = 0; b < n1; ++b) {
        double* tb = t.data() + b * n2;
        bool any = false;
        for (std::int64_t d = 0; d < n2; ++d) {
          const float v = c[b * n2 + d];
          if (v == 0.0f) continue;
          if (!any) std::fill(tb, tb + n2, 0.0);
          any = true;
          const double a = static_cast<double>(v);
          const double* row = c2 + d * n2;
          for (std::int64_t w = 0; w < n2; ++w) tb[w] += a * row[w];
        }
        if (any) live.push_back(b);
      }
      // X = C1ᵀ · T : X[h, w] = Σ_b C1[b, h] · T[b, w]
      std::fill(o.begin(), o.end(), 0.0);
      for (const std::int64_t b : live) {
        const double* tb = t.data() + b * n2;
        for (std::int64_t h = 0; h < n1; ++h) {
          const double a = c1[b * n1 + h];
          double* oh = o.data() + h * n2;
          for (std::int64_t w = 0; w < n2; ++w) oh[w] += a * tb[w];
        }
      }
      float* xout = x + (y * n1) * cols + xc * n2;
      for (std::int64_t h = 0; h < n1; ++h)
        for (std::int64_t w = 0; w < n2; ++w) xout[h * cols + w] = static_cast<float>(o[h * n2 + w]);
    }
  }
}

}  // namespace pico::optim
