#include "pico/optim/diloco.h"

#include <cmath>
#include <cstring>
#include <map>

#include "parallel.h"
#include "pico/common/error.h"

namespace pico::optim {

void DiLoCoConfig::validate() const {
  if (!(lr > 0 && lr <= 10))
    throw Error(str("bad value for outer.lr: ", lr), "outer.lr must be in (0, 10]; DiLoCo uses 0.7");
  if (!(momentum >= 0 && momentum < 1))
    throw Error(str("bad value for outer.momentum: ", momentum), "outer.momentum must be in [0, 1); DiLoCo uses 0.9");
}

DiLoCo::DiLoCo(const NamedTensors& params, DiLoCoConfig cfg) : cfg_(cfg) {
  cfg_.validate();
  PICO_CHECK(!params.empty(), "DiLoCo needs at least one parameter");
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    PICO_CHECK(p.is_floating_point(), "parameter ", name, " is not floating point");
    auto theta = to_cpu_float(p).clone();  // always an owned copy, never a view of the model
    offset_.push_back(numel_);
    numel_ += theta.numel();
    momentum_.push_back(torch::zeros_like(theta));
    theta_.emplace_back(name, std::move(theta));
  }
}

void DiLoCo::check_local(const NamedTensors& local, const char* what) const {
  if (local.size() != theta_.size())
    throw Error(str(what, ": got ", local.size(), " parameters, the outer optimizer holds ", theta_.size()),
                "pass the same model parameters, in the same order, that DiLoCo was built from");
  for (std::size_t i = 0; i < local.size(); ++i) {
    const auto& [name, t] = local[i];
    if (name != theta_[i].first || t.sizes() != theta_[i].second.sizes())
      throw Error(str(what, ": parameter ", i, " is '", name, "' ", t.sizes(), ", expected '", theta_[i].first, "' ",
                      theta_[i].second.sizes()),
                  "pass the same model parameters, in the same order, that DiLoCo was built from");
  }
}

void DiLoCo::pseudo_gradient(const NamedTensors& local, float* out) const {
  check_local(local, "DiLoCo::pseudo_gradient");
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    const auto l = to_cpu_float(local[i].second);
    const float* lp = l.data_ptr<float>();
    const float* tp = theta_[i].second.data_ptr<float>();
    float* o = out + offset_[i];
    const std::int64_t n = l.numel();
    bool finite = true;
    for (std::int64_t j = 0; j < n; ++j) {
      finite &= std::isfinite(lp[j]);
      o[j] = tp[j] - lp[j];
    }
    if (!finite)
      throw Error(str("local parameter ", local[i].first, " holds a value that is not finite"),
                  "the inner steps diverged: lower training.optimization.lr or check the data");
  }
}

void DiLoCo::step(const float* reduced) {
  const std::int64_t n = numel_;
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite) if (n >= kParallelElementwise)
  for (std::int64_t j = 0; j < n; ++j) finite = finite && std::isfinite(reduced[j]);
  if (!finite) {
    std::int64_t j = 0;
    while (std::isfinite(reduced[j])) ++j;
    std::size_t i = 0;
    while (i + 1 < offset_.size() && offset_[i + 1] <= j) ++i;
    throw Error(str("reduced pseudo-gradient element ", j, " (", theta_[i].first, "[", j - offset_[i],
                    "]) is not finite: ", reduced[j]),
                "a contributor sent a diverged update; θ_g was not changed");
  }
  const float lr = static_cast<float>(cfg_.lr);
  const float mu = static_cast<float>(cfg_.momentum);
  const bool use_momentum = cfg_.momentum != 0;
  const bool first = step_ == 0;
  const bool nesterov = cfg_.nesterov;
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    float* theta = theta_[i].second.data_ptr<float>();
    float* b = momentum_[i].data_ptr<float>();
    const float* delta = reduced + offset_[i];
    const std::int64_t m = theta_[i].second.numel();
    // Each statement rounds once (optim/ is built with -ffp-contract=off).
#pragma omp parallel for schedule(static) if (m >= kParallelElementwise)
    for (std::int64_t j = 0; j < m; ++j) {
      const float d = delta[j];
      float u = d;
      if (use_momentum) {
        float bj;
        if (first) {
          bj = d;
        } else {
          const float decayed = mu * b[j];
          bj = decayed + d;
        }
        b[j] = bj;
        if (nesterov) {
          const float look = mu * bj;
          u = d + look;
        } else {
          u = bj;
        }
      }
      const float upd = lr * u;
      theta[j] = theta[j] - upd;
    }
  }
  ++step_;
}

void DiLoCo::copy_to(const NamedTensors& local) const {
  check_local(local, "DiLoCo::copy_to");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    auto dst = local[i].second;
    dst.copy_(theta_[i].second);
  }
}

NamedTensors DiLoCo::state() const {
  NamedTensors out;
  for (const auto& [name, t] : theta_) out.emplace_back(name + ".theta_g", t);
  for (std::size_t i = 0; i < theta_.size(); ++i) out.emplace_back(theta_[i].first + ".momentum", momentum_[i]);
  out.emplace_back("step", torch::full({1}, step_, torch::kInt64));
  return out;
}

void DiLoCo::load_state(const NamedTensors& state) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  auto find = [&](const std::string& key, const torch::Tensor& like) {
    auto it = by_name.find(key);
    if (it == by_name.end())
      throw Error(str("outer optimizer state has no '", key, "'"), "the checkpoint does not match this model");
    if (it->second.sizes() != like.sizes())
      throw Error(str("outer optimizer state '", key, "' has shape ", it->second.sizes(), ", expected ", like.sizes()),
                  "the checkpoint does not match this model");
    auto t = to_cpu_float(it->second);
    if (!torch::isfinite(t).all().item<bool>())
      throw Error(str("outer optimizer state '", key, "' holds a value that is not finite"),
                  "the checkpoint is corrupt; use an earlier one");
    return t;
  };
  // Validate everything before changing anything.
  std::vector<torch::Tensor> theta, momentum;
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    theta.push_back(find(theta_[i].first + ".theta_g", theta_[i].second));
    momentum.push_back(find(theta_[i].first + ".momentum", momentum_[i]));
  }
  auto it = by_name.find("step");
  if (it == by_name.end() || it->second.numel() != 1)
    throw Error("outer optimizer state has no 'step' (one integer)", "the checkpoint does not match this model");
  const std::int64_t step = it->second.to(torch::kCPU).to(torch::kInt64).item<std::int64_t>();
  if (step < 0) throw Error(str("outer optimizer state 'step' is negative: ", step), "the checkpoint is corrupt");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    theta_[i].second.copy_(theta[i]);
    momentum_[i].copy_(momentum[i]);
  }
  step_ = step;
}

std::string DiLoCo::state_hash() const {
  return hash_tensors(state());
}

NamedTensors DiLoCo::unflatten(const std::vector<float>& flat) const {
  NamedTensors out;
  if (flat.empty()) return out;
  PICO_CHECK(static_cast<std::int64_t>(flat.size()) == numel_, "pseudo-gradient has ", flat.size(), " values, θ_g has ",
             numel_);
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    const auto& [name, p] = theta_[i];
    out.emplace_back(
        name, torch::from_blob(const_cast<float*>(flat.data()) + offset_[i], p.sizes(), torch::kFloat32).clone());
  }
  return out;
}

std::vector<float> DiLoCo::flatten(const NamedTensors& named) const {
  std::vector<float> flat;
  if (named.empty()) return flat;
  const std::map<std::string, torch::Tensor> by_name(named.begin(), named.end());
  flat.resize(static_cast<std::size_t>(numel_));
  for (std::size_t i = 0; i < theta_.size(); ++i) {
    const auto& [name, p] = theta_[i];
    const auto it = by_name.find(name);
    if (it == by_name.end())
      throw Error(str("the checkpoint's pseudo-gradient has no '", name, "'"),
                  "the checkpoint does not match this model");
    if (it->second.sizes() != p.sizes())
      throw Error(
          str("the checkpoint's pseudo-gradient '", name, "' has shape ", it->second.sizes(), ", expected ", p.sizes()),
          "the checkpoint does not match this model");
    const torch::Tensor t = to_cpu_float(it->second).contiguous();
    std::memcpy(flat.data() + offset_[i], t.data_ptr<float>(), static_cast<std::size_t>(t.numel()) * sizeof(float));
  }
  return flat;
}

}  // namespace pico::optim
