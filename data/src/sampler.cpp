#include "pico/data/sampler.h"

#include <algorithm>

#include "pico/common/error.h"
#include "pico/common/hash.h"

namespace pico::data {

TokenStream::TokenStream(std::vector<const ShardReader*> shards) : shards_(std::move(shards)) {
  for (const auto* s : shards_) {
    starts_.push_back(total_);
    total_ += s->size();
  }
}

void TokenStream::read(std::uint64_t begin, std::uint64_t n, std::int64_t* out) const {
  PICO_CHECK_LE(begin + n, total_);
  auto it = std::upper_bound(starts_.begin(), starts_.end(), begin);
  std::size_t i = static_cast<std::size_t>(it - starts_.begin()) - 1;
  while (n > 0) {
    const std::uint64_t local = begin - starts_[i];
    const std::uint64_t take = std::min<std::uint64_t>(n, shards_[i]->size() - local);
    shards_[i]->read(local, take, out);
    out += take;
    begin += take;
    n -= take;
    ++i;
  }
}

Permutation::Permutation(std::uint64_t n, std::uint64_t key) : n_(n), key_(key) {
  int bits = 2;
  while ((std::uint64_t{1} << bits) < n) bits += 2;
  half_bits_ = bits / 2;
}

std::uint64_t Permutation::operator()(std::uint64_t i) const {
  PICO_CHECK_LT(i, n_);
  const std::uint64_t mask = (std::uint64_t{1} << half_bits_) - 1;
  std::uint64_t x = i;
  do {  // cycle-walk: the Feistel domain is at most 4n, so this ends in < 4 tries on average
    std::uint64_t l = x >> half_bits_, r = x & mask;
    for (std::uint64_t round = 0; round < 4; ++round) {
      const std::uint64_t f = mix64(key_, round, r) & mask;
      const std::uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    x = (l << half_bits_) | r;
  } while (x >= n_);
  return x;
}

BatchSampler::BatchSampler(TokenStream stream, std::int64_t seq_len, std::uint64_t seed, std::uint64_t stream_key)
    : stream_(std::move(stream)), seq_len_(seq_len), seed_(seed), key_(stream_key) {
  PICO_CHECK_GT(seq_len, 0);
  if (stream_.size() < static_cast<std::uint64_t>(seq_len) + 1)
    throw Error(str("the data holds ", stream_.size(), " tokens, fewer than one sequence of ", seq_len + 1),
                "use a smaller model.max_seq_len or prepare more text");
  windows_ = (stream_.size() - 1) / static_cast<std::uint64_t>(seq_len);
}

void BatchSampler::fill(std::uint64_t window, std::int64_t row, Batch& b) const {
  std::vector<std::int64_t> buf(static_cast<std::size_t>(seq_len_) + 1);
  stream_.read(window * static_cast<std::uint64_t>(seq_len_), buf.size(), buf.data());
  std::copy(buf.begin(), buf.end() - 1, b.inputs.begin() + row * seq_len_);
  std::copy(buf.begin() + 1, buf.end(), b.targets.begin() + row * seq_len_);
}

Batch BatchSampler::batch(std::uint64_t first_sample, std::int64_t batch_size) const {
  Batch b{batch_size, seq_len_, std::vector<std::int64_t>(batch_size * seq_len_),
          std::vector<std::int64_t>(batch_size * seq_len_)};
  for (std::int64_t r = 0; r < batch_size; ++r) {
    const std::uint64_t j = first_sample + static_cast<std::uint64_t>(r);
    const std::uint64_t epoch = j / windows_;
    const Permutation perm(windows_, mix64(seed_, key_, epoch));
    fill(perm(j % windows_), r, b);
  }
  return b;
}

Batch BatchSampler::sequential(std::uint64_t first_window, std::int64_t batch_size) const {
  Batch b{batch_size, seq_len_, std::vector<std::int64_t>(batch_size * seq_len_),
          std::vector<std::int64_t>(batch_size * seq_len_)};
  for (std::int64_t r = 0; r < batch_size; ++r) fill((first_window + static_cast<std::uint64_t>(r)) % windows_, r, b);
  return b;
}

std::vector<std::size_t> assign_shards(std::size_t index, std::size_t count, std::size_t num_shards) {
  PICO_CHECK_LT(index, count);
  PICO_CHECK_GT(num_shards, 0u);
  std::vector<std::size_t> out;
  if (num_shards < count) return {index % num_shards};
  for (std::size_t i = index; i < num_shards; i += count) out.push_back(i);
  return out;
}

TokenStream train_stream(const Dataset& ds, const std::vector<std::size_t>& shards) {
  std::vector<const ShardReader*> readers;
  for (auto i : shards) readers.push_back(&ds.train_shard(i));
  return TokenStream(std::move(readers));
}

TokenStream val_stream(const Dataset& ds) {
  std::vector<const ShardReader*> readers;
  for (std::size_t i = 0; i < ds.num_val_shards(); ++i) readers.push_back(&ds.val_shard(i));
  return TokenStream(std::move(readers));
}

}  // namespace pico::data
