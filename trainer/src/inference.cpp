// A model loaded from a checkpoint: eval loss and generation (inference.h).
#include "pico/trainer/inference.h"

#include <ATen/CPUGeneratorImpl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "pico/checkpoints/store.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/trainer/config_io.h"

namespace pico::trainer {

std::vector<std::pair<std::string, torch::Tensor>> model_tensors(const checkpoints::CheckpointData& data) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto* e : data.in_group("/model")) out.emplace_back(e->name, e->tensor);
  if (out.empty())
    throw checkpoints::CorruptCheckpoint(str("checkpoint ", data.source, " has no tensors in /model"),
                                         "pass a checkpoint written by pico train");
  return out;
}

LoadedModel load_model(const std::string& path, const torch::Device& device) {
  LoadedModel m;
  m.path = checkpoints::resolve_checkpoint(path);
  const auto data = checkpoints::read_checkpoint(m.path, {{"/learning_dynamics", "/optim", "/pseudo_gradient"}});
  m.config = parse_run_config(data.config_yaml, str("checkpoint ", m.path, " (/config@yaml)"));
  m.step = data.attr_int("/train_state", "step");
  const torch::Tensor& tok = data.tensor("/tokenizer", "model");
  m.tokenizer_model.assign(reinterpret_cast<const char*>(tok.data_ptr()), static_cast<std::size_t>(tok.numel()));
  const std::string sha = data.attr_string("/tokenizer", "sha256");
  if (sha256_hex(m.tokenizer_model) != sha)
    throw checkpoints::CorruptCheckpoint(
        str("checkpoint ", m.path, ": the embedded tokenizer's SHA-256 does not match ", "/tokenizer@sha256"),
        "the file is damaged; use another checkpoint of the run");

  m.model = models::PicoDecoder(m.config.model, static_cast<std::uint64_t>(m.config.seed));
  const auto params = m.model->named_params();
  std::map<std::string, torch::Tensor> saved;
  for (auto& [name, t] : model_tensors(data)) saved[name] = t;
  for (const auto& [name, p] : params) {
    auto it = saved.find(name);
    if (it == saved.end())
      throw checkpoints::CorruptCheckpoint(str("checkpoint ", m.path, " has no /model/", name),
                                           "the checkpoint does not match its own config; it is damaged");
    if (it->second.sizes() != p.sizes() || it->second.scalar_type() != p.scalar_type())
      throw checkpoints::CorruptCheckpoint(str("checkpoint ", m.path, ": /model/", name, " has shape ",
                                               it->second.sizes(), ", its config gives ", p.sizes()),
                                           "the checkpoint does not match its own config; it is damaged");
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : params) p.copy_(saved[name]);
  }
  m.model->to(device);
  m.model->eval();
  return m;
}

data::Tokenizer load_tokenizer(const LoadedModel& m) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "pico-tokenizer-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw Error(str("cannot create a temporary directory for the tokenizer of ", m.path), "check $TMPDIR");
  const std::string file = tmpl + "/tokenizer.model";
  try {
    write_file_atomic(file, m.tokenizer_model, 0600);
    auto t = data::Tokenizer::load(file);
    std::filesystem::remove_all(tmpl);
    return t;
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
    throw;
  }
}

EvalResult evaluate_ids(models::PicoDecoder& model, const std::vector<std::int32_t>& ids, std::int64_t batch_size) {
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  if (n < 2)
    throw Error(str("the text has ", n, " token", n == 1 ? "" : "s", "; a next-token loss needs at least 2"),
                "pass a longer --text-file");
  PICO_CHECK_GE(batch_size, 1);
  torch::NoGradGuard no_grad;
  model->eval();
  const std::int64_t W = model->config().max_seq_len + 1;  // tokens per window
  const torch::Device dev = model->parameters().front().device();
  // Windows [i·W, min((i+1)·W, n)); the last one only if it holds at least 2 tokens.
  std::vector<std::pair<std::int64_t, std::int64_t>> windows;
  for (std::int64_t b = 0; b < n; b += W)
    if (std::min(W, n - b) >= 2) windows.emplace_back(b, std::min(W, n - b));
  EvalResult r;
  double sum = 0;
  auto run = [&](std::size_t first, std::size_t count, std::int64_t len) {
    auto x = torch::empty({static_cast<std::int64_t>(count), len}, torch::kLong);
    auto* p = x.data_ptr<std::int64_t>();
    for (std::size_t w = 0; w < count; ++w)
      for (std::int64_t j = 0; j < len; ++j) p[w * len + j] = ids[windows[first + w].first + j];
    x = x.to(dev);
    const auto inputs = x.narrow(1, 0, len - 1), targets = x.narrow(1, 1, len - 1);
    const auto logits = model->forward(inputs).to(torch::kFloat32);  // (B, len-1, V)
    const auto losses = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));  // (B·(len-1))
    sum += losses.to(torch::kFloat64).sum().item<double>();
    r.tokens += losses.numel();
  };
  std::size_t i = 0;
  while (i < windows.size()) {
    const std::int64_t len = windows[i].second;
    std::size_t count = 0;
    while (i + count < windows.size() && windows[i + count].second == len &&
           static_cast<std::int64_t>(count) < batch_size)
      ++count;
    run(i, count, len);
    i += count;
  }
  r.windows = static_cast<std::int64_t>(windows.size());
  r.loss = sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.loss);
  return r;
}

std::vector<std::int32_t> generate(models::PicoDecoder& model, const std::vector<std::int32_t>& prompt,
                                   const GenerateOptions& o, const std::function<void(std::int32_t)>& on_token) {
  if (prompt.empty()) throw Error("the prompt encodes to no tokens", "pass a non-empty --prompt");
  if (o.max_new_tokens < 1) throw Error(str("--max-new-tokens ", o.max_new_tokens), "generate at least 1 token");
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw Error(str("--temperature ", o.temperature), "use 0 (greedy) or a positive temperature such as 0.8");
  if (o.top_k < 0) throw Error(str("--top-k ", o.top_k), "use 0 (no cut) or a positive k");
  torch::NoGradGuard no_grad;
  model->eval();
  const std::int64_t L = model->config().max_seq_len;
  const std::int64_t V = model->config().vocab_size;
  const std::int64_t limit = o.vocab_limit > 0 ? std::min(o.vocab_limit, V) : V;
  const torch::Device dev = model->parameters().front().device();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  std::vector<std::int32_t> ctx = prompt, out;
  for (std::int64_t i = 0; i < o.max_new_tokens; ++i) {
    const std::int64_t n = std::min<std::int64_t>(L, static_cast<std::int64_t>(ctx.size()));
    auto x = torch::empty({1, n}, torch::kLong);
    auto* xp = x.data_ptr<std::int64_t>();
    for (std::int64_t j = 0; j < n; ++j)
      xp[j] = ctx[ctx.size() - static_cast<std::size_t>(n) + static_cast<std::size_t>(j)];
    auto logits = model->forward(x.to(dev)).select(1, n - 1).squeeze(0).to(torch::kCPU, torch::kFloat32);  // (V)
    logits = logits.narrow(0, 0, limit);
    std::int32_t next;
    if (o.temperature == 0) {
      next = static_cast<std::int32_t>(logits.argmax().item<std::int64_t>());
    } else {
      auto scaled = logits / o.temperature;
      if (o.top_k > 0 && o.top_k < limit) {
        const auto kth = std::get<0>(scaled.topk(o.top_k)).min();
        scaled = scaled.masked_fill(scaled < kth, -std::numeric_limits<float>::infinity());
      }
      const auto probs = torch::softmax(scaled.to(torch::kFloat64), 0);
      next = static_cast<std::int32_t>(torch::multinomial(probs, 1, /*replacement=*/false, gen).item<std::int64_t>());
    }
    ctx.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == o.eos_id) break;
  }
  return out;
}

}  // namespace pico::trainer
