// pico/models/model_config.h — the pico-decoder's shape, with pico-train's key names.
//
// No torch here, so data/ and the config loader can use it without LibTorch headers.
#pragma once

#include <cstdint>

namespace pico::models {

struct ModelConfig {
  std::int64_t d_model = 768;                 // residual width
  std::int64_t n_layers = 12;                 // decoder blocks
  std::int64_t vocab_size = 50304;            // must be >= the tokenizer's vocabulary
  std::int64_t max_seq_len = 2048;            // longest sequence (RoPE table size)
  std::int64_t attention_n_heads = 12;        // query heads
  std::int64_t attention_n_kv_heads = 4;      // key/value heads (grouped-query attention)
  std::int64_t activation_hidden_dim = 3072;  // SwiGLU hidden width
  double norm_eps = 1e-6;                     // RMSNorm epsilon
  double position_emb_theta = 10000.0;        // RoPE base

  // Throws pico::Error naming the model.* key, the value and what is allowed.
  void validate() const;
  std::int64_t head_dim() const { return d_model / attention_n_heads; }
  // Parameters, counted from the shapes (embedding and output projection both counted).
  std::int64_t num_params() const;
  // Training FLOPs per token at sequence length `seq_len`: 6 × (matmul parameters) plus
  // the attention score/value matmuls (6 × 2 × n_layers × seq_len × d_model, PaLM's
  // accounting with causal masking not discounted). Embedding lookups are not FLOPs.
  double train_flops_per_token(std::int64_t seq_len) const;
};

}  // namespace pico::models
