#include "pico/data/shard.h"

#include <bit>
#include <cstring>

#include "pico/common/error.h"
#include "pico/common/hash.h"

namespace pico::data {
namespace {

constexpr const char* kPrepareHint =
    "re-create the dataset with `pico data prepare` (the file is damaged or not a pico shard)";

template <typename T>
void put(std::string& buf, std::size_t offset, T v) {
  std::memcpy(buf.data() + offset, &v, sizeof v);  // x86-64 and aarch64 are little-endian
}
template <typename T>
T get(const std::uint8_t* p, std::size_t offset) {
  T v;
  std::memcpy(&v, p + offset, sizeof v);
  return v;
}

}  // namespace

ShardHeader write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, std::uint32_t vocab_size) {
  static_assert(std::endian::native == std::endian::little, "shards are little-endian");
  ShardHeader h;
  h.token_bytes = vocab_size <= 65536 ? 2 : 4;
  h.token_count = tokens.size();
  h.vocab_size = vocab_size;
  std::string buf(kShardHeaderSize + tokens.size() * h.token_bytes, '\0');
  std::uint8_t* body = reinterpret_cast<std::uint8_t*>(buf.data()) + kShardHeaderSize;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto t = tokens[i];
    PICO_CHECK(t >= 0 && static_cast<std::uint32_t>(t) < vocab_size, "token id ", t, " out of range for vocab ",
               vocab_size);
    if (h.token_bytes == 2) {
      const auto v = static_cast<std::uint16_t>(t);
      std::memcpy(body + 2 * i, &v, 2);
    } else {
      const auto v = static_cast<std::uint32_t>(t);
      std::memcpy(body + 4 * i, &v, 4);
    }
  }
  h.tokens_crc32c = crc32c(body, tokens.size() * h.token_bytes);
  std::memcpy(buf.data(), kShardMagic, 8);
  put(buf, 8, h.version);
  put(buf, 12, h.token_bytes);
  put(buf, 16, h.token_count);
  put(buf, 24, h.tokens_crc32c);
  put(buf, 28, h.vocab_size);
  put(buf, 60, crc32c(buf.data(), 60));
  write_file_atomic(path, buf);
  return h;
}

ShardReader::ShardReader(const std::string& path, bool verify_tokens) : file_(path) {
  const auto* p = file_.data();
  const std::size_t n = file_.size();
  if (n < kShardHeaderSize)
    throw Error(
        str("token shard ", path, " is truncated: ", n, " bytes, shorter than the ", kShardHeaderSize, "-byte header"),
        kPrepareHint);
  if (std::memcmp(p, kShardMagic, 8) != 0)
    throw Error(str(path, " is not a pico token shard (bad magic)"), kPrepareHint);
  header_.version = get<std::uint32_t>(p, 8);
  if (header_.version != kShardVersion)
    throw Error(str("token shard ", path, " has format version ", header_.version, ", expected ", kShardVersion),
                "prepare the dataset again with this version of pico");
  if (get<std::uint32_t>(p, 60) != crc32c(p, 60))
    throw Error(str("token shard ", path, " has a corrupt header (checksum mismatch)"), kPrepareHint);
  header_.token_bytes = get<std::uint32_t>(p, 12);
  header_.token_count = get<std::uint64_t>(p, 16);
  header_.tokens_crc32c = get<std::uint32_t>(p, 24);
  header_.vocab_size = get<std::uint32_t>(p, 28);
  if (header_.token_bytes != 2 && header_.token_bytes != 4)
    throw Error(str("token shard ", path, " has an unknown dtype (", header_.token_bytes, " bytes per token)"),
                kPrepareHint);
  const std::uint64_t body = n - kShardHeaderSize;
  if (header_.token_count > body / header_.token_bytes || body != header_.token_count * header_.token_bytes)
    throw Error(
        str("token shard ", path, " is truncated or padded: the header says ", header_.token_count, " tokens (",
            header_.token_count * header_.token_bytes, " bytes) but the file holds ", body, " bytes after the header"),
        kPrepareHint);
  tokens_ = p + kShardHeaderSize;
  if (verify_tokens && crc32c(tokens_, body) != header_.tokens_crc32c)
    throw Error(str("token shard ", path, " is corrupt: the tokens' checksum does not match the header"), kPrepareHint);
}

std::int32_t ShardReader::token(std::uint64_t i) const {
  PICO_CHECK_LT(i, header_.token_count);
  if (header_.token_bytes == 2) return get<std::uint16_t>(tokens_, 2 * i);
  return static_cast<std::int32_t>(get<std::uint32_t>(tokens_, 4 * i));
}

void ShardReader::read(std::uint64_t begin, std::uint64_t n, std::int64_t* out) const {
  PICO_CHECK_LE(begin + n, header_.token_count);
  if (header_.token_bytes == 2) {
    for (std::uint64_t i = 0; i < n; ++i) out[i] = get<std::uint16_t>(tokens_, 2 * (begin + i));
  } else {
    for (std::uint64_t i = 0; i < n; ++i) out[i] = get<std::uint32_t>(tokens_, 4 * (begin + i));
  }
  // With data.verify = false nothing checked the tokens at start: an id outside the
  // vocabulary would reach the embedding as "index out of range" without a file name.
  const auto vocab = static_cast<std::int64_t>(header_.vocab_size);
  for (std::uint64_t i = 0; i < n; ++i)
    if (out[i] >= vocab)
      throw Error(str("token shard ", path(), " is corrupt: token ", begin + i, " is ", out[i],
                      ", outside the vocabulary of ", vocab),
                  "the file was damaged after `pico data prepare`; run with data.verify: true to check every shard at "
                  "start, and prepare the dataset again");
}

}  // namespace pico::data
