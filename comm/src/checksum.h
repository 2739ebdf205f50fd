// comm/src/checksum.h — CRC-32C for message checksums, by carry-less multiplication.
//
// The same function as pico::crc32c (common/hash.h; tests compare them on random data and
// lengths). pico::crc32c runs one chain of crc32 instructions, ~4 GB/s on this machine (the
// instruction's latency bounds it). Every byte of a collective is checksummed when sent and
// when received, so here the bulk is folded 64 bytes at a time with PCLMULQDQ (four
// independent 128-bit lanes), the folded 128 bits are finished with two crc32 instructions,
// and the tail with more: ~5× faster. Falls back to pico::crc32c without SSE4.2/PCLMUL.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pico::comm {

// CRC-32C of data[0, size), continuing `crc` (0 to start), exactly as pico::crc32c.
std::uint32_t wire_crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace pico::comm
