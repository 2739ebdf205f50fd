// pico/common/codec.h — how fp32 values travel on the wire: fp32, fp16, bf16 or uint8.
//
// Shared by comm/ (compressed all-reduce) and optim/ (error feedback needs to know what the
// wire will deliver), so it lives in the leaf library. Plain float buffers, no torch.
//
// uint8 is prime's scheme (REFERENCE.md): per block of at most kUInt8Block values,
//   σ = sqrt(Σx² / max(n−1, 1)), scale = 6σ/256, q = clamp(round(x/scale) + 128, 0, 255),
// and a table of 256 fp32 bin means (the mean of the values that fell in each bin; an empty
// bin holds its centre (q−128)·scale). Decoding is a table lookup, so every value decodes
// to the mean of its bin: |x − decode(x)| ≤ the spread of its bin, ≤ scale for inner bins.
// Block layout: [256 × fp32 table][block_n × u8 codes]. A zero block has scale 0: all
// codes 128, table[128] = 0, exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pico {

enum class WireDtype : std::uint8_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kUInt8 = 3 };

inline constexpr std::size_t kUInt8Block = 1 << 16;  // values per uint8 quantization block

// "none"/"fp32" → kFloat32, "fp16", "bf16", "uint8"; throws pico::Error listing the names.
WireDtype parse_wire_dtype(const std::string& name);
std::string to_string(WireDtype d);

// Bytes that n values occupy on the wire.
std::size_t encoded_size(WireDtype d, std::size_t n);
// dst[0, encoded_size(d, n)) ← encode(src[0, n)).
void encode(WireDtype d, const float* src, std::size_t n, std::uint8_t* dst);
// dst[0, n) ← decode(src).
void decode(WireDtype d, const std::uint8_t* src, std::size_t n, float* dst);
// dst[0, n) += decode(src), in fp32 (one pass: the reduce step of a ring all-reduce).
void decode_add(WireDtype d, const std::uint8_t* src, std::size_t n, float* dst);

// Scalar conversions (round to nearest even; NaN stays NaN).
std::uint16_t float_to_half(float f);
float half_to_float(std::uint16_t h);
std::uint16_t float_to_bfloat16(float f);
float bfloat16_to_float(std::uint16_t b);

}  // namespace pico
