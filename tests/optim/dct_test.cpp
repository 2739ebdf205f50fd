// DeMo's chunked DCT-II (optim/dct.h) against independent references: the closed form in
// long double, scipy.fft.dct(type=2, norm="ortho"), and the matrices the reference
// implementation (bloc97/DeMo) stored in tests/fixtures/demo/demo_reference.h5.
#include "pico/optim/dct.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

#include "h5_read.h"
#include "pico/common/error.h"
#include "support/npy.h"
#include "support/test_util.h"

namespace pico::optim {
namespace {

// C[k, n] in long double, straight from the formula (no argument reduction).
long double exact_dct(std::int64_t n_size, std::int64_t k, std::int64_t n) {
  const long double N = static_cast<long double>(n_size);
  const long double s = k == 0 ? std::sqrt(1.0L / N) : std::sqrt(2.0L / N);
  return s * std::cos(std::numbers::pi_v<long double> * (2.0L * n + 1.0L) * k / (2.0L * N));
}

std::vector<float> random_vector(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Dct, ChunkRuleIsTheLargestDivisorAtMostTarget) {
  // The reference's table (tests/fixtures/demo/README.md) and the edge cases.
  EXPECT_EQ(dct_chunk_size(128, 64), 64);
  EXPECT_EQ(dct_chunk_size(192, 64), 64);
  EXPECT_EQ(dct_chunk_size(96, 64), 48);
  EXPECT_EQ(dct_chunk_size(40, 64), 40);
  EXPECT_EQ(dct_chunk_size(100, 64), 50);
  EXPECT_EQ(dct_chunk_size(64, 64), 64);
  EXPECT_EQ(dct_chunk_size(1, 64), 1);
  EXPECT_EQ(dct_chunk_size(67, 64), 1);   // prime > 64: no compression along it
  EXPECT_EQ(dct_chunk_size(134, 64), 2);  // 2·67
  EXPECT_EQ(dct_chunk_size(4096, 64), 64);
  EXPECT_EQ(dct_chunk_size(12, 5), 4);
  EXPECT_EQ(dct_chunk_size(12, 1), 1);
  // brute force against the definition
  for (std::int64_t n = 1; n <= 300; ++n)
    for (std::int64_t t : {1, 7, 16, 64}) {
      std::int64_t best = 1;
      for (std::int64_t d = 1; d <= n; ++d)
        if (n % d == 0 && d <= t) best = d;
      ASSERT_EQ(dct_chunk_size(n, t), best) << n << " " << t;
    }
  EXPECT_THROW(dct_chunk_size(0, 64), Error);
}

TEST(Dct, BasisIsTheCorrectlyRoundedClosedForm) {
  for (std::int64_t n : {1, 2, 3, 7, 40, 48, 50, 64, 100, 256}) {
    const auto c = dct_basis(n);
    ASSERT_EQ(c.size(), static_cast<std::size_t>(n * n));
    for (std::int64_t k = 0; k < n; ++k)
      for (std::int64_t i = 0; i < n; ++i) {
        const long double e = exact_dct(n, k, i);
        // within half an ulp of the exact value (plus the double rounding of cos)
        const long double ulp = std::ldexp(1.0L, std::ilogb(static_cast<float>(e)) - 23);
        ASSERT_LE(std::fabs(static_cast<long double>(c[static_cast<std::size_t>(k * n + i)]) - e),
                  std::max(0.5001L * ulp, 1e-15L))
            << "N=" << n << " k=" << k << " n=" << i;
      }
  }
}

TEST(Dct, BasisIsOrthonormal) {
  for (std::int64_t n : {1, 2, 3, 40, 48, 50, 64, 100, 256}) {
    const auto c = dct_basis(n);
    double worst = 0;
    for (std::int64_t a = 0; a < n; ++a)
      for (std::int64_t b = 0; b < n; ++b) {
        double dot = 0;
        for (std::int64_t i = 0; i < n; ++i)
          dot += static_cast<double>(c[static_cast<std::size_t>(a * n + i)]) * c[static_cast<std::size_t>(b * n + i)];
        worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
      }
    // Each entry is off by ≤ 2^-25 relative: |C·Cᵀ − I| ≤ 2·2^-25·Σ|C_ai·C_bi| ≤ 2^-24·... ≈ 6e-8.
    EXPECT_LT(worst, 2e-7) << "N=" << n;
  }
}

TEST(Dct, BasisMatchesScipy) {
  const std::vector<std::int64_t> sizes = {1, 5, 40, 48, 50, 64, 97};
  test::TempDir dir;
  for (auto n : sizes) {
    const auto c = dct_basis(n);
    test::save_npy(dir.file("c" + std::to_string(n) + ".npy"), torch::tensor(c).reshape({n, n}));
  }
  const std::string script = R"PY(
import sys, numpy as np, scipy.fft
d = sys.argv[1]
worst = 0.0
for n in [int(a) for a in sys.argv[2:]]:
    ref = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)   # ref[k, i] = basis k at sample i
    c = np.load(f"{d}/c{n}.npy").astype(np.float64)
    worst = max(worst, float(np.abs(c - ref).max()))
print(f"{worst:.3e}")
)PY";
  test::write_text(dir.file("ref.py"), script);
  std::string cmd = test::python() + " " + dir.file("ref.py") + " " + dir.path();
  for (auto n : sizes) cmd += " " + std::to_string(n);
  const auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // float rounding of entries ≤ 1: ≤ 2^-25 ≈ 3e-8
  EXPECT_LT(std::stod(r.output), 1e-7) << r.output;
}

TEST(Dct, BasisMatchesTheReferenceMatrices) {
  // F (encode) ≈ Cᵀ and B (decode) ≈ C as bloc97/DeMo builds them (FFT-based, ~1 ulp off).
  test::H5File f(test::test_data("demo/demo_reference.h5"));
  for (std::int64_t n : {40, 48, 50, 64}) {
    const auto fwd = f.read<float>("/dct/n" + std::to_string(n) + "/forward");
    const auto inv = f.read<float>("/dct/n" + std::to_string(n) + "/inverse");
    ASSERT_EQ(fwd.shape, (std::vector<std::int64_t>{n, n}));
    const auto c = dct_basis(n);
    double wf = 0, wb = 0;
    for (std::int64_t k = 0; k < n; ++k)
      for (std::int64_t i = 0; i < n; ++i) {
        const float ck = c[static_cast<std::size_t>(k * n + i)];
        wf = std::max(wf, std::fabs(double{fwd.data[static_cast<std::size_t>(i * n + k)]} - ck));
        wb = std::max(wb, std::fabs(double{inv.data[static_cast<std::size_t>(k * n + i)]} - ck));
      }
    EXPECT_LT(wf, 1e-7) << "forward N=" << n;
    EXPECT_LT(wb, 1e-7) << "inverse N=" << n;
  }
  // The chunk rule as the reference applied it.
  const auto dims = f.read<std::int64_t>("/dct/chunk_rule_dims");
  const auto chunks = f.read<std::int64_t>("/dct/chunk_rule_chunks");
  ASSERT_EQ(dims.numel(), chunks.numel());
  for (std::int64_t i = 0; i < dims.numel(); ++i)
    EXPECT_EQ(dct_chunk_size(dims.data[i], 64), chunks.data[i]) << dims.data[i];
}

// Direct evaluation of E = C1·X·C2ᵀ per chunk in long double from the closed form.
std::vector<double> naive_encode(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, std::int64_t n1,
                                 std::int64_t n2) {
  const std::int64_t gy = rows / n1, gx = cols / n2;
  std::vector<double> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t y = 0; y < gy; ++y)
    for (std::int64_t xc = 0; xc < gx; ++xc)
      for (std::int64_t b = 0; b < n1; ++b)
        for (std::int64_t d = 0; d < n2; ++d) {
          long double s = 0;
          for (std::int64_t h = 0; h < n1; ++h)
            for (std::int64_t w = 0; w < n2; ++w)
              s += exact_dct(n1, b, h) * exact_dct(n2, d, w) *
                   x[static_cast<std::size_t>((y * n1 + h) * cols + xc * n2 + w)];
          out[static_cast<std::size_t>(((y * gx + xc) * n1 + b) * n2 + d)] = static_cast<double>(s);
        }
  return out;
}

TEST(Dct, EncodeMatchesTheDefinitionAndLayout) {
  struct Case {
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> coeff_shape;
  };
  // target chunk 6: 12 → 6, 18 → 6, 10 → 5, 7 → 1 (prime), 20 → 5, 1 → 1
  const std::vector<Case> cases = {{{12, 18}, {2, 3, 6, 6}}, {{10, 7}, {2, 7, 5, 1}},
                                   {{20}, {4, 5}},           {{7}, {7, 1}},
                                   {{1, 12}, {1, 2, 1, 6}},  {{}, {1, 1}},
                                   {{6, 4}, {1, 1, 6, 4}}};
  for (const auto& c : cases) {
    ChunkedDct t(c.shape, 6);
    EXPECT_EQ(t.coeff_shape(), c.coeff_shape);
    const std::int64_t rows = c.shape.size() == 2 ? c.shape[0] : 1;
    const std::int64_t cols = c.shape.empty() ? 1 : c.shape.back();
    const auto x = random_vector(static_cast<std::size_t>(rows * cols), 11);
    std::vector<float> e(x.size());
    t.encode(x.data(), e.data());
    const auto ref = naive_encode(x, rows, cols, t.chunk_rows(), t.chunk_cols());
    double mx = 0, err = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      mx = std::max(mx, std::fabs(ref[i]));
      err = std::max(err, std::fabs(e[i] - ref[i]));
    }
    EXPECT_LT(err, 2e-7 * mx) << c.shape.size();
  }
}

TEST(Dct, RoundTripAndParseval) {
  const std::vector<std::vector<std::int64_t>> shapes = {{128, 192}, {96, 40}, {100}, {7, 13}, {67}, {1, 64}, {134, 3}};
  for (const auto& shape : shapes) {
    ChunkedDct t(shape, 64);
    const auto x = random_vector(static_cast<std::size_t>(t.numel()), 5, 0.1f);
    std::vector<float> e(x.size()), back(x.size());
    t.encode(x.data(), e.data());
    t.decode(e.data(), back.data());
    double mx = 0, err = 0, ex = 0, ee = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      mx = std::max(mx, std::fabs(double{x[i]}));
      err = std::max(err, std::fabs(double{back[i]} - x[i]));
      ex += double{x[i]} * x[i];
      ee += double{e[i]} * e[i];
    }
    EXPECT_LT(err, 1e-6 * mx) << shape[0];
    EXPECT_NEAR(ee, ex, 1e-6 * ex) << shape[0];  // orthonormal: energy is preserved
  }
}

TEST(Dct, SparseDecodeEqualsDenseDefinition) {
  // A few nonzero coefficients per chunk, as DeMo decodes: compare with C1ᵀ·E·C2 in long double.
  ChunkedDct t({96, 40}, 64);  // chunks 48 × 40
  std::vector<float> e(static_cast<std::size_t>(t.numel()), 0.0f);
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::int64_t> pick(0, t.chunk_numel() - 1);
  for (std::int64_t ch = 0; ch < t.chunks(); ++ch)
    for (int j = 0; j < 9; ++j)
      e[static_cast<std::size_t>(ch * t.chunk_numel() + pick(rng))] = static_cast<float>(j) - 4.5f;
  std::vector<float> x(e.size());
  t.decode(e.data(), x.data());
  const std::int64_t n1 = 48, n2 = 40, cols = 40;
  double err = 0, mx = 0;
  for (std::int64_t y = 0; y < 2; ++y)
    for (std::int64_t h = 0; h < n1; ++h)
      for (std::int64_t w = 0; w < n2; ++w) {
        long double s = 0;
        for (std::int64_t b = 0; b < n1; ++b)
          for (std::int64_t d = 0; d < n2; ++d) {
            const float c = e[static_cast<std::size_t>((y * n1 + b) * n2 + d)];
            if (c != 0) s += c * exact_dct(n1, b, h) * exact_dct(n2, d, w);
          }
        err = std::max(err, std::fabs(static_cast<double>(s) - x[static_cast<std::size_t>((y * n1 + h) * cols + w)]));
        mx = std::max(mx, std::fabs(static_cast<double>(s)));
      }
  EXPECT_LT(err, 2e-7 * mx);
  // an all-zero coefficient tensor decodes to exact zeros
  std::vector<float> z(e.size(), 0.0f), zx(e.size(), 1.0f);
  t.decode(z.data(), zx.data());
  for (float v : zx) ASSERT_EQ(v, 0.0f);
}

TEST(Dct, RejectsMoreThanTwoDimensions) {
  EXPECT_THROW(ChunkedDct({2, 3, 4}, 64), Error);
}

}  // namespace
}  // namespace pico::optim
