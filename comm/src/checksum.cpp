#include "checksum.h"

#include <cstring>

#include "pico/common/hash.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pico::comm {

#if defined(__x86_64__)
namespace {

// Polynomial arithmetic over GF(2). The stream's first bit is the highest power; a 128-bit
// register loaded from the stream holds x^127 in bit 0 (the "reflected" order of CRC-32C).
// A 64-bit lane q therefore stands for Q(x) = Σ q_i x^(63−i), and the carry-less product of
// two lanes, read in that order, is x·A(x)·B(x): the constants below carry one power less.

// x^k mod P(x), P = x^32 + 0x1EDC6F41 (CRC-32C), bit i ↔ x^i.
std::uint64_t x_pow_mod(unsigned k) {
  std::uint64_t r = 1;
  for (unsigned i = 0; i < k; ++i) {
    r <<= 1;
    if (r >> 32) r ^= 0x11EDC6F41ULL;
  }
  return r;
}

// The lane that stands for x^k mod P in the reflected order.
std::uint64_t lane(unsigned k) {
  const std::uint64_t r = x_pow_mod(k);
  std::uint64_t v = 0;
  for (int d = 0; d < 32; ++d)
    if (r >> d & 1) v |= std::uint64_t{1} << (63 - d);
  return v;
}

struct FoldConstants {
  // Folding a 128-bit block D bits forward: lo lane (Q0·x^64) by x^(64+D−1), hi lane by x^(D−1).
  std::uint64_t k512_lo, k512_hi, k128_lo, k128_hi;
};

const FoldConstants& constants() {
  static const FoldConstants k{lane(64 + 512 - 1), lane(512 - 1), lane(64 + 128 - 1), lane(128 - 1)};
  return k;
}

__attribute__((target("sse4.2,pclmul"))) inline __m128i fold(__m128i x, __m128i k, __m128i next) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next);
}

__attribute__((target("sse4.2"))) std::uint32_t crc_tail(const unsigned char* p, std::size_t n, std::uint32_t c) {
  std::uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
  }
  c = static_cast<std::uint32_t>(c64);
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}

// Register in, register out (no pre/post inversion).
__attribute__((target("sse4.2,pclmul"))) std::uint32_t crc_fold(const unsigned char* p, std::size_t n,
                                                                std::uint32_t crc) {
  if (n < 128) return crc_tail(p, n, crc);
  const FoldConstants& k = constants();
  const __m128i k512 = _mm_set_epi64x(static_cast<long long>(k.k512_hi), static_cast<long long>(k.k512_lo));
  const __m128i k128 = _mm_set_epi64x(static_cast<long long>(k.k128_hi), static_cast<long long>(k.k128_lo));
  auto load = [](const unsigned char* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
  // The register enters as the stream's first 32 bits (XORed in), then the stream folds.
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(crc)));
  __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x0 = fold(x0, k512, load(p));
    x1 = fold(x1, k512, load(p + 16));
    x2 = fold(x2, k512, load(p + 32));
    x3 = fold(x3, k512, load(p + 48));
  }
  __m128i x = fold(x0, k128, x1);
  x = fold(x, k128, x2);
  x = fold(x, k128, x3);
  // x ≡ the stream so far (mod P), as its last 128 bits: its CRC from a zero register.
  std::uint64_t c = __builtin_ia32_crc32di(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(x)));
  c = __builtin_ia32_crc32di(c, static_cast<std::uint64_t>(_mm_extract_epi64(x, 1)));
  return crc_tail(p, n, static_cast<std::uint32_t>(c));
}

// The same with 512-bit registers (VPCLMULQDQ): four 128-bit lanes per instruction, four
// registers, 256 bytes per step.
#define PICO_WIDE __attribute__((target("sse4.2,pclmul,avx512f,vpclmulqdq")))

PICO_WIDE inline __m512i broadcast512(std::uint64_t lo, std::uint64_t hi) {
  const auto l = static_cast<long long>(lo), h = static_cast<long long>(hi);
  return _mm512_set_epi64(h, l, h, l, h, l, h, l);
}

PICO_WIDE inline __m512i fold512(__m512i x, __m512i k, __m512i next) {
  // 0x96: a ^ b ^ c
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next,
                                   0x96);
}

PICO_WIDE std::uint32_t crc_fold512(const unsigned char* p, std::size_t n, std::uint32_t crc) {
  if (n < 512) return crc_fold(p, n, crc);
  static const std::uint64_t c[10] = {lane(64 + 2048 - 1), lane(2048 - 1), lane(64 + 512 - 1), lane(512 - 1),
                                      lane(64 + 384 - 1),  lane(384 - 1),  lane(64 + 256 - 1), lane(256 - 1),
                                      lane(64 + 128 - 1),  lane(128 - 1)};
  auto set = [](std::uint64_t lo, std::uint64_t hi) {
    return _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
  };
  const __m512i k2048 = broadcast512(c[0], c[1]);
  const __m512i k512 = broadcast512(c[2], c[3]);
  __m512i z0 =
      _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(crc))));
  __m512i z1 = _mm512_loadu_si512(p + 64), z2 = _mm512_loadu_si512(p + 128), z3 = _mm512_loadu_si512(p + 192);
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    z0 = fold512(z0, k2048, _mm512_loadu_si512(p));
    z1 = fold512(z1, k2048, _mm512_loadu_si512(p + 64));
    z2 = fold512(z2, k2048, _mm512_loadu_si512(p + 128));
    z3 = fold512(z3, k2048, _mm512_loadu_si512(p + 192));
  }
  __m512i z = fold512(z0, k512, z1);
  z = fold512(z, k512, z2);
  z = fold512(z, k512, z3);
  // Four 128-bit lanes 48, 32, 16 and 0 bytes before the end: fold them onto the last.
  alignas(64) unsigned char lanes[64];
  _mm512_store_si512(lanes, z);
  const __m128i l0 = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes));
  const __m128i l1 = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 16));
  const __m128i l2 = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 32));
  const __m128i l3 = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 48));
  __m128i x = fold(l0, set(c[4], c[5]), l3);
  x = fold(l1, set(c[6], c[7]), x);
  x = fold(l2, set(c[8], c[9]), x);
  std::uint64_t r = __builtin_ia32_crc32di(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(x)));
  r = __builtin_ia32_crc32di(r, static_cast<std::uint64_t>(_mm_extract_epi64(x, 1)));
  return crc_fold(p, n, static_cast<std::uint32_t>(r));
}
#undef PICO_WIDE

}  // namespace
#endif

std::uint32_t wire_crc32c(const void* data, std::size_t size, std::uint32_t crc) {
#if defined(__x86_64__)
  static const bool kFast = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul");
  static const bool kWide = kFast && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
  if (kWide) return ~crc_fold512(static_cast<const unsigned char*>(data), size, ~crc);
  if (kFast) return ~crc_fold(static_cast<const unsigned char*>(data), size, ~crc);
#endif
  return pico::crc32c(data, size, crc);
}

}  // namespace pico::comm
