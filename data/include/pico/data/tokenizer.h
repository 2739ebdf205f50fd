// pico/data/tokenizer.h — a sentencepiece BPE tokenizer: train, load, encode, decode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pico::data {

class Tokenizer {
 public:
  // Loads a sentencepiece .model file; throws pico::Error naming the path.
  static Tokenizer load(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<std::int32_t> encode(std::string_view text) const;  // no BOS/EOS added
  std::string decode(const std::vector<std::int32_t>& ids) const;
  // The text of one piece as it appears in decoded output (for streaming generation).
  std::string decode_piece(std::int32_t id) const;
  std::int32_t vocab_size() const;
  std::int32_t bos_id() const;
  std::int32_t eos_id() const;
  const std::string& path() const { return path_; }

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

struct TokenizerTrainOptions {
  std::int32_t vocab_size = 4096;
  std::int32_t num_threads = 2;
  std::int64_t max_sentences = 2'000'000;  // sentencepiece samples this many lines at most
};

// Trains a BPE model on `lines` and writes `<output_dir>/tokenizer.model`. Byte fallback is
// on, so every string round-trips. Returns the model's path.
std::string train_tokenizer(const std::vector<std::string>& lines, const std::string& output_dir,
                            const TokenizerTrainOptions& options);

}  // namespace pico::data
