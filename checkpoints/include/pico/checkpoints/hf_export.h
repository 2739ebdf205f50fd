// pico/checkpoints/hf_export.h — Hugging Face export: safetensors + Llama config.json.
//
// `pico export --format hf` writes DIR/model.safetensors (Llama parameter names),
// DIR/config.json (LlamaForCausalLM fields), DIR/tokenizer.model (the sentencepiece model
// embedded in the checkpoint), DIR/tokenizer_config.json and DIR/generation_config.json.
// The mapping (docs/CHECKPOINT_FORMAT.md) is a pure renaming: pico's rotary embedding uses
// the half-split (rotate_half) layout of Hugging Face Llama, so q/k weights copy unchanged.
//
// What this is not: it knows parameter *names* (the pico-decoder's public naming), not the
// model type; the caller fills HfLlamaConfig from its model config.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pico::checkpoints {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct HfLlamaConfig {
  std::int64_t hidden_size = 0;              // model.d_model
  std::int64_t intermediate_size = 0;        // model.activation_hidden_dim
  std::int64_t num_hidden_layers = 0;        // model.n_layers
  std::int64_t num_attention_heads = 0;      // model.attention_n_heads
  std::int64_t num_key_value_heads = 0;      // model.attention_n_kv_heads
  std::int64_t max_position_embeddings = 0;  // model.max_seq_len
  std::int64_t vocab_size = 0;               // model.vocab_size (embedding rows)
  double rms_norm_eps = 1e-6;                // model.norm_eps
  double rope_theta = 10000;                 // model.position_emb_theta
  std::int64_t bos_token_id = -1;            // -1 = the tokenizer has none
  std::int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";
};

// "layers.3.attention.q_proj.weight" → "model.layers.3.self_attn.q_proj.weight", etc.
// Throws pico::Error naming the parameter when it has no Llama counterpart.
std::string hf_llama_name(const std::string& pico_name);
// The inverse (for tests and for importing an export back).
std::string pico_name_from_hf(const std::string& hf_name);

// config.json's content for LlamaForCausalLM.
std::string hf_llama_config_json(const HfLlamaConfig& cfg);

// Writes a .safetensors file (8-byte little-endian header length, JSON header, raw
// little-endian data) crash-safely (temporary name, fsync, rename). Tensors keep their
// dtype; `metadata` goes to the header's "__metadata__".
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Reads one back; throws pico::Error naming the file on a malformed header or bad offsets.
NamedTensors read_safetensors(const std::string& path);

struct HfExportResult {
  std::vector<std::string> files;  // written, in order
  std::uint64_t safetensors_bytes = 0;
  std::int64_t num_params = 0;
};

// Writes the export into `dir` (created if needed). `params` are the model's tensors by pico
// name; every one must map (hf_llama_name) and the result must hold every tensor a
// LlamaForCausalLM of `cfg` expects, with the expected shape (checked, pico::Error if not).
HfExportResult export_hf_llama(const std::string& dir, const NamedTensors& params, const HfLlamaConfig& cfg,
                               const std::string& tokenizer_model_bytes);

}  // namespace pico::checkpoints
