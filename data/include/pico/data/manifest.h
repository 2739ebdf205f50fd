// pico/data/manifest.h — a prepared dataset: tokenizer + shards + manifest.json.
//
// DIR/manifest.json names the tokenizer (with its SHA-256), every train and validation
// shard (token count, CRC-32C, SHA-256) and a dataset hash over all of it. Contributors of
// one run must have the same dataset hash.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pico/data/shard.h"

namespace pico::data {

struct ShardEntry {
  std::string file;  // relative to the dataset directory
  std::uint64_t tokens = 0;
  std::uint32_t crc32c = 0;
  std::string sha256;
};

struct Manifest {
  static constexpr int kVersion = 1;
  int version = kVersion;
  std::string tokenizer_file = "tokenizer.model";
  std::string tokenizer_sha256;
  std::int32_t vocab_size = 0;
  std::vector<ShardEntry> train;
  std::vector<ShardEntry> val;
  std::vector<std::string> sources;  // input files, for the record
  double val_fraction = 0;
  std::uint64_t seed = 0;
  std::string dataset_hash;

  std::uint64_t train_tokens() const;
  std::uint64_t val_tokens() const;
  // SHA-256 over the tokenizer hash and every shard's name, size and SHA-256.
  std::string compute_dataset_hash() const;
  void save(const std::string& dir) const;       // atomic write of DIR/manifest.json
  static Manifest load(const std::string& dir);  // throws pico::Error naming the file
};

// An opened dataset: manifest checked against its tokenizer and shards.
class Dataset {
 public:
  // Opens DIR: the manifest, the tokenizer (its SHA-256 must match the manifest), and every
  // shard (header, size and, with `verify`, checksums). Throws pico::Error with a HINT.
  static std::shared_ptr<Dataset> open(const std::string& dir, bool verify = true);

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  std::string tokenizer_path() const { return dir_ + "/" + manifest_.tokenizer_file; }
  std::size_t num_train_shards() const { return train_.size(); }
  std::size_t num_val_shards() const { return val_.size(); }
  const ShardReader& train_shard(std::size_t i) const { return *train_.at(i); }
  const ShardReader& val_shard(std::size_t i) const { return *val_.at(i); }

 private:
  std::string dir_;
  Manifest manifest_;
  std::vector<std::unique_ptr<ShardReader>> train_, val_;
};

}  // namespace pico::data
