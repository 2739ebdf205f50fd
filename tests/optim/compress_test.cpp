// Compressors with error feedback (optim/compress.h): what is not sent is kept, top-k keeps
// the largest magnitudes, payloads are validated; plus the uint8 wire cases that
// tests/comm/codec_test.cpp does not cover (subnormal scales, per-block independence,
// huge magnitudes, two-valued tensors).
#include "pico/optim/compress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "pico/common/codec.h"
#include "pico/common/error.h"

namespace pico::optim {
namespace {

std::vector<float> normal(std::size_t n, unsigned seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> roundtrip(WireDtype d, const std::vector<float>& x) {
  std::vector<std::uint8_t> wire(encoded_size(d, x.size()));
  encode(d, x.data(), x.size(), wire.data());
  std::vector<float> out(x.size());
  decode(d, wire.data(), x.size(), out.data());
  return out;
}

// ---- uint8 cases missing from codec_test ----------------------------------------------------

TEST(UInt8Wire, SubnormalValuesDecodeToTheirMean) {
  // σ ~ 1e-39 makes 1/scale overflow: the block falls back to one bin, the block mean, so the
  // error is at most the spread of the block.
  std::vector<float> x(1000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 1e-39f * static_cast<float>(i % 5);  // subnormal
  const auto y = roundtrip(WireDtype::kUInt8, x);
  const float spread = *std::max_element(x.begin(), x.end()) - *std::min_element(x.begin(), x.end());
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_LE(std::fabs(y[i] - x[i]), spread) << i;
  for (std::size_t i = 1; i < y.size(); ++i) ASSERT_EQ(y[i], y[0]);  // one bin
}

TEST(UInt8Wire, BlocksAreQuantizedIndependently) {
  // A large-σ block followed by a constant block: the constant block is exact regardless.
  auto x = normal(kUInt8Block, 4, 10.0f);
  x.resize(kUInt8Block + 3000, -7.25f);
  const auto y = roundtrip(WireDtype::kUInt8, x);
  for (std::size_t i = kUInt8Block; i < x.size(); ++i) ASSERT_EQ(y[i], -7.25f) << i;
  double sumsq = 0;
  for (std::size_t i = 0; i < kUInt8Block; ++i) sumsq += double{x[i]} * x[i];
  const double scale = 6 * std::sqrt(sumsq / (kUInt8Block - 1)) / 256;
  for (std::size_t i = 0; i < kUInt8Block; ++i)
    if (std::fabs(std::nearbyint(x[i] / scale)) < 127) {
      ASSERT_LE(std::fabs(y[i] - x[i]), scale * (1 + 1e-5)) << i;
    }
}

TEST(UInt8Wire, HugeMagnitudesAndTwoValuedTensors) {
  auto x = normal(5000, 8, 1e30f);
  const auto y = roundtrip(WireDtype::kUInt8, x);
  double sumsq = 0;
  for (float v : x) sumsq += double{v} * v;
  const double scale = 6 * std::sqrt(sumsq / (x.size() - 1)) / 256;
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << i;
    if (std::fabs(std::nearbyint(x[i] / scale)) < 127) {
      ASSERT_LE(std::fabs(y[i] - x[i]), scale * (1 + 1e-5)) << i;
    }
  }
  // two values land in two bins whose means are the values themselves: exact
  std::vector<float> two(777);
  for (std::size_t i = 0; i < two.size(); ++i) two[i] = i % 3 ? 0.1f : -3.0f;
  EXPECT_EQ(roundtrip(WireDtype::kUInt8, two), two);
}

// ---- error feedback -----------------------------------------------------------------------

TEST(ErrorFeedback, ConservesWhatWasNotSent) {
  // Over T rounds, Σ_t decode(sent_t) + e_T = Σ_t x_t, up to the fp32 roundings of
  // y = fl(x + e) and e = fl(y − sent): ≤ 2^-24·(|y| + |e|) per round and element.
  const std::size_t n = 70000;  // two uint8 blocks
  const int rounds = 20;
  for (auto dtype : {WireDtype::kFloat16, WireDtype::kBFloat16, WireDtype::kUInt8}) {
    ErrorFeedback ef("pg", n, dtype);
    std::vector<double> sum_x(n, 0.0), sum_sent(n, 0.0), slack(n, 0.0);
    std::vector<std::uint8_t> wire(ef.wire_bytes());
    std::vector<float> sent(n);
    for (int t = 0; t < rounds; ++t) {
      auto x = normal(n, 100 + t, 1e-3f, 1e-4f);
      ef.encode(x.data(), wire.data());
      decode(dtype, wire.data(), n, sent.data());
      for (std::size_t i = 0; i < n; ++i) {
        sum_x[i] += x[i];
        sum_sent[i] += sent[i];
        slack[i] += std::ldexp(std::fabs(double{sent[i]}) + 2 * std::fabs(double{ef.residual()[i]}), -23);
      }
    }
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double err = std::fabs(sum_sent[i] + ef.residual()[i] - sum_x[i]);
      ASSERT_LE(err, slack[i] + 1e-30) << to_string(dtype) << " " << i;
      worst = std::max(worst, err);
    }
    // and the residual stays bounded by one quantization step (it does not accumulate)
    double max_e = 0;
    for (float e : ef.residual()) max_e = std::max(max_e, std::fabs(double{e}));
    EXPECT_LT(max_e, dtype == WireDtype::kUInt8 ? 5e-3 : 2e-5) << to_string(dtype);
  }
}

TEST(ErrorFeedback, RecoversASignalBelowTheWireResolution) {
  // 1 + 1e-4 is 1 in bf16 (8 bits of mantissa). Without feedback the 1e-4 is lost every
  // round; with it, the mean of what was sent converges to the input.
  const std::size_t n = 16;
  const int rounds = 4000;
  ErrorFeedback ef("x", n, WireDtype::kBFloat16);
  std::vector<float> x(n, 1.0001f), sent(n);
  std::vector<std::uint8_t> wire(ef.wire_bytes());
  double total = 0;
  for (int t = 0; t < rounds; ++t) {
    ef.encode(x.data(), wire.data());
    decode(WireDtype::kBFloat16, wire.data(), n, sent.data());
    total += sent[0];
    ASSERT_EQ(roundtrip(WireDtype::kBFloat16, x)[0], 1.0f);  // plain bf16 drops the 1e-4
  }
  // |Σ sent − Σ x| = |e_T| ≤ half a bf16 ulp at 1 (2^-8), spread over 4000 rounds
  EXPECT_NEAR(total / rounds, 1.0001, 1.5e-6);
}

TEST(ErrorFeedback, CompensateMatchesEncodeAndStateRoundTrips) {
  const std::size_t n = 1000;
  ErrorFeedback a("a", n, WireDtype::kUInt8), b("a", n, WireDtype::kUInt8);
  std::vector<std::uint8_t> wire(a.wire_bytes());
  for (int t = 0; t < 3; ++t) {
    auto x = normal(n, 7 + t);
    auto y = x;
    a.encode(x.data(), wire.data());
    b.compensate(y.data());  // y is now x + e, what a compressing collective should send
    EXPECT_EQ(a.residual(), b.residual());
    std::vector<std::uint8_t> wy(a.wire_bytes());
    encode(WireDtype::kUInt8, y.data(), n, wy.data());
    EXPECT_EQ(wy, wire);
  }
  ErrorFeedback c("a", n, WireDtype::kUInt8);
  c.load_state(a.state());
  EXPECT_EQ(c.residual(), a.residual());
  EXPECT_EQ(a.state()[0].first, "a.residual");
  ErrorFeedback wrong("b", n, WireDtype::kUInt8);
  EXPECT_THROW(wrong.load_state(a.state()), Error);
  ErrorFeedback small("a", n - 1, WireDtype::kUInt8);
  EXPECT_THROW(small.load_state(a.state()), Error);
  auto x = normal(n, 1);
  x[5] = NAN;
  const auto before = a.residual();
  EXPECT_THROW(a.encode(x.data(), wire.data()), Error);
  EXPECT_EQ(a.residual(), before);
}

// ---- top-k --------------------------------------------------------------------------------

std::vector<float> decoded(const TopKCompressor& c, const std::vector<std::uint8_t>& payload) {
  std::vector<float> out(c.size(), 0.0f);
  c.decode_add(payload, out.data());
  return out;
}

TEST(TopK, KeepsTheLargestMagnitudesAndConservesTheRest) {
  const std::size_t n = 5000, k = 50;
  TopKCompressor c("pg", n, k);
  EXPECT_EQ(c.payload_bytes(), 24 + 4 * k + 4 * k);
  auto x = normal(n, 3);
  const auto payload = c.compress(x.data());
  ASSERT_EQ(payload.size(), c.payload_bytes());
  const auto got = decoded(c, payload);
  // independent selection: sort all indices by |x| descending
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return std::fabs(x[a]) > std::fabs(x[b]); });
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t i = order[j];
    if (j < k) {
      EXPECT_EQ(got[i], x[i]) << "kept " << i;
      EXPECT_EQ(c.residual()[i], 0.0f);
    } else {
      EXPECT_EQ(got[i], 0.0f) << "not kept " << i;
      EXPECT_EQ(c.residual()[i], x[i]);  // everything not sent is remembered exactly
    }
  }
}

TEST(TopK, ErrorFeedbackConservesOverRounds) {
  const std::size_t n = 3000;
  for (auto dtype : {WireDtype::kFloat32, WireDtype::kBFloat16, WireDtype::kUInt8}) {
    TopKCompressor c("pg", n, 100, dtype);
    std::vector<double> sum_x(n, 0.0), sum_sent(n, 0.0), slack(n, 0.0);
    for (int t = 0; t < 15; ++t) {
      auto x = normal(n, 50 + t);
      const auto sent = decoded(c, c.compress(x.data()));
      for (std::size_t i = 0; i < n; ++i) {
        sum_x[i] += x[i];
        sum_sent[i] += sent[i];
        slack[i] += std::ldexp(
            std::fabs(double{x[i]}) + 2 * std::fabs(double{c.residual()[i]}) + std::fabs(double{sent[i]}), -23);
      }
    }
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_LE(std::fabs(sum_sent[i] + c.residual()[i] - sum_x[i]), slack[i]) << to_string(dtype) << " " << i;
  }
}

TEST(TopK, TiesGoToTheLowerIndexAndPayloadsAccumulate) {
  TopKCompressor c("t", 8, 3);
  const std::vector<float> x = {1, -2, 2, 0.5f, -2, 2, 0, 1};
  const auto got = decoded(c, c.compress(x.data()));
  EXPECT_EQ(got, (std::vector<float>{0, -2, 2, 0, -2, 0, 0, 0}));
  // decode_add accumulates (the trainer sums gathered payloads in rank order)
  std::vector<float> acc(8, 1.0f);
  TopKCompressor d("t", 8, 3);
  const auto p = d.compress(x.data());
  d.decode_add(p, acc.data());
  d.decode_add(p, acc.data());
  EXPECT_EQ(acc, (std::vector<float>{1, -3, 5, 1, -3, 1, 1, 1}));
}

TEST(TopK, RejectsBadPayloadsWithoutTouchingTheOutput) {
  TopKCompressor c("pg", 100, 10);
  auto x = normal(100, 1);
  const auto good = c.compress(x.data());
  std::vector<float> dst(100, 0.0f);
  auto expect_bad = [&](std::vector<std::uint8_t> p, const char* what) {
    try {
      c.decode_add(p, dst.data(), "rank 2");
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
    }
    for (float v : dst) ASSERT_EQ(v, 0.0f) << what;
  };
  expect_bad(std::vector<std::uint8_t>(good.begin(), good.end() - 1), "truncated");
  auto p = good;
  p[0] ^= 1;
  expect_bad(p, "bad magic");
  p = good;
  p[8] = 99;  // n
  expect_bad(p, "wrong n");
  p = good;
  const std::uint32_t big = 100;
  std::memcpy(p.data() + 24 + 4 * 9, &big, 4);
  expect_bad(p, "index out of range");
  p = good;
  std::memcpy(p.data() + 24 + 4, p.data() + 24, 4);  // duplicate of the first index
  expect_bad(p, "not ascending");
  p = good;
  const float nan = NAN;
  std::memcpy(p.data() + 24 + 40 + 8, &nan, 4);
  expect_bad(p, "NaN value");
  TopKCompressor bf("pg", 100, 10, WireDtype::kBFloat16);
  expect_bad(bf.compress(x.data()), "other value type");
  EXPECT_THROW(TopKCompressor("z", 10, 0), Error);
  EXPECT_THROW(TopKCompressor("z", 10, 11), Error);
  // NaN input: rejected, residual unchanged
  const auto before = c.residual();
  x[3] = INFINITY;
  EXPECT_THROW(c.compress(x.data()), Error);
  EXPECT_EQ(c.residual(), before);
  // state round trip
  TopKCompressor e("pg", 100, 10);
  e.load_state(c.state());
  EXPECT_EQ(e.residual(), c.residual());
}

}  // namespace
}  // namespace pico::optim
