// The wire codecs, against c10's Half/BFloat16 (an independent implementation) and the
// uint8 scheme's error bound.
#include "pico/common/codec.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "pico/common/error.h"

namespace pico {
namespace {

std::vector<float> roundtrip(WireDtype d, const std::vector<float>& x) {
  std::vector<std::uint8_t> wire(encoded_size(d, x.size()));
  encode(d, x.data(), x.size(), wire.data());
  std::vector<float> out(x.size());
  decode(d, wire.data(), x.size(), out.data());
  return out;
}

std::vector<float> interesting_values() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          0.5f,
                          65504.0f,
                          65520.0f,
                          1e6f,
                          -1e6f,
                          6.1e-5f,
                          5.96e-8f,
                          2.98e-8f,
                          1e-10f,
                          3.14159f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          1.0009765625f,
                          1.00048828125f,
                          1.0014648f};
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 1);
  for (int i = 0; i < 5000; ++i) v.push_back(n(rng) * std::pow(10.0f, static_cast<float>(i % 13 - 6)));
  return v;
}

TEST(Codec, HalfMatchesC10) {
  for (float f : interesting_values()) {
    const c10::Half ref(f);
    ASSERT_EQ(float_to_half(f), ref.x) << f;
    ASSERT_EQ(half_to_float(ref.x), static_cast<float>(ref)) << f;
  }
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
  // the vectorized path (8 at a time) agrees with the scalar one
  const auto v = interesting_values();
  const auto rt = roundtrip(WireDtype::kFloat16, v);
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(rt[i], half_to_float(float_to_half(v[i]))) << v[i];
}

TEST(Codec, BFloat16MatchesC10) {
  for (float f : interesting_values()) {
    const c10::BFloat16 ref(f);
    ASSERT_EQ(float_to_bfloat16(f), ref.x) << f;
    ASSERT_EQ(bfloat16_to_float(ref.x), static_cast<float>(ref)) << f;
  }
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(std::nanf("")))));
}

// Every value decodes to the mean of its bin; inner bins are `scale` wide, with σ computed
// per quantization block of kUInt8Block values.
void expect_uint8_bound(const std::vector<float>& x) {
  const auto y = roundtrip(WireDtype::kUInt8, x);
  for (std::size_t off = 0; off < x.size(); off += kUInt8Block) {
    const std::size_t m = std::min(kUInt8Block, x.size() - off);
    double sumsq = 0;
    for (std::size_t i = off; i < off + m; ++i) sumsq += static_cast<double>(x[i]) * x[i];
    const double sigma = std::sqrt(sumsq / static_cast<double>(std::max<std::size_t>(m, 2) - 1));
    const double scale = 6 * sigma / 256;
    for (std::size_t i = off; i < off + m; ++i) {
      const double q = std::nearbyint(x[i] / scale);
      if (std::abs(q) >= 127) continue;  // the outer bins also hold the clipped tail
      ASSERT_LE(std::abs(y[i] - x[i]), scale * (1 + 1e-5) + 1e-30) << i << " of " << x.size();
    }
  }
}

TEST(Codec, UInt8WithinItsBound) {
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0, 1);
  for (std::size_t size : {1ul, 2ul, 100ul, 65536ul, 65537ul, 200000ul}) {
    std::vector<float> x(size);
    for (auto& v : x) v = n(rng) * 0.01f;
    expect_uint8_bound(x);
    // The mean of the decoded values equals the mean of the inputs (bin means preserve sums
    // per block), to float rounding.
    const auto y = roundtrip(WireDtype::kUInt8, x);
    double sx = 0, sy = 0;
    for (std::size_t i = 0; i < size; ++i) {
      sx += x[i];
      sy += y[i];
    }
    EXPECT_NEAR(sx, sy, 1e-5 * static_cast<double>(size) * 0.01) << size;
  }
  EXPECT_EQ(encoded_size(WireDtype::kUInt8, 65536), 65536u + 1024u);
  EXPECT_EQ(encoded_size(WireDtype::kUInt8, 65537), 65537u + 2048u);
  EXPECT_EQ(encoded_size(WireDtype::kUInt8, 0), 0u);
}

TEST(Codec, UInt8ConstantZeroAndTinySpreadTensors) {
  // constant: every value lands in one bin whose mean is the constant itself
  std::vector<float> c(1000, 0.37f);
  EXPECT_EQ(roundtrip(WireDtype::kUInt8, c), c);
  std::vector<float> z(1000, 0.0f);
  EXPECT_EQ(roundtrip(WireDtype::kUInt8, z), z);
  std::vector<float> neg(3, -2.5f);
  EXPECT_EQ(roundtrip(WireDtype::kUInt8, neg), neg);
  // tiny spread around a large offset: one or two bins, error below the spread
  std::vector<float> t(1000);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = 1000.0f + 1e-3f * static_cast<float>(i % 7);
  const auto y = roundtrip(WireDtype::kUInt8, t);
  for (std::size_t i = 0; i < t.size(); ++i) ASSERT_LE(std::abs(y[i] - t[i]), 6.1e-3f) << i;
  // a single value
  EXPECT_EQ(roundtrip(WireDtype::kUInt8, {5.0f}), std::vector<float>{5.0f});
}

TEST(Codec, DecodeAddAccumulates) {
  for (auto d : {WireDtype::kFloat32, WireDtype::kFloat16, WireDtype::kBFloat16, WireDtype::kUInt8}) {
    std::vector<float> x(1000), acc(1000, 1.0f);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
    std::vector<std::uint8_t> wire(encoded_size(d, x.size()));
    encode(d, x.data(), x.size(), wire.data());
    const auto dec = roundtrip(d, x);
    decode_add(d, wire.data(), x.size(), acc.data());
    for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(acc[i], 1.0f + dec[i]) << to_string(d);
  }
}

TEST(Codec, Names) {
  EXPECT_EQ(parse_wire_dtype("none"), WireDtype::kFloat32);
  EXPECT_EQ(parse_wire_dtype("uint8"), WireDtype::kUInt8);
  EXPECT_THROW(parse_wire_dtype("int4"), Error);
}

}  // namespace
}  // namespace pico
