// The metric formulas (see metrics.h for the definitions and the pico-analyze sources).
#include "pico/analysis/metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "pico/common/error.h"

namespace pico::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

torch::Tensor as_f64(const torch::Tensor& x) {
  PICO_CHECK(x.defined(), "metric on an undefined tensor");
  PICO_CHECK(x.is_floating_point(), "metric on a non-floating tensor of dtype ", x.scalar_type());
  return x.to(torch::kCPU, torch::kDouble).contiguous();
}

torch::Tensor as_matrix(const torch::Tensor& x, const char* what) {
  if (x.dim() != 2)
    throw Error(str(what, " needs a 2-D matrix, got a tensor of ", x.dim(), " dimensions ", x.sizes()),
                "use it on weight, gradient or activation matrices");
  return as_f64(x);
}

double item(const torch::Tensor& t) {
  return t.item<double>();
}

// Sorts non-negative doubles ascending. Their IEEE-754 bit patterns order like unsigned
// integers, so an LSD radix sort on the bits does it in a few linear passes; a byte that
// every key shares (the low mantissa bytes of values that came from fp32, most exponent
// bytes) costs one counting pass and no scatter. Same order as std::sort, several times faster.
void sort_nonnegative(std::vector<double>& a) {
  const std::size_t n = a.size();
  if (n < 2048) {
    std::sort(a.begin(), a.end());
    return;
  }
  std::vector<std::uint64_t> keys(n), tmp(n);
  std::memcpy(keys.data(), a.data(), n * sizeof(double));
  for (int shift = 0; shift < 64; shift += 8) {
    std::array<std::size_t, 256> count{};
    for (const std::uint64_t k : keys) ++count[(k >> shift) & 0xff];
    if (count[(keys[0] >> shift) & 0xff] == n) continue;  // one digit for all: already in order
    std::size_t sum = 0;
    for (auto& c : count) {
      const std::size_t t = c;
      c = sum;
      sum += t;
    }
    for (const std::uint64_t k : keys) tmp[count[(k >> shift) & 0xff]++] = k;
    keys.swap(tmp);
  }
  std::memcpy(a.data(), keys.data(), n * sizeof(double));
}

}  // namespace

torch::Tensor singular_values(const torch::Tensor& m) {
  const torch::Tensor a = as_matrix(m, "singular values");
  if (a.numel() == 0) return torch::zeros({0}, torch::kDouble);
  return at::linalg_svdvals(a);  // descending
}

double gini(const torch::Tensor& x) {
  // A radix sort of the magnitudes (sort_nonnegative): torch's sort in LibTorch 1.13 runs on
  // one thread through a generic path, and this sort is most of gini's time.
  const torch::Tensor t = as_f64(x).flatten();
  const std::int64_t n = t.numel();
  if (n == 0) return 0.0;
  const double* p = t.data_ptr<double>();
  std::vector<double> a(static_cast<std::size_t>(n));
  for (std::int64_t k = 0; k < n; ++k) a[static_cast<std::size_t>(k)] = std::abs(p[k]);
  sort_nonnegative(a);  // ascending
  // Σa and Σ(2i − n − 1)·a_i, i = 1..n, accumulated in long double.
  long double total = 0, num = 0;
  const long double nn = static_cast<long double>(n);
  for (std::size_t k = 0; k < a.size(); ++k) {
    total += a[k];
    num += (2.0L * static_cast<long double>(k + 1) - nn - 1.0L) * a[k];
  }
  if (total == 0) return 0.0;  // all zero: 0 by pico-analyze's convention
  return static_cast<double>(num / (nn * total));
}

double hoyer(const torch::Tensor& x) {
  const torch::Tensor a = as_f64(x).flatten();
  const double n = static_cast<double>(a.numel());
  const double l1 = item(a.abs().sum());
  const double l2 = std::sqrt(item((a * a).sum()));
  if (n <= 1 || l2 == 0) return kNaN;
  return (std::sqrt(n) - l1 / l2) / (std::sqrt(n) - 1);
}

double norm_frobenius(const torch::Tensor& x) {
  const torch::Tensor a = as_f64(x);
  return std::sqrt(item((a * a).sum()));
}

double norm_inf(const torch::Tensor& x) {
  const torch::Tensor a = as_f64(x);
  return a.numel() == 0 ? 0.0 : item(a.abs().max());
}

double norm_nuclear(const torch::Tensor& s) {
  return item(as_f64(s).sum());
}

double proportional_effective_rank(const torch::Tensor& sv) {
  const torch::Tensor s = as_f64(sv);
  const std::int64_t n = s.numel();
  if (n == 0) return kNaN;
  const double total = item(s.sum());
  if (!(total > 0)) return kNaN;
  const torch::Tensor p = s / total;
  const torch::Tensor nz = p.masked_select(p > 0);  // 0·ln 0 = 0
  const double entropy = -item((nz * nz.log()).sum());
  return std::exp(entropy) / static_cast<double>(n);
}

double condition_number(const torch::Tensor& sv) {
  const torch::Tensor s = as_f64(sv);
  if (s.numel() == 0) return kNaN;
  const double hi = item(s.max());
  const double lo = item(s.min());
  if (!(hi > 0)) return kNaN;
  if (lo <= 0) return std::numeric_limits<double>::infinity();
  return hi / lo;
}

double linear_cka(const torch::Tensor& x_in, const torch::Tensor& y_in) {
  torch::Tensor x = as_matrix(x_in, "cka");
  torch::Tensor y = as_matrix(y_in, "cka");
  if (x.size(0) != y.size(0))
    throw Error(str("cka compares activations of the same samples: got ", x.size(0), " and ", y.size(0), " samples"),
                "compare checkpoints recorded with the same checkpointing.learning_dynamics.batch_size");
  x = x - x.mean(0, true);  // (n, p)
  y = y - y.mean(0, true);  // (n, q)
  const double n = static_cast<double>(x.size(0)), p = static_cast<double>(x.size(1)),
               q = static_cast<double>(y.size(1));
  double num = 0, nx = 0, ny = 0;
  if (n * (p + q) < p * p + q * q + p * q) {
    // Sample space: ‖XᵀY‖² = ⟨XXᵀ, YYᵀ⟩, ‖XᵀX‖ = ‖XXᵀ‖.
    const torch::Tensor kx = x.mm(x.t());  // (n, n)
    const torch::Tensor ky = y.mm(y.t());  // (n, n)
    num = item((kx * ky).sum());
    nx = item(kx.norm());
    ny = item(ky.norm());
  } else {
    const torch::Tensor xy = x.t().mm(y);  // (p, q)
    num = item((xy * xy).sum());
    nx = item(x.t().mm(x).norm());  // (p, p)
    ny = item(y.t().mm(y).norm());  // (q, q)
  }
  if (!(nx > 0) || !(ny > 0)) return kNaN;
  return num / (nx * ny);
}

PwccaResult pwcca(const torch::Tensor& x_in, const torch::Tensor& y_in, double epsilon) {
  torch::Tensor x = as_matrix(x_in, "pwcca");  // (n, p)
  torch::Tensor y = as_matrix(y_in, "pwcca");  // (n, q)
  const std::int64_t n = x.size(0);
  if (y.size(0) != n)
    throw Error(str("pwcca compares activations of the same samples: got ", n, " and ", y.size(0), " samples"),
                "compare checkpoints recorded with the same checkpointing.learning_dynamics.batch_size");
  if (x.size(1) >= n || y.size(1) >= n)
    throw Error(str("pwcca needs more samples than neurons: got ", n, " samples of ", x.size(1), " and ", y.size(1),
                    " neurons (CCA of fewer samples than neurons is degenerate: every correlation is 1)"),
                str("record at least ", std::max(x.size(1), y.size(1)) + 1,
                    " samples (checkpointing.learning_dynamics.batch_size in the run config), or use cka"));
  PwccaResult r;
  x = x - x.mean(0, true);
  y = y - y.mean(0, true);
  const double dn = static_cast<double>(n - 1);
  torch::Tensor sxx = x.t().mm(x) / dn;  // (p, p)
  torch::Tensor syy = y.t().mm(y) / dn;  // (q, q)
  torch::Tensor sxy = x.t().mm(y) / dn;  // (p, q)
  const double xmax = item(sxx.abs().max());
  const double ymax = item(syy.abs().max());
  if (!(xmax > 0) || !(ymax > 0)) {
    r.value = kNaN;
    return r;
  }
  sxx = sxx / xmax;
  syy = syy / ymax;
  sxy = sxy / std::sqrt(xmax * ymax);
  // Neurons with (scaled) variance below ε are dropped.
  const torch::Tensor kx = (sxx.diagonal() >= epsilon).nonzero().flatten();
  const torch::Tensor ky = (syy.diagonal() >= epsilon).nonzero().flatten();
  sxx = sxx.index_select(0, kx).index_select(1, kx);
  syy = syy.index_select(0, ky).index_select(1, ky);
  sxy = sxy.index_select(0, kx).index_select(1, ky);
  x = x.index_select(1, kx);
  y = y.index_select(1, ky);
  const std::int64_t px = kx.numel(), qy = ky.numel();
  sxx = sxx + epsilon * torch::eye(px, torch::kDouble);
  syy = syy + epsilon * torch::eye(qy, torch::kDouble);
  // Σ^{-1/2} from the eigen-decomposition of the symmetric positive definite Σ + εI.
  auto inv_sqrt = [](const torch::Tensor& s) {
    auto [w, v] = at::linalg_eigh(s, "L");
    return v.mm(torch::diag(w.rsqrt())).mm(v.t());
  };
  const torch::Tensor arr = inv_sqrt(sxx).mm(sxy).mm(inv_sqrt(syy));  // (p', q')
  auto [u, s, vh] = at::linalg_svd(arr, /*full_matrices=*/false);
  // u (p', k), s (k), vh (k, q'), k = min(p', q')
  torch::Tensor dirns, acts;
  if (px <= qy) {
    dirns = u.t().mm(x.t());  // (k, n)
    acts = x;                 // (n, p')
  } else {
    dirns = vh.mm(y.t());  // (k, n)
    acts = y;              // (n, q')
  }
  const torch::Tensor P = std::get<0>(at::linalg_qr(dirns.t(), "reduced"));  // (n, k)
  torch::Tensor w = P.t().mm(acts).abs().sum(1);                             // (k)
  w = w / w.sum();
  r.correlations = s.abs();
  r.weights = w;
  r.value = item((w * r.correlations).sum());
  return r;
}

double cosine_similarity(const torch::Tensor& a_in, const torch::Tensor& b_in) {
  const torch::Tensor a = as_f64(a_in).flatten();
  const torch::Tensor b = as_f64(b_in).flatten();
  PICO_CHECK_EQ(a.numel(), b.numel(), "cosine of tensors of different sizes");
  const double na = std::sqrt(item((a * a).sum())), nb = std::sqrt(item((b * b).sum()));
  if (!(na > 0) || !(nb > 0)) return kNaN;
  return item((a * b).sum()) / (na * nb);
}

}  // namespace pico::analysis
