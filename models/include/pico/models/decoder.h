// pico/models/decoder.h — the pico-decoder: a LLaMA-style decoder-only transformer.
//
//   tokens (B, T) int64
//   → embedding_proj                                  (B, T, C)
//   → n_layers × [ x += attention(attention_norm(x))  RMSNorm → GQA with RoPE
//                  x += swiglu(swiglu_norm(x)) ]      RMSNorm → SwiGLU MLP
//   → output_norm → de_embedding_proj                 (B, T, V) logits
//
// Module names follow pico-train, so parameter names are e.g.
// "layers.3.attention.v_proj.weight" and learning-dynamics suffixes "attention.v_proj",
// "attention.o_proj", "swiglu.w_2" match. Rotary embeddings use the half-split layout of
// Hugging Face Llama (rotate_half), so an HF export copies q/k weights unchanged.
//
// Single-device model code: no communication, no optimizer, no data. It runs wherever its
// parameters are (cpu or cuda).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "pico/models/model_config.h"

namespace pico::models {

// Records the full outputs (B, T, out) of the modules whose names end in one of
// `suffixes`, keyed by module name ("layers.0.attention.v_proj"), during one forward.
struct ActivationRecorder {
  std::vector<std::string> suffixes;
  std::map<std::string, torch::Tensor> outputs;
  bool wants(const std::string& module_name) const;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(std::int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // (..., C) → (..., C)
  torch::Tensor weight;                           // (C)

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& cfg, std::string name);
  // x (B, T, C); cos/sin (T, head_dim) → (B, T, C)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        ActivationRecorder* recorder);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  std::int64_t n_heads_, n_kv_heads_, head_dim_;
  std::string name_;
};
TORCH_MODULE(Attention);

class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(const ModelConfig& cfg, std::string name);
  // w_2(silu(w_0 x) * w_1 x): (B, T, C) → (B, T, C)
  torch::Tensor forward(const torch::Tensor& x, ActivationRecorder* recorder);
  torch::nn::Linear w_0{nullptr}, w_1{nullptr}, w_2{nullptr};

 private:
  std::string name_;
};
TORCH_MODULE(SwiGLU);

class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const ModelConfig& cfg, std::int64_t index);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        ActivationRecorder* recorder);
  RMSNorm attention_norm{nullptr};
  Attention attention{nullptr};
  RMSNorm swiglu_norm{nullptr};
  SwiGLU swiglu{nullptr};
};
TORCH_MODULE(DecoderBlock);

class PicoDecoderImpl : public torch::nn::Module {
 public:
  // Parameters are initialized from `seed` on the CPU (identical on every machine), then
  // the caller moves the module to its device.
  explicit PicoDecoderImpl(const ModelConfig& cfg, std::uint64_t seed = 0);

  // tokens (B, T) int64, T <= max_seq_len → logits (B, T, V) in the parameters' dtype.
  torch::Tensor forward(const torch::Tensor& tokens, ActivationRecorder* recorder = nullptr);
  // The final hidden states, after output_norm: tokens (B, T) → (B, T, C).
  torch::Tensor hidden(const torch::Tensor& tokens, ActivationRecorder* recorder = nullptr);
  // Mean next-token cross-entropy: inputs (B, T), targets (B, T) → scalar (float32; float64
  // for a float64 model).
  torch::Tensor loss(const torch::Tensor& inputs, const torch::Tensor& targets, ActivationRecorder* recorder = nullptr);

  const ModelConfig& config() const { return cfg_; }
  // Parameters by name, in registration order (the order every contributor uses).
  std::vector<std::pair<std::string, torch::Tensor>> named_params() const;
  // Names of the modules whose names end in one of `suffixes` (e.g. "layers.0.swiglu.w_2").
  std::vector<std::string> modules_matching(const std::vector<std::string>& suffixes) const;

  torch::nn::Embedding embedding_proj{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm output_norm{nullptr};
  torch::nn::Linear de_embedding_proj{nullptr};

 private:
  void init_weights(std::uint64_t seed);
  std::pair<torch::Tensor, torch::Tensor> rope_tables(std::int64_t seq_len, const torch::Device& device,
                                                      torch::ScalarType dtype);
  ModelConfig cfg_;
  torch::Tensor rope_cos_, rope_sin_;          // (max_seq_len, head_dim), float32 on CPU
  torch::Tensor rope_cos_dev_, rope_sin_dev_;  // cached copies on the parameters' device/dtype
};
TORCH_MODULE(PicoDecoder);

}  // namespace pico::models
