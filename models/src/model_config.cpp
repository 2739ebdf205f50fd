#include "pico/models/model_config.h"

#include "pico/common/error.h"

namespace pico::models {

namespace {
void require(bool ok, const char* key, auto value, const char* allowed) {
  if (!ok) throw Error(str("bad value for model.", key, ": ", value), str("model.", key, " must be ", allowed));
}
}  // namespace

void ModelConfig::validate() const {
  require(d_model > 0, "d_model", d_model, "> 0");
  require(n_layers > 0, "n_layers", n_layers, "> 0");
  require(vocab_size > 0, "vocab_size", vocab_size, "> 0");
  require(max_seq_len > 0, "max_seq_len", max_seq_len, "> 0");
  require(attention_n_heads > 0, "attention_n_heads", attention_n_heads, "> 0");
  require(attention_n_kv_heads > 0, "attention_n_kv_heads", attention_n_kv_heads, "> 0");
  require(activation_hidden_dim > 0, "activation_hidden_dim", activation_hidden_dim, "> 0");
  require(norm_eps > 0 && norm_eps < 1, "norm_eps", norm_eps, "in (0, 1)");
  require(position_emb_theta > 1, "position_emb_theta", position_emb_theta, "> 1");
  if (d_model % attention_n_heads != 0)
    throw Error(
        str("model.d_model (", d_model, ") is not divisible by model.attention_n_heads (", attention_n_heads, ")"),
        "choose attention_n_heads so that d_model / attention_n_heads is a whole head size");
  if (head_dim() % 2 != 0)
    throw Error(str("head size d_model / attention_n_heads = ", head_dim(), " is odd"),
                "rotary embeddings need an even head size");
  if (attention_n_heads % attention_n_kv_heads != 0)
    throw Error(str("model.attention_n_heads (", attention_n_heads,
                    ") is not a multiple of model.attention_n_kv_heads (", attention_n_kv_heads, ")"),
                "grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads");
}

std::int64_t ModelConfig::num_params() const {
  const std::int64_t kv = attention_n_kv_heads * head_dim();
  const std::int64_t attn = d_model * d_model * 2 + d_model * kv * 2;  // q, o + k, v
  const std::int64_t mlp = 3 * d_model * activation_hidden_dim;
  const std::int64_t norms = 2 * d_model;
  return vocab_size * d_model * 2 + n_layers * (attn + mlp + norms) + d_model;
}

double ModelConfig::train_flops_per_token(std::int64_t seq_len) const {
  const double kv = static_cast<double>(attention_n_kv_heads * head_dim());
  const double d = static_cast<double>(d_model);
  const double matmul_params =
      static_cast<double>(n_layers) * (2 * d * d + 2 * d * kv + 3 * d * activation_hidden_dim) +
      static_cast<double>(vocab_size) * d;  // output projection
  const double attention = 2.0 * static_cast<double>(n_layers) * static_cast<double>(seq_len) * d;
  return 6.0 * (matmul_params + attention);
}

}  // namespace pico::models
