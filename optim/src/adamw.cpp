#include "pico/optim/adamw.h"

#include <cmath>
#include <map>

#include "pico/common/error.h"

namespace pico::optim {

void AdamWConfig::validate() const {
  auto bad = [](const char* key, double v, const char* allowed) {
    throw Error(str("bad value for training.optimization.", key, ": ", v),
                str("training.optimization.", key, " must be ", allowed));
  };
  if (!(beta1 >= 0 && beta1 < 1)) bad("beta1", beta1, "in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) bad("beta2", beta2, "in [0, 1)");
  if (!(eps > 0 && eps < 1)) bad("eps", eps, "in (0, 1)");
  if (!(weight_decay >= 0 && weight_decay < 10)) bad("weight_decay", weight_decay, "in [0, 10)");
}

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWConfig cfg)
    : params_(std::move(params)), cfg_(cfg) {
  cfg_.validate();
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) {
    auto& g = p.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

void AdamW::reset() {
  for (auto& t : exp_avg_) t.zero_();
  for (auto& t : exp_avg_sq_) t.zero_();
  step_ = 0;
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step_));
  const double step_size = lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    const auto& g = p.grad();
    if (!g.defined()) continue;
    const double wd = p.dim() >= 2 ? cfg_.weight_decay : 0.0;
    auto& m = exp_avg_[i];
    auto& v = exp_avg_sq_[i];
    if (p.device().is_cpu() && p.scalar_type() == torch::kFloat32 && p.is_contiguous() && g.is_contiguous()) {
      float* pp = p.data_ptr<float>();
      const float* gp = g.data_ptr<float>();
      float* mp = m.data_ptr<float>();
      float* vp = v.data_ptr<float>();
      const std::int64_t n = p.numel();
      // Float math in the same order as torch's foreach-free AdamW on CPU.
      const float decay = static_cast<float>(1.0 - lr * wd);
      const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
      const float ob1 = static_cast<float>(1.0 - cfg_.beta1), ob2 = static_cast<float>(1.0 - cfg_.beta2);
      const float ss = static_cast<float>(step_size), bc2s = static_cast<float>(bc2_sqrt);
      const float eps = static_cast<float>(cfg_.eps);
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (std::int64_t j = 0; j < n; ++j) {
        const float gj = gp[j];
        float pj = pp[j] * decay;
        const float mj = mp[j] * b1 + ob1 * gj;
        const float vj = vp[j] * b2 + ob2 * gj * gj;
        mp[j] = mj;
        vp[j] = vj;
        pj -= ss * (mj / (std::sqrt(vj) / bc2s + eps));
        pp[j] = pj;
      }
    } else {
      if (wd != 0) p.mul_(1.0 - lr * wd);
      m.mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
      v.mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
      auto denom = (v.sqrt() / bc2_sqrt).add_(cfg_.eps);
      p.addcdiv_(m, denom, -step_size);
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].first + ".exp_avg", exp_avg_[i]);
    out.emplace_back(params_[i].first + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, torch::Tensor>>& state, std::int64_t step) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::pair<const char*, torch::Tensor*> slots[] = {{".exp_avg", &exp_avg_[i]},
                                                            {".exp_avg_sq", &exp_avg_sq_[i]}};
    for (const auto& [suffix, dst] : slots) {
      const std::string key = params_[i].first + suffix;
      auto it = by_name.find(key);
      if (it == by_name.end())
        throw Error(str("optimizer state has no '", key, "'"), "the checkpoint does not match this model");
      if (it->second.sizes() != dst->sizes())
        throw Error(str("optimizer state '", key, "' has shape ", it->second.sizes(), ", expected ", dst->sizes()),
                    "the checkpoint does not match this model");
      dst->copy_(it->second);
    }
  }
  step_ = step;
}

}  // namespace pico::optim
