#include "pico/models/decoder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "pico/common/error.h"
#include "pico/common/strings.h"
#include "pico/models/ops.h"

namespace pico::models {

bool ActivationRecorder::wants(const std::string& module_name) const {
  for (const auto& s : suffixes)
    if (ends_with(module_name, s)) return true;
  return false;
}

namespace {

void record(ActivationRecorder* recorder, const std::string& name, const torch::Tensor& out) {
  if (recorder != nullptr && recorder->wants(name)) recorder->outputs[name] = out.detach();
}

torch::nn::Linear make_linear(std::int64_t in, std::int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

// The weights of several bias-free projections stacked into one (Σ out, in) matrix, so one
// matrix product computes them all (larger products run closer to the BLAS's peak). The
// parameters stay separate (checkpoint names and shapes are pico-train's); autograd splits
// the stacked weight's gradient back onto them.
torch::Tensor stacked_weight(std::initializer_list<torch::nn::Linear> projections) {
  std::vector<torch::Tensor> ws;
  for (const auto& p : projections) ws.push_back(p->weight);
  return torch::cat(ws, 0);
}

}  // namespace

RMSNormImpl::RMSNormImpl(std::int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return ops::rms_norm(x, weight, eps_);
}

AttentionImpl::AttentionImpl(const ModelConfig& cfg, std::string name)
    : n_heads_(cfg.attention_n_heads),
      n_kv_heads_(cfg.attention_n_kv_heads),
      head_dim_(cfg.head_dim()),
      name_(std::move(name)) {
  q_proj = register_module("q_proj", make_linear(cfg.d_model, n_heads_ * head_dim_));
  k_proj = register_module("k_proj", make_linear(cfg.d_model, n_kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", make_linear(cfg.d_model, n_kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", make_linear(n_heads_ * head_dim_, cfg.d_model));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     ActivationRecorder* recorder) {
  // One product for q, k and v: (B, T, C) → (B, T, (H + 2·Hkv)·hd) = [q | k | v].
  const auto qkv = ops::linear(x, stacked_weight({q_proj, k_proj, v_proj}));
  if (recorder != nullptr) {
    const std::int64_t q_width = n_heads_ * head_dim_, kv_width = n_kv_heads_ * head_dim_;
    record(recorder, name_ + ".q_proj", qkv.narrow(-1, 0, q_width).contiguous());
    record(recorder, name_ + ".k_proj", qkv.narrow(-1, q_width, kv_width).contiguous());
    record(recorder, name_ + ".v_proj", qkv.narrow(-1, q_width + kv_width, kv_width).contiguous());
  }
  const auto y = ops::causal_attention(qkv, cos, sin, n_heads_, n_kv_heads_);  // (B, T, H·hd)
  auto out = ops::linear(y, o_proj->weight);
  record(recorder, name_ + ".o_proj", out);
  return out;
}

SwiGLUImpl::SwiGLUImpl(const ModelConfig& cfg, std::string name) : name_(std::move(name)) {
  w_0 = register_module("w_0", make_linear(cfg.d_model, cfg.activation_hidden_dim));
  w_1 = register_module("w_1", make_linear(cfg.d_model, cfg.activation_hidden_dim));
  w_2 = register_module("w_2", make_linear(cfg.activation_hidden_dim, cfg.d_model));
}

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x, ActivationRecorder* recorder) {
  // w_0 and w_1 in one product: (B, T, C) → (B, T, 2·hidden) = [a | b].
  const auto ab = ops::linear(x, stacked_weight({w_0, w_1}));
  auto out = ops::linear(ops::swiglu(ab), w_2->weight);
  record(recorder, name_ + ".w_2", out);
  return out;
}

DecoderBlockImpl::DecoderBlockImpl(const ModelConfig& cfg, std::int64_t index) {
  const std::string prefix = "layers." + std::to_string(index);
  attention_norm = register_module("attention_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  attention = register_module("attention", Attention(cfg, prefix + ".attention"));
  swiglu_norm = register_module("swiglu_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  swiglu = register_module("swiglu", SwiGLU(cfg, prefix + ".swiglu"));
}

torch::Tensor DecoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        ActivationRecorder* recorder) {
  auto h = x + attention->forward(attention_norm->forward(x), cos, sin, recorder);
  return h + swiglu->forward(swiglu_norm->forward(h), recorder);
}

PicoDecoderImpl::PicoDecoderImpl(const ModelConfig& cfg, std::uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  embedding_proj = register_module("embedding_proj", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) layers->push_back(DecoderBlock(cfg, i));
  output_norm = register_module("output_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  de_embedding_proj = register_module("de_embedding_proj", make_linear(cfg.d_model, cfg.vocab_size));

  // RoPE tables in float64, rounded once to float32: the same on every machine.
  const auto hd = cfg.head_dim();
  auto inv_freq = torch::pow(cfg.position_emb_theta,
                             -torch::arange(0, hd, 2, torch::kFloat64) / static_cast<double>(hd));  // (hd/2)
  auto t = torch::arange(cfg.max_seq_len, torch::kFloat64);
  auto freqs = torch::outer(t, inv_freq);     // (T, hd/2)
  auto emb = torch::cat({freqs, freqs}, -1);  // (T, hd)
  rope_cos_ = emb.cos().to(torch::kFloat32);
  rope_sin_ = emb.sin().to(torch::kFloat32);
  init_weights(seed);
}

void PicoDecoderImpl::init_weights(std::uint64_t seed) {
  // GPT-2 style: N(0, 0.02) everywhere; residual output projections scaled by
  // 1/sqrt(2 n_layers) so the residual stream's variance does not grow with depth.
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std_base = 0.02;
  const double std_resid = std_base / std::sqrt(2.0 * static_cast<double>(cfg_.n_layers));
  for (auto& [name, p] : named_params()) {
    if (ends_with(name, "norm.weight")) continue;  // RMSNorm gains stay 1
    const bool resid = ends_with(name, "attention.o_proj.weight") || ends_with(name, "swiglu.w_2.weight");
    p.normal_(0.0, resid ? std_resid : std_base, gen);
  }
}

std::pair<torch::Tensor, torch::Tensor> PicoDecoderImpl::rope_tables(std::int64_t seq_len, const torch::Device& device,
                                                                     torch::ScalarType dtype) {
  if (!rope_cos_dev_.defined() || rope_cos_dev_.device() != device || rope_cos_dev_.scalar_type() != dtype) {
    rope_cos_dev_ = rope_cos_.to(device, dtype);
    rope_sin_dev_ = rope_sin_.to(device, dtype);
  }
  return {rope_cos_dev_.narrow(0, 0, seq_len), rope_sin_dev_.narrow(0, 0, seq_len)};
}

torch::Tensor PicoDecoderImpl::hidden(const torch::Tensor& tokens, ActivationRecorder* recorder) {
  PICO_CHECK_EQ(tokens.dim(), 2, "tokens must be (B, T)");
  const auto T = tokens.size(1);
  if (T > cfg_.max_seq_len)
    throw Error(str("sequence of ", T, " tokens is longer than model.max_seq_len = ", cfg_.max_seq_len),
                "shorten the input or train a model with a larger max_seq_len");
  auto x = embedding_proj->forward(tokens);  // (B, T, C)
  auto [cos, sin] = rope_tables(T, x.device(), x.scalar_type());
  for (const auto& layer : *layers) x = layer->as<DecoderBlock>()->forward(x, cos, sin, recorder);
  return output_norm->forward(x);  // (B, T, C)
}

torch::Tensor PicoDecoderImpl::forward(const torch::Tensor& tokens, ActivationRecorder* recorder) {
  auto logits = ops::linear(hidden(tokens, recorder), de_embedding_proj->weight);  // (B, T, V)
  record(recorder, "de_embedding_proj", logits);
  return logits;
}

torch::Tensor PicoDecoderImpl::loss(const torch::Tensor& inputs, const torch::Tensor& targets,
                                    ActivationRecorder* recorder) {
  if (recorder != nullptr && recorder->wants("de_embedding_proj")) {  // the logits are wanted: make them
    auto logits = forward(inputs, recorder);
    logits = logits.reshape({-1, logits.size(-1)});
    if (logits.scalar_type() != torch::kFloat64) logits = logits.to(torch::kFloat32);
    return torch::nn::functional::cross_entropy(logits, targets.reshape({-1}));
  }
  // The output projection and the cross-entropy in one op that never holds all the logits.
  const auto h = hidden(inputs, recorder);
  return ops::linear_cross_entropy(h.reshape({-1, h.size(-1)}), de_embedding_proj->weight, targets.reshape({-1}));
}

std::vector<std::pair<std::string, torch::Tensor>> PicoDecoderImpl::named_params() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<std::string> PicoDecoderImpl::modules_matching(const std::vector<std::string>& suffixes) const {
  std::vector<std::string> out;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    for (const auto& s : suffixes) {
      if (ends_with(item.key(), s)) {
        out.push_back(item.key());
        break;
      }
    }
  }
  return out;
}

}  // namespace pico::models
