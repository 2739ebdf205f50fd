// pico/data/prepare.h — `pico data prepare`: text files → tokenizer + shards + manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pico/data/manifest.h"

namespace pico::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  // UTF-8 text files
  std::string output_dir;
  std::int32_t vocab_size = 4096;     // for a new tokenizer
  std::string tokenizer;              // an existing sentencepiece model to use instead ("" = train one)
  std::int32_t num_shards = 8;        // train shards (contributors are assigned whole shards)
  double val_fraction = 0.05;         // share of line blocks held out for validation
  std::int32_t lines_per_block = 32;  // unit of the train/val split (keeps neighbouring lines together)
  std::uint64_t seed = 1234;          // chooses the held-out blocks
  std::int32_t threads = 0;           // 0 = all cores
  bool overwrite = false;             // replace a dataset already in output_dir (else: an error)
};

// Reads every input, holds out a validation split, trains (or loads) the tokenizer, encodes
// in parallel with a progress line, writes shards atomically and the manifest last.
// Throws pico::Error naming the input and a HINT on a missing/empty file or empty corpus,
// and when output_dir already holds a dataset (unless `overwrite`: then pico's own files
// there — manifest, tokenizer, shards — are replaced; nothing else in it is touched).
Manifest prepare_dataset(const PrepareOptions& options);

}  // namespace pico::data
