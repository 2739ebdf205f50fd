// pico/data/shard.h — pre-tokenized token shards: a little-endian binary format, read
// memory-mapped.
//
// Layout (all integers little-endian; see docs/DATA_FORMAT.md):
//   offset  size  field
//        0     8  magic "PICOTOK\0"
//        8     4  version (u32) = 1
//       12     4  bytes per token (u32): 2 (uint16) or 4 (uint32)
//       16     8  token count N (u64)
//       24     4  CRC-32C of the N tokens' bytes (u32)
//       28     4  vocabulary size the ids are below (u32)
//       32    28  reserved, zero
//       60     4  CRC-32C of bytes [0, 60) (u32): a corrupt header is caught before use
//       64        N tokens
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pico/common/fs.h"

namespace pico::data {

inline constexpr char kShardMagic[8] = {'P', 'I', 'C', 'O', 'T', 'O', 'K', '\0'};
inline constexpr std::uint32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderSize = 64;

struct ShardHeader {
  std::uint32_t version = kShardVersion;
  std::uint32_t token_bytes = 2;
  std::uint64_t token_count = 0;
  std::uint32_t tokens_crc32c = 0;
  std::uint32_t vocab_size = 0;
};

// Writes a shard atomically (temporary name, fsync, rename). Token ids must be < vocab_size.
// Returns the header written.
ShardHeader write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, std::uint32_t vocab_size);

// A memory-mapped shard. Opening validates magic, version, dtype, size and the header CRC;
// `verify_tokens` also checks the tokens' CRC (one pass at ~8 GB/s). Every failure throws
// pico::Error naming the file, what was wrong, and a HINT.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path, bool verify_tokens = true);
  const ShardHeader& header() const { return header_; }
  std::uint64_t size() const { return header_.token_count; }
  std::int32_t token(std::uint64_t i) const;
  // Copies tokens [begin, begin + n) into out (as int64, ready for an embedding lookup).
  void read(std::uint64_t begin, std::uint64_t n, std::int64_t* out) const;
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  ShardHeader header_;
  const std::uint8_t* tokens_ = nullptr;
};

}  // namespace pico::data
