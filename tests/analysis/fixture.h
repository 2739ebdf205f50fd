// tests/analysis/fixture.h — synthetic runs in the checkpoint layout (docs/CHECKPOINT_FORMAT.md)
// written with the checkpoints library: a tiny pico-decoder's /model, /learning_dynamics
// for both splits, /optim/inner, and for DiLoCo runs /optim/outer/theta_g, momentum and
// /pseudo_gradient, one directory per contributor.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"

namespace pico::test {

struct TinyModel {
  std::int64_t n_layers = 2, d_model = 32, n_heads = 4, n_kv_heads = 2, hidden = 64, vocab = 50;
  std::int64_t ld_batch = 48;    // learning-dynamics samples (pwcca needs more than neurons)
  std::int64_t inner_steps = 0;  // outer.inner_steps; 0 = not a DiLoCo run
  bool val = true;               // the dataset has a validation split
  std::vector<std::string> suffixes = {"attention.v_proj", "attention.o_proj", "swiglu.w_2"};
  std::int64_t head_dim() const { return d_model / n_heads; }
};

inline std::string tiny_config_yaml(const TinyModel& m, const std::string& run_name) {
  std::string y =
      str("model:\n  d_model: ", m.d_model, "\n  n_layers: ", m.n_layers, "\n  vocab_size: ", m.vocab,
          "\n  max_seq_len: 16\n  attention_n_heads: ", m.n_heads, "\n  attention_n_kv_heads: ", m.n_kv_heads,
          "\n  activation_hidden_dim: ", m.hidden, "\ncheckpointing:\n  run_name: \"", run_name, "\"\n");
  if (m.inner_steps > 0) y += str("outer:\n  inner_steps: ", m.inner_steps, "\n");
  return y;
}

// The pico-decoder's parameters, in model order, with their shapes: (out, in) for linear layers.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> tiny_param_shapes(const TinyModel& m) {
  const std::int64_t C = m.d_model, kv = m.n_kv_heads * m.head_dim();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> p = {{"embedding_proj.weight", {m.vocab, C}}};
  for (std::int64_t l = 0; l < m.n_layers; ++l) {
    const std::string L = str("layers.", l, ".");
    p.push_back({L + "attention_norm.weight", {C}});
    p.push_back({L + "attention.q_proj.weight", {C, C}});
    p.push_back({L + "attention.k_proj.weight", {kv, C}});
    p.push_back({L + "attention.v_proj.weight", {kv, C}});
    p.push_back({L + "attention.o_proj.weight", {C, C}});
    p.push_back({L + "swiglu_norm.weight", {C}});
    p.push_back({L + "swiglu.w_0.weight", {m.hidden, C}});
    p.push_back({L + "swiglu.w_1.weight", {m.hidden, C}});
    p.push_back({L + "swiglu.w_2.weight", {C, m.hidden}});
  }
  p.push_back({"output_norm.weight", {C}});
  p.push_back({"de_embedding_proj.weight", {m.vocab, C}});
  return p;
}

inline std::map<std::string, torch::Tensor> tiny_params(const TinyModel& m, std::uint64_t seed) {
  torch::manual_seed(seed);
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, shape] : tiny_param_shapes(m)) out[name] = torch::randn(shape) * 0.2;
  return out;
}

// One contributor's checkpoint at `step`: `params` is its /model; learning dynamics are
// random but drift smoothly with the step (activations have non-zero means).
inline checkpoints::CheckpointData tiny_checkpoint(const TinyModel& m, const std::string& run_name, std::int64_t step,
                                                   std::int64_t round,
                                                   const std::map<std::string, torch::Tensor>& params,
                                                   std::int64_t contributor = 0) {
  checkpoints::CheckpointData d;
  d.config_yaml = tiny_config_yaml(m, run_name);
  d.set_attr("/train_state", "step", step);
  d.set_attr("/train_state", "round", round);
  d.set_attr("/train_state", "contributor_index", contributor);
  d.add("/train_state", "shards", torch::tensor(std::vector<std::int64_t>{0}, torch::kLong));
  d.add("/tokenizer", "model", torch::zeros({16}, torch::kUInt8));
  for (const auto& [name, shape] : tiny_param_shapes(m)) d.add("/model", name, params.at(name));
  for (const auto& [name, shape] : tiny_param_shapes(m)) {
    d.add("/optim/inner/" + name, "exp_avg", torch::zeros(shape));
    d.add("/optim/inner/" + name, "exp_avg_sq", torch::zeros(shape));
  }
  d.add_group("/optim/outer");
  d.add_group("/pseudo_gradient");
  std::string suffixes;
  for (const auto& s : m.suffixes) suffixes += (suffixes.empty() ? "" : ",") + s;
  d.set_attr("/learning_dynamics", "layer_suffixes", suffixes);
  d.set_attr("/learning_dynamics", "batch_size", m.ld_batch);
  d.set_attr("/learning_dynamics", "step", step);
  torch::manual_seed(1000 + static_cast<std::uint64_t>(contributor));
  for (const std::string split : {"train", "val"}) {
    const std::string g = "/learning_dynamics/" + split;
    if (split == "val" && !m.val) {
      d.set_attr(g, "num_samples", std::int64_t{0});
      continue;
    }
    d.set_attr(g, "num_samples", m.ld_batch);
    d.set_attr(g, "sequence_length", std::int64_t{16});
    d.set_attr(g, "loss", 3.0);
    d.add(g, "input_ids", torch::zeros({m.ld_batch, 16}, torch::kLong));
    for (std::int64_t l = 0; l < m.n_layers; ++l)
      for (const auto& s : m.suffixes) {
        const std::string mod = str("layers.", l, ".", s);
        const torch::Tensor w = params.at(mod + ".weight");
        const std::int64_t out = w.size(0);
        d.add(g + "/weights", mod, w);
        const torch::Tensor g0 = torch::randn(w.sizes()), g1 = torch::randn(w.sizes());
        d.add(g + "/gradients", mod, g0 + 0.1 * static_cast<double>(step) * g1);
        const torch::Tensor a0 = torch::randn({m.ld_batch, out}) + torch::linspace(-2, 2, out);
        const torch::Tensor a1 = torch::randn({m.ld_batch, out});
        d.add(g + "/activations", mod, a0 + 0.05 * static_cast<double>(step) * a1);
      }
  }
  return d;
}

// A single-contributor run: RUN/checkpoints/step_*.h5 at `steps`, weights changing with the step.
inline void write_tiny_run(const std::string& run_dir, const TinyModel& m, const std::vector<std::int64_t>& steps) {
  make_dirs(run_dir + "/checkpoints");
  checkpoints::CheckpointDir dir(run_dir + "/checkpoints", 1000);
  const auto base = tiny_params(m, 1);
  const auto dirn = tiny_params(m, 2);
  for (auto s : steps) {
    std::map<std::string, torch::Tensor> p;
    for (const auto& [k, v] : base) p[k] = v + 0.02 * static_cast<double>(s) * dirn.at(k);
    dir.save(s, tiny_checkpoint(m, "tiny", s, 0, p));
  }
}

}  // namespace pico::test
