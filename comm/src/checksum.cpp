#include "checksum.h"

#include <array>
#include <cstring>

#include "pico/common/hash.h"

namespace pico::comm {

#if defined(__x86_64__)
namespace {

// Bytes per stream in one step: three streams of kStride bytes are hashed together.
constexpr std::size_t kStride = 2048;

// The CRC register is linear over GF(2): feeding L zero bytes maps register r to Z(r),
// a linear map, so Z(r) = ⊕_k table[k][byte k of r].
struct ZeroShift {
  std::array<std::array<std::uint32_t, 256>, 4> table{};
};

__attribute__((target("sse4.2"))) std::uint32_t feed_zeros(std::uint32_t r, std::size_t bytes) {
  std::uint64_t c = r;
  for (std::size_t i = 0; i < bytes; i += 8) c = __builtin_ia32_crc32di(c, 0);
  return static_cast<std::uint32_t>(c);
}

ZeroShift make_shift(std::size_t bytes) {
  ZeroShift z;
  std::array<std::uint32_t, 32> basis{};
  for (int bit = 0; bit < 32; ++bit) basis[bit] = feed_zeros(1u << bit, bytes);
  for (int k = 0; k < 4; ++k)
    for (int b = 0; b < 256; ++b) {
      std::uint32_t v = 0;
      for (int i = 0; i < 8; ++i)
        if (b & (1 << i)) v ^= basis[8 * k + i];
      z.table[k][b] = v;
    }
  return z;
}

inline std::uint32_t shift(const ZeroShift& z, std::uint32_t r) {
  return z.table[0][r & 0xff] ^ z.table[1][(r >> 8) & 0xff] ^ z.table[2][(r >> 16) & 0xff] ^ z.table[3][r >> 24];
}

__attribute__((target("sse4.2"))) std::uint32_t crc_register(const unsigned char* p, std::size_t n,
                                                              std::uint32_t r) {
  static const ZeroShift kShift = make_shift(kStride);
  std::uint64_t c0 = r;
  while (n >= 3 * kStride) {
    std::uint64_t c1 = 0, c2 = 0;
    const unsigned char* p1 = p + kStride;
    const unsigned char* p2 = p + 2 * kStride;
    for (std::size_t i = 0; i < kStride; i += 8) {
      std::uint64_t a, b, d;
      std::memcpy(&a, p + i, 8);
      std::memcpy(&b, p1 + i, 8);
      std::memcpy(&d, p2 + i, 8);
      c0 = __builtin_ia32_crc32di(c0, a);
      c1 = __builtin_ia32_crc32di(c1, b);
      c2 = __builtin_ia32_crc32di(c2, d);
    }
    // register after S0‖S1‖S2 = Z(Z(c0) ⊕ c1) ⊕ c2, with Z = "feed kStride zero bytes"
    c0 = shift(kShift, shift(kShift, static_cast<std::uint32_t>(c0)) ^ static_cast<std::uint32_t>(c1)) ^
         static_cast<std::uint32_t>(c2);
    p += 3 * kStride;
    n -= 3 * kStride;
  }
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t a;
    std::memcpy(&a, p, 8);
    c0 = __builtin_ia32_crc32di(c0, a);
  }
  auto c = static_cast<std::uint32_t>(c0);
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}

}  // namespace
#endif

std::uint32_t wire_crc32c(const void* data, std::size_t size, std::uint32_t crc) {
#if defined(__x86_64__)
  static const bool kHw = __builtin_cpu_supports("sse4.2");
  if (kHw) return ~crc_register(static_cast<const unsigned char*>(data), size, ~crc);
#endif
  return pico::crc32c(data, size, crc);
}

}  // namespace pico::comm
