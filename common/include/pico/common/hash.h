// pico/common/hash.h — content hashes (SHA-256) and fast checksums (CRC-32C).
//
// SHA-256 names content that must agree across machines (tokenizers, datasets, θ_g,
// checkpoint files). CRC-32C guards bytes in flight and at rest against corruption; it is
// hardware-accelerated (SSE4.2) where available, ~10 GB/s, so it never limits a transfer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace pico {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex_digest();  // 64 lowercase hex chars; the object is finished after this

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(const void* data, std::size_t size);
inline std::string sha256_hex(std::string_view s) {
  return sha256_hex(s.data(), s.size());
}
// Streams the file; throws pico::Error naming the path if it cannot be read.
std::string sha256_file(const std::string& path);

// CRC-32C (Castagnoli). `crc` continues a previous value (0 to start).
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

// 64-bit mixing for counter-based determinism (SplitMix64 finalizer).
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
constexpr std::uint64_t mix64(std::uint64_t a, std::uint64_t b) {
  return mix64(mix64(a) ^ b);
}
constexpr std::uint64_t mix64(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  return mix64(mix64(a, b) ^ c);
}
constexpr std::uint64_t mix64(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d) {
  return mix64(mix64(a, b, c) ^ d);
}

}  // namespace pico
