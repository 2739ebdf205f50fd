#include "pico/common/codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "pico/common/error.h"

namespace pico {

WireDtype parse_wire_dtype(const std::string& name) {
  if (name == "none" || name == "fp32" || name == "float32") return WireDtype::kFloat32;
  if (name == "fp16" || name == "float16") return WireDtype::kFloat16;
  if (name == "bf16" || name == "bfloat16") return WireDtype::kBFloat16;
  if (name == "uint8" || name == "int8") return WireDtype::kUInt8;
  throw Error(str("unknown compression '", name, "'"), "use none, fp16, bf16 or uint8");
}

std::string to_string(WireDtype d) {
  switch (d) {
    case WireDtype::kFloat32:
      return "none";
    case WireDtype::kFloat16:
      return "fp16";
    case WireDtype::kBFloat16:
      return "bf16";
    case WireDtype::kUInt8:
      return "uint8";
  }
  return "?";
}

std::size_t encoded_size(WireDtype d, std::size_t n) {
  switch (d) {
    case WireDtype::kFloat32:
      return 4 * n;
    case WireDtype::kFloat16:
    case WireDtype::kBFloat16:
      return 2 * n;
    case WireDtype::kUInt8:
      return n + (n + kUInt8Block - 1) / kUInt8Block * 256 * sizeof(float);
  }
  return 0;
}

// ---- scalar conversions ------------------------------------------------------------------

std::uint16_t float_to_bfloat16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // quiet NaN
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bfloat16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

std::uint16_t float_to_half(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal half (or zero): scale by 2^24 and round to integer
    const float a = std::bit_cast<float>(abs);
    const float scaled = a * 16777216.0f;  // exact
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(scaled)));
  }
  // normal: rebias exponent 127 → 15 and round the 13 dropped mantissa bits to nearest even
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    const float v = static_cast<float>(man) / 16777216.0f;  // man × 2^-24, exact
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

namespace {

#if defined(__x86_64__)
bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return yes;
}

__attribute__((target("avx,f16c"))) void encode_half_f16c(const float* src, std::size_t n, std::uint16_t* dst) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = float_to_half(src[i]);
}

__attribute__((target("avx,f16c"))) void decode_half_f16c(const std::uint16_t* src, std::size_t n, float* dst,
                                                          bool add) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(dst + i));
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < n; ++i) dst[i] = add ? dst[i] + half_to_float(src[i]) : half_to_float(src[i]);
}
#endif

void encode_half(const float* src, std::size_t n, std::uint16_t* dst) {
#if defined(__x86_64__)
  if (has_f16c()) return encode_half_f16c(src, n, dst);
#endif
  for (std::size_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

void decode_half(const std::uint16_t* src, std::size_t n, float* dst, bool add) {
#if defined(__x86_64__)
  if (has_f16c()) return decode_half_f16c(src, n, dst, add);
#endif
  for (std::size_t i = 0; i < n; ++i) dst[i] = add ? dst[i] + half_to_float(src[i]) : half_to_float(src[i]);
}

// uint8: one block of n ≤ kUInt8Block values → [256 fp32 table][n codes].
void encode_uint8_block(const float* x, std::size_t n, std::uint8_t* dst) {
  double sumsq = 0;
  for (std::size_t i = 0; i < n; ++i) sumsq += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const double sigma = std::sqrt(sumsq / static_cast<double>(std::max<std::size_t>(n, 2) - 1));
  const float scale = static_cast<float>(6.0 * sigma / 256.0);
  std::uint8_t* codes = dst + 256 * sizeof(float);
  std::array<double, 256> sum{};
  std::array<std::uint32_t, 256> count{};
  const bool usable = std::isfinite(scale) && scale > 0 && std::isnormal(1.0f / scale);
  const float inv = usable ? 1.0f / scale : 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    int q = 128;
    if (usable && !std::isnan(x[i])) {
      const float r = std::nearbyint(x[i] * inv) + 128.0f;
      q = r < 0.0f ? 0 : r > 255.0f ? 255 : static_cast<int>(r);
    }
    codes[i] = static_cast<std::uint8_t>(q);
    sum[q] += x[i];
    ++count[q];
  }
  std::array<float, 256> table;
  for (int b = 0; b < 256; ++b)
    table[b] = count[b] ? static_cast<float>(sum[b] / count[b]) : static_cast<float>(b - 128) * scale;
  std::memcpy(dst, table.data(), sizeof table);
}

void decode_uint8_block(const std::uint8_t* src, std::size_t n, float* dst, bool add) {
  float table[256];
  std::memcpy(table, src, sizeof table);
  const std::uint8_t* codes = src + sizeof table;
  if (add) {
    for (std::size_t i = 0; i < n; ++i) dst[i] += table[codes[i]];
  } else {
    for (std::size_t i = 0; i < n; ++i) dst[i] = table[codes[i]];
  }
}

void decode_impl(WireDtype d, const std::uint8_t* src, std::size_t n, float* dst, bool add) {
  switch (d) {
    case WireDtype::kFloat32:
      if (add) {
        for (std::size_t i = 0; i < n; ++i) {
          float v;
          std::memcpy(&v, src + 4 * i, 4);
          dst[i] += v;
        }
      } else {
        std::memcpy(dst, src, 4 * n);
      }
      return;
    case WireDtype::kFloat16: {
      // src may be unaligned inside a message: copy through an aligned buffer in pieces.
      std::uint16_t buf[4096];
      for (std::size_t off = 0; off < n; off += 4096) {
        const std::size_t m = std::min<std::size_t>(4096, n - off);
        std::memcpy(buf, src + 2 * off, 2 * m);
        decode_half(buf, m, dst + off, add);
      }
      return;
    }
    case WireDtype::kBFloat16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        const float v = bfloat16_to_float(b);
        dst[i] = add ? dst[i] + v : v;
      }
      return;
    case WireDtype::kUInt8:
      for (std::size_t off = 0; off < n; off += kUInt8Block) {
        const std::size_t m = std::min(kUInt8Block, n - off);
        decode_uint8_block(src, m, dst + off, add);
        src += 256 * sizeof(float) + m;
      }
      return;
  }
}

}  // namespace

void encode(WireDtype d, const float* src, std::size_t n, std::uint8_t* dst) {
  switch (d) {
    case WireDtype::kFloat32:
      std::memcpy(dst, src, 4 * n);
      return;
    case WireDtype::kFloat16: {
      std::uint16_t buf[4096];
      for (std::size_t off = 0; off < n; off += 4096) {
        const std::size_t m = std::min<std::size_t>(4096, n - off);
        encode_half(src + off, m, buf);
        std::memcpy(dst + 2 * off, buf, 2 * m);
      }
      return;
    }
    case WireDtype::kBFloat16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t b = float_to_bfloat16(src[i]);
        std::memcpy(dst + 2 * i, &b, 2);
      }
      return;
    case WireDtype::kUInt8:
      for (std::size_t off = 0; off < n; off += kUInt8Block) {
        const std::size_t m = std::min(kUInt8Block, n - off);
        encode_uint8_block(src + off, m, dst);
        dst += 256 * sizeof(float) + m;
      }
      return;
  }
}

void decode(WireDtype d, const std::uint8_t* src, std::size_t n, float* dst) {
  decode_impl(d, src, n, dst, false);
}
void decode_add(WireDtype d, const std::uint8_t* src, std::size_t n, float* dst) {
  decode_impl(d, src, n, dst, true);
}

}  // namespace pico
