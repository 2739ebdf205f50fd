// pico/trainer/inference.h — a model loaded from a checkpoint: eval loss and generation.
//
// Backs `pico eval` and `pico generate` (and the model half of `pico export`). A checkpoint
// stands alone: its /config gives the model shape, /model the weights and /tokenizer the
// sentencepiece model, so no dataset directory is needed.
//
// What this is not: there is no KV cache — generation re-runs the forward pass over the
// (at most max_seq_len) context for every token, fine for the small models pico trains.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pico/checkpoints/checkpoint.h"
#include "pico/data/tokenizer.h"
#include "pico/models/decoder.h"
#include "pico/trainer/run_config.h"

namespace pico::trainer {

struct LoadedModel {
  std::string path;  // the step_*.h5 file actually read
  std::int64_t step = 0;
  RunConfig config;                    // the run's resolved config, from /config
  models::PicoDecoder model{nullptr};  // in eval mode, on `device`
  std::string tokenizer_model;         // the embedded sentencepiece model's bytes
};

// Reads `path` (a step_*.h5, or a run/checkpoints directory: its newest checkpoint) and
// builds the model from its config and /model tensors. Throws pico::Error naming the file
// with a HINT (CorruptCheckpoint for a damaged one).
LoadedModel load_model(const std::string& path, const torch::Device& device = torch::kCPU);

// The checkpoint's embedded tokenizer (written to a private temporary file for
// sentencepiece, which loads from a path, and removed again).
data::Tokenizer load_tokenizer(const LoadedModel& m);

// The model's tensors by pico parameter name, from a checkpoint's /model group.
std::vector<std::pair<std::string, torch::Tensor>> model_tensors(const checkpoints::CheckpointData& data);

struct EvalResult {
  std::int64_t tokens = 0;  // predicted tokens (the loss is their mean)
  double loss = 0;          // mean next-token cross-entropy, nats
  double ppl = 0;           // exp(loss)
  std::int64_t windows = 0;
};

// Mean next-token loss over `ids`, cut into consecutive, non-overlapping windows of
// max_seq_len + 1 tokens (a last shorter window of >= 2 tokens included): each window of
// n tokens predicts its last n - 1 from the ones before. Averaged over every predicted
// token (summed in float64). `batch_size` windows run per forward. Throws pico::Error
// when `ids` has fewer than 2 tokens.
EvalResult evaluate_ids(models::PicoDecoder& model, const std::vector<std::int32_t>& ids, std::int64_t batch_size = 8);

struct GenerateOptions {
  std::int64_t max_new_tokens = 100;
  double temperature = 0.8;      // 0 = greedy (argmax)
  std::int64_t top_k = 0;        // sample from the k most likely tokens only; 0 = all
  std::uint64_t seed = 0;        // sampling is a pure function of (model, prompt, options)
  std::int32_t eos_id = -1;      // stop after generating it (-1 = never)
  std::int64_t vocab_limit = 0;  // choose only ids below this (the tokenizer's vocabulary); 0 = all
};

// Appends up to max_new_tokens tokens to `prompt` (at least one token), calling
// on_token(id) as each is chosen. The context is the last max_seq_len tokens. Returns the
// new tokens. Throws pico::Error for an empty prompt or bad options.
std::vector<std::int32_t> generate(models::PicoDecoder& model, const std::vector<std::int32_t>& prompt,
                                   const GenerateOptions& options,
                                   const std::function<void(std::int32_t)>& on_token = {});

}  // namespace pico::trainer
