// pico/data/sampler.h — deterministic batches from token shards.
//
// A contributor reads the concatenation of its assigned shards as one token stream, cut
// into windows of seq_len + 1 tokens at stride seq_len (inputs and shifted targets).
// Sample j of the run is window perm_e(j mod W) with epoch e = j div W and perm_e a
// pseudo-random permutation of [0, W) keyed by (seed, stream key, e): every window is seen
// once per epoch, and the batch at any step is a pure function of (seed, shards, step), so
// a resumed run reads exactly the tokens it would have read.
#pragma once

#include <cstdint>
#include <vector>

#include "pico/data/manifest.h"

namespace pico::data {

struct Batch {
  std::int64_t batch_size = 0;
  std::int64_t seq_len = 0;
  std::vector<std::int64_t> inputs;   // (B, T) row-major
  std::vector<std::int64_t> targets;  // (B, T) row-major: inputs shifted by one
};

// Several shards read as one stream.
class TokenStream {
 public:
  TokenStream() = default;
  explicit TokenStream(std::vector<const ShardReader*> shards);
  std::uint64_t size() const { return total_; }
  void read(std::uint64_t begin, std::uint64_t n, std::int64_t* out) const;

 private:
  std::vector<const ShardReader*> shards_;
  std::vector<std::uint64_t> starts_;  // prefix sums of shard sizes
  std::uint64_t total_ = 0;
};

// A pseudo-random permutation of [0, n) (a 4-round Feistel network with cycle walking).
class Permutation {
 public:
  Permutation(std::uint64_t n, std::uint64_t key);
  std::uint64_t operator()(std::uint64_t i) const;

 private:
  std::uint64_t n_, key_;
  int half_bits_;
};

class BatchSampler {
 public:
  // Throws pico::Error when the stream holds fewer than seq_len + 1 tokens.
  BatchSampler(TokenStream stream, std::int64_t seq_len, std::uint64_t seed, std::uint64_t stream_key);
  std::uint64_t num_windows() const { return windows_; }
  // Samples [first, first + batch_size) of the run's sample sequence.
  Batch batch(std::uint64_t first_sample, std::int64_t batch_size) const;
  // Window w in stream order, no shuffling (validation).
  Batch sequential(std::uint64_t first_window, std::int64_t batch_size) const;

 private:
  void fill(std::uint64_t window, std::int64_t row, Batch& b) const;
  TokenStream stream_;
  std::int64_t seq_len_;
  std::uint64_t seed_, key_, windows_;
};

// The train shards contributor `index` of `count` reads: shards i with i mod count == index,
// or, when there are fewer shards than contributors, shard index mod num_shards.
std::vector<std::size_t> assign_shards(std::size_t index, std::size_t count, std::size_t num_shards);

// Train stream for the given shard indices / the whole validation split.
TokenStream train_stream(const Dataset& ds, const std::vector<std::size_t>& shards);
TokenStream val_stream(const Dataset& ds);

}  // namespace pico::data
