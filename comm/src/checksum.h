// comm/src/checksum.h — CRC-32C for message checksums, three streams at a time.
//
// The same function as pico::crc32c (common/hash.h): tests compare them on random data.
// pico::crc32c runs one crc32 instruction chain (~4 GB/s here: the instruction's 3-cycle
// latency bounds it); this one runs three independent chains over thirds of each block and
// joins them with a "shift by L zero bytes" table, ~3× faster, which matters because every
// byte of a collective is checksummed once when sent and once when received.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pico::comm {

// CRC-32C of data[0, size), continuing `crc` (0 to start), exactly as pico::crc32c.
std::uint32_t wire_crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace pico::comm
