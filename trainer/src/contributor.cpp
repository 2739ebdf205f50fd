#include "pico/trainer/contributor.h"

#include <cmath>

#include "pico/common/error.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"

namespace pico::trainer {

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      throw Error(str("device '", name, "' requested but this LibTorch sees no CUDA GPU"),
                  "use device: cpu (or auto); for a GPU, build pico against a CUDA LibTorch: PICO_CMAKE_ARGS="
                  "\"-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')\" "
                  "scripts/setup with a CUDA build of PyTorch installed");
    return torch::Device(name);
  }
  throw Error(str("unknown device '", name, "'"), "use auto, cpu, cuda or cuda:N");
}

torch::Tensor ids_to_tensor(const std::vector<std::int64_t>& ids, std::int64_t rows, std::int64_t cols,
                            const torch::Device& device) {
  PICO_CHECK_EQ(static_cast<std::int64_t>(ids.size()), rows * cols);
  auto t = torch::empty({rows, cols}, torch::kLong);
  std::memcpy(t.data_ptr<std::int64_t>(), ids.data(), ids.size() * sizeof(std::int64_t));
  return device.is_cpu() ? t : t.to(device, /*non_blocking=*/true);
}

Contributor::Contributor(const RunConfig& cfg, std::shared_ptr<const data::Dataset> dataset, torch::Device device,
                         std::size_t index, std::size_t count)
    : cfg_(cfg), dataset_(std::move(dataset)), device_(device), index_(index) {
  const auto& manifest = dataset_->manifest();
  if (cfg_.model.vocab_size < manifest.vocab_size)
    throw Error(str("model.vocab_size (", cfg_.model.vocab_size, ") is smaller than the tokenizer's vocabulary (",
                    manifest.vocab_size, ") of ", dataset_->dir()),
                str("set model.vocab_size to at least ", manifest.vocab_size));
  // With same_data_for_all_contributors everyone reads what a lone contributor would.
  const bool same = cfg_.data.same_data_for_all_contributors;
  const std::size_t data_index = same ? 0 : index, data_count = same ? 1 : count;
  shards_ = data::assign_shards(data_index, data_count, dataset_->num_train_shards());
  // Every contributor starts from the same weights (seed), but reads its own sample order.
  model_ = models::PicoDecoder(cfg_.model, static_cast<std::uint64_t>(cfg_.seed));
  model_->to(device_);
  optimizer_ = std::make_unique<optim::AdamW>(model_->named_params(), cfg_.training.optimization.adamw);
  sampler_ = std::make_unique<data::BatchSampler>(data::train_stream(*dataset_, shards_), cfg_.model.max_seq_len,
                                                  static_cast<std::uint64_t>(cfg_.seed), mix64(data_index, data_count));
  if (dataset_->num_val_shards() > 0)
    val_sampler_ = std::make_unique<data::BatchSampler>(data::val_stream(*dataset_), cfg_.model.max_seq_len,
                                                        static_cast<std::uint64_t>(cfg_.seed), 0);
  for (const auto& [name, p] : model_->named_params()) numel_ += p.numel();
  const auto& o = cfg_.training.optimization;
  schedule_ = {optim::parse_lr_schedule(o.lr_scheduler), o.lr, o.lr_warmup_steps, cfg_.training.max_steps,
               o.min_lr_ratio};
}

void Contributor::grads_to(float* flat) const {
  torch::NoGradGuard no_grad;
  std::int64_t off = 0;
  for (const auto& [name, p] : optimizer_->params()) {
    const auto n = p.numel();
    auto dst = torch::from_blob(flat + off, {n}, torch::kFloat32);
    if (p.grad().defined())
      dst.copy_(p.grad().reshape({n}));
    else
      dst.zero_();
    off += n;
  }
}

void Contributor::grads_from(const float* flat, float scale) {
  torch::NoGradGuard no_grad;
  std::int64_t off = 0;
  for (auto& [name, p] : optimizer_->params()) {
    const auto n = p.numel();
    auto src = torch::from_blob(const_cast<float*>(flat + off), p.sizes(), torch::kFloat32);
    auto& g = p.mutable_grad();
    if (!g.defined()) g = torch::zeros_like(p);
    g.copy_(scale == 1.0f ? src : src * scale);
    off += n;
  }
}

double Contributor::forward_backward(std::int64_t step) {
  const std::int64_t accum = cfg_.training.optimization.gradient_accumulation_steps;
  const std::int64_t mb = cfg_.micro_batch_size();
  model_->train();
  optimizer_->zero_grad();
  double loss_sum = 0;
  for (std::int64_t micro = 0; micro < accum; ++micro) {
    const std::uint64_t first = static_cast<std::uint64_t>((step * accum + micro) * mb);
    const data::Batch batch = sampler_->batch(first, mb);
    const auto inputs = ids_to_tensor(batch.inputs, mb, batch.seq_len, device_);
    const auto targets = ids_to_tensor(batch.targets, mb, batch.seq_len, device_);
    auto loss = model_->loss(inputs, targets);
    (accum > 1 ? loss / static_cast<double>(accum) : loss).backward();
    loss_sum += loss.item<double>();
  }
  const double loss = loss_sum / static_cast<double>(accum);
  if (!std::isfinite(loss))
    throw Error(str("the training loss became ", loss, " at step ", step + 1),
                "lower training.optimization.lr, raise lr_warmup_steps, or check max_grad_norm; resume from the last "
                "checkpoint once changed");
  return loss;
}

double Contributor::grad_norm() const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& [name, p] : optimizer_->params())
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(torch::kFloat64));
  return norms.empty() ? 0.0 : torch::stack(norms).norm(2).item<double>();
}

StepResult Contributor::optimizer_step(std::int64_t step, double loss) {
  StepResult r;
  r.loss = loss;
  r.tokens = tokens_per_step();
  r.grad_norm = grad_norm();
  if (!std::isfinite(r.grad_norm))
    throw Error(str("the gradient norm became ", r.grad_norm, " at step ", step + 1),
                "lower training.optimization.lr or enable clipping (max_grad_norm)");
  const double max_norm = cfg_.training.optimization.max_grad_norm;
  if (max_norm > 0 && r.grad_norm > max_norm) {
    torch::NoGradGuard no_grad;
    const double coef = max_norm / (r.grad_norm + 1e-6);
    for (auto& [name, p] : optimizer_->params())
      if (p.grad().defined()) p.mutable_grad().mul_(coef);
  }
  r.lr = optim::lr_at(schedule_, step);
  optimizer_->step(r.lr);
  return r;
}

double Contributor::evaluate() {
  if (!val_sampler_) return std::nan("");
  torch::NoGradGuard no_grad;
  model_->eval();
  const std::int64_t mb = cfg_.micro_batch_size();
  double sum = 0;
  for (std::int64_t b = 0; b < cfg_.evaluation.batches; ++b) {
    const data::Batch batch = val_sampler_->sequential(static_cast<std::uint64_t>(b * mb), mb);
    sum += model_
               ->loss(ids_to_tensor(batch.inputs, mb, batch.seq_len, device_),
                      ids_to_tensor(batch.targets, mb, batch.seq_len, device_))
               .item<double>();
  }
  model_->train();
  return sum / static_cast<double>(cfg_.evaluation.batches);
}

}  // namespace pico::trainer
