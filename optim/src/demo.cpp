#include "pico/optim/demo.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "parallel.h"
#include "pico/common/error.h"
#include "pico/common/hash.h"

namespace pico::optim {

namespace {

constexpr std::uint32_t kMagic = 0x4f4d4544;  // "DEMO" little-endian
constexpr std::uint16_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 16;

template <typename T>
void put(std::uint8_t*& p, T v) {
  std::memcpy(p, &v, sizeof v);
  p += sizeof v;
}

template <typename T>
T get(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

void DeMoConfig::validate() const {
  auto bad = [](const char* key, auto v, const char* allowed) {
    throw Error(str("bad value for demo.", key, ": ", v), str("demo.", key, " must be ", allowed));
  };
  if (!(lr > 0 && lr <= 1)) bad("lr", lr, "in (0, 1]");
  if (!(compression_decay >= 0 && compression_decay < 1)) bad("compression_decay", compression_decay, "in [0, 1)");
  if (compression_topk < 1) bad("compression_topk", compression_topk, "at least 1");
  if (compression_chunk < 1 || compression_chunk > 1024) bad("compression_chunk", compression_chunk, "in [1, 1024]");
  if (!(weight_decay >= 0 && weight_decay < 10)) bad("weight_decay", weight_decay, "in [0, 10)");
  if (value_dtype == WireDtype::kUInt8) bad("value_dtype", to_string(value_dtype), "fp32, fp16 or bf16");
}

// ---- top-k, scatter, aggregate -----------------------------------------------------------

SparseCoeffs demo_topk(const float* coeffs, std::int64_t chunks, std::int64_t chunk_numel, std::int64_t k) {
  PICO_CHECK(chunks >= 0 && chunk_numel >= 1, "demo_topk(", chunks, ", ", chunk_numel, ")");
  k = std::clamp<std::int64_t>(k, 1, chunk_numel);
  SparseCoeffs s;
  s.chunks = chunks;
  s.k = k;
  s.idx.resize(static_cast<std::size_t>(chunks * k));
  s.val.resize(static_cast<std::size_t>(chunks * k));
  const std::int64_t total = chunks * chunk_numel;
  bool finite = true;
  for (std::int64_t j = 0; j < total; ++j) finite = finite && std::isfinite(coeffs[j]);
  if (!finite)
    throw Error("DeMo: a DCT coefficient of the momentum is not finite",
                "the momentum overflowed; restart from a checkpoint with a lower demo.lr");
#pragma omp parallel if (chunks > 1 && total >= kParallelTransform)
  {
    std::vector<std::uint32_t> order(static_cast<std::size_t>(chunk_numel));
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < chunks; ++ch) {
      const float* c = coeffs + ch * chunk_numel;
      std::iota(order.begin(), order.end(), 0u);
      // A strict total order (|c| descending, then index ascending): the kept set is unique.
      auto before = [c](std::uint32_t a, std::uint32_t b) {
        const float fa = std::fabs(c[a]), fb = std::fabs(c[b]);
        return fa > fb || (fa == fb && a < b);
      };
      if (k < chunk_numel) std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
      std::sort(order.begin(), order.begin() + k);
      for (std::int64_t j = 0; j < k; ++j) {
        s.idx[static_cast<std::size_t>(ch * k + j)] = order[static_cast<std::size_t>(j)];
        s.val[static_cast<std::size_t>(ch * k + j)] = c[order[static_cast<std::size_t>(j)]];
      }
    }
  }
  return s;
}

void demo_scatter(const SparseCoeffs& s, std::int64_t chunk_numel, float* coeffs) {
  std::fill(coeffs, coeffs + s.chunks * chunk_numel, 0.0f);
  for (std::int64_t ch = 0; ch < s.chunks; ++ch)
    for (std::int64_t j = 0; j < s.k; ++j) {
      const auto at = static_cast<std::size_t>(ch * s.k + j);
      coeffs[ch * chunk_numel + s.idx[at]] = s.val[at];
    }
}

void demo_aggregate(const std::vector<const SparseCoeffs*>& ranks, std::int64_t chunk_numel, float* coeffs) {
  PICO_CHECK(!ranks.empty(), "demo_aggregate needs at least one rank");
  const std::int64_t chunks = ranks[0]->chunks;
  for (const auto* r : ranks) PICO_CHECK_EQ(r->chunks, chunks, "ranks disagree on the chunk count");
  std::fill(coeffs, coeffs + chunks * chunk_numel, 0.0f);
#pragma omp parallel if (chunks > 1 && chunks * chunk_numel >= kParallelTransform)
  {
    std::vector<std::uint32_t> count(static_cast<std::size_t>(chunk_numel), 0);
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < chunks; ++ch) {
      float* c = coeffs + ch * chunk_numel;
      // Sum in rank order, starting from 0 (as scatter_reduce with include_self=False) ...
      for (const auto* r : ranks)
        for (std::int64_t j = 0; j < r->k; ++j) {
          const auto at = static_cast<std::size_t>(ch * r->k + j);
          const std::uint32_t pos = r->idx[at];
          c[pos] = c[pos] + r->val[at];
          ++count[pos];
        }
      // ... then divide each chosen position once by its count (true fp32 division).
      for (const auto* r : ranks)
        for (std::int64_t j = 0; j < r->k; ++j) {
          const std::uint32_t pos = r->idx[static_cast<std::size_t>(ch * r->k + j)];
          if (count[pos] == 0) continue;
          c[pos] = c[pos] / static_cast<float>(count[pos]);
          count[pos] = 0;
        }
    }
  }
}

// ---- DeMo --------------------------------------------------------------------------------

DeMo::DeMo(NamedTensors params, DeMoConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  cfg_.validate();
  PICO_CHECK(!params_.empty(), "DeMo needs at least one parameter");
  std::vector<std::int64_t> layout = {static_cast<std::int64_t>(params_.size())};
  std::size_t coefficients = 0;
  std::int64_t max_chunk = 1;
  for (const auto& [name, p] : params_) {
    if (!p.is_floating_point())
      throw Error(str("DeMo: parameter ", name, " is not floating point (", p.scalar_type(), ")"),
                  "DeMo optimizes floating-point parameters only");
    if (p.dim() > 2)
      throw Error(str("DeMo: parameter ", name, " has ", p.dim(), " dimensions ", p.sizes()),
                  "DeMo (like the reference) handles 1-D and 2-D parameters only");
    if (p.numel() == 0) throw Error(str("DeMo: parameter ", name, " is empty"), "remove empty parameters");
    dct_.emplace_back(p.sizes().vec(), cfg_.compression_chunk);
    const auto& d = dct_.back();
    k_.push_back(std::clamp<std::int64_t>(cfg_.compression_topk, 1, d.chunk_numel()));
    delta_.push_back(torch::zeros(p.sizes(), torch::kFloat32));
    numel_ += p.numel();
    total_chunks_ += static_cast<std::uint32_t>(d.chunks());
    coefficients += static_cast<std::size_t>(d.chunks() * k_.back());
    max_chunk = std::max(max_chunk, d.chunk_numel());
    layout.push_back(p.dim());
    for (auto s : p.sizes()) layout.push_back(s);
    layout.insert(layout.end(), {d.chunk_rows(), d.chunk_cols(), k_.back()});
  }
  index_bytes_ = max_chunk <= 65536 ? 2 : 4;
  layout_tag_ = crc32c(layout.data(), layout.size() * sizeof(std::int64_t));
  payload_bytes_ = kHeaderBytes + coefficients * (index_bytes_ + encoded_size(cfg_.value_dtype, 1));
}

std::size_t DeMo::reference_payload_bytes() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < dct_.size(); ++i) n += static_cast<std::size_t>(dct_[i].chunks() * k_[i]) * 12;
  return n;
}

std::vector<std::uint8_t> DeMo::prepare(double lr) {
  if (pending_)
    throw Error(
        "DeMo::prepare called twice without apply()",
        "after prepare(), run the all-gather and call apply(); retry a failed all-gather with the same payload");
  if (!(lr >= 0 && std::isfinite(lr))) throw Error(str("DeMo::prepare: bad learning rate ", lr), "lr must be ≥ 0");
  torch::NoGradGuard no_grad;
  // Check every gradient before touching δ.
  std::vector<torch::Tensor> grads;
  for (const auto& [name, p] : params_) {
    const auto& g = p.grad();
    if (!g.defined())
      throw Error(str("DeMo: parameter ", name, " has no gradient"),
                  "every parameter needs a gradient before DeMo::prepare (run backward first)");
    auto gc = to_cpu_float(g);
    const float* gp = gc.data_ptr<float>();
    bool finite = true;
    for (std::int64_t j = 0, n = gc.numel(); j < n; ++j) finite = finite && std::isfinite(gp[j]);
    if (!finite)
      throw Error(str("DeMo: the gradient of ", name, " holds a value that is not finite"),
                  "the loss diverged; lower demo.lr or check the data");
    grads.push_back(std::move(gc));
  }

  const float lr_f = static_cast<float>(lr);
  const float beta = static_cast<float>(cfg_.compression_decay);
  std::vector<std::uint8_t> out(payload_bytes_);
  std::uint8_t* w = out.data();
  put(w, kMagic);
  put(w, kVersion);
  put(w, index_bytes_);
  put(w, static_cast<std::uint8_t>(cfg_.value_dtype));
  put(w, layout_tag_);
  put(w, total_chunks_);
  std::uint8_t* widx = w;
  std::size_t coefficients = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) coefficients += static_cast<std::size_t>(dct_[i].chunks() * k_[i]);
  std::uint8_t* wval = widx + coefficients * index_bytes_;

  std::vector<float> coeffs, transmit;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& d = dct_[i];
    float* delta = delta_[i].data_ptr<float>();
    const float* g = grads[i].data_ptr<float>();
    const std::int64_t n = d.numel();
    // δ ← fmaf(g, lr, fl(δ·β)): one rounding for g·lr + fl(δ·β), as torch's add_(alpha=lr).
#pragma omp parallel for schedule(static) if (n >= kParallelElementwise)
    for (std::int64_t j = 0; j < n; ++j) {
      const float decayed = delta[j] * beta;
      delta[j] = std::fmaf(g[j], lr_f, decayed);
    }
    coeffs.resize(static_cast<std::size_t>(d.chunks() * d.chunk_numel()));
    d.encode(delta, coeffs.data());
    SparseCoeffs s = demo_topk(coeffs.data(), d.chunks(), d.chunk_numel(), k_[i]);
    if (cfg_.value_dtype != WireDtype::kFloat32)  // send (and feed back) the rounded values
      for (auto& v : s.val)
        v = cfg_.value_dtype == WireDtype::kFloat16 ? half_to_float(float_to_half(v))
                                                    : bfloat16_to_float(float_to_bfloat16(v));
    // Error feedback: δ ← fl(δ − decode(own top-k)).
    demo_scatter(s, d.chunk_numel(), coeffs.data());
    transmit.resize(static_cast<std::size_t>(n));
    d.decode(coeffs.data(), transmit.data());
    for (std::int64_t j = 0; j < n; ++j) delta[j] = delta[j] - transmit[static_cast<std::size_t>(j)];
    for (std::size_t j = 0; j < s.idx.size(); ++j) {
      if (index_bytes_ == 2)
        put(widx, static_cast<std::uint16_t>(s.idx[j]));
      else
        put(widx, s.idx[j]);
      if (cfg_.value_dtype == WireDtype::kFloat32)
        put(wval, s.val[j]);
      else
        put(wval, cfg_.value_dtype == WireDtype::kFloat16 ? float_to_half(s.val[j]) : float_to_bfloat16(s.val[j]));
    }
  }
  PICO_CHECK(wval == out.data() + out.size(), "DeMo payload size");
  pending_ = true;
  return out;
}

std::vector<SparseCoeffs> DeMo::unpack(const std::vector<std::uint8_t>& payload, std::size_t rank) const {
  const auto fail = [rank](const std::string& what) -> Error {
    return Error(str("bad DeMo payload from rank ", rank, ": ", what),
                 "every contributor must run the same pico version, model and demo.* settings; "
                 "a peer that sends this should be evicted");
  };
  if (payload.size() != payload_bytes_) throw fail(str(payload.size(), " bytes, expected ", payload_bytes_));
  const std::uint8_t* p = payload.data();
  if (get<std::uint32_t>(p) != kMagic) throw fail(str("bad magic 0x", std::hex, get<std::uint32_t>(p)));
  if (get<std::uint16_t>(p + 4) != kVersion)
    throw fail(str("format version ", get<std::uint16_t>(p + 4), ", expected ", kVersion));
  if (p[6] != index_bytes_) throw fail(str("index width ", int{p[6]}, ", expected ", int{index_bytes_}));
  if (p[7] != static_cast<std::uint8_t>(cfg_.value_dtype))
    throw fail(str("value type ", int{p[7]}, ", expected ", int{static_cast<std::uint8_t>(cfg_.value_dtype)}, " (",
                   to_string(cfg_.value_dtype), ")"));
  const std::size_t value_bytes = encoded_size(cfg_.value_dtype, 1);
  if (get<std::uint32_t>(p + 8) != layout_tag_)
    throw fail(str("layout tag ", get<std::uint32_t>(p + 8), ", expected ", layout_tag_,
                   " (different parameter shapes, compression_chunk or compression_topk)"));
  if (get<std::uint32_t>(p + 12) != total_chunks_)
    throw fail(str(get<std::uint32_t>(p + 12), " chunks, expected ", total_chunks_));
  const std::uint8_t* ridx = p + kHeaderBytes;
  std::size_t coefficients = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) coefficients += static_cast<std::size_t>(dct_[i].chunks() * k_[i]);
  const std::uint8_t* rval = ridx + coefficients * index_bytes_;

  std::vector<SparseCoeffs> out(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& s = out[i];
    s.chunks = dct_[i].chunks();
    s.k = k_[i];
    const auto n = static_cast<std::size_t>(s.chunks * s.k);
    s.idx.resize(n);
    s.val.resize(n);
    const auto limit = static_cast<std::uint32_t>(dct_[i].chunk_numel());
    for (std::size_t j = 0; j < n; ++j) {
      const std::uint32_t ix = index_bytes_ == 2 ? get<std::uint16_t>(ridx) : get<std::uint32_t>(ridx);
      ridx += index_bytes_;
      const float v = cfg_.value_dtype == WireDtype::kFloat32   ? get<float>(rval)
                      : cfg_.value_dtype == WireDtype::kFloat16 ? half_to_float(get<std::uint16_t>(rval))
                                                                : bfloat16_to_float(get<std::uint16_t>(rval));
      rval += value_bytes;
      const std::size_t chunk = j / static_cast<std::size_t>(s.k);
      if (ix >= limit)
        throw fail(str(params_[i].first, " chunk ", chunk, ": index ", ix, " out of range [0, ", limit, ")"));
      if (j % static_cast<std::size_t>(s.k) != 0 && ix <= s.idx[j - 1])
        throw fail(
            str(params_[i].first, " chunk ", chunk, ": indices not strictly ascending (", s.idx[j - 1], ", ", ix, ")"));
      if (!std::isfinite(v)) throw fail(str(params_[i].first, " chunk ", chunk, ": value ", v, " is not finite"));
      s.idx[j] = ix;
      s.val[j] = v;
    }
  }
  return out;
}

std::vector<torch::Tensor> DeMo::aggregate(const std::vector<std::vector<std::uint8_t>>& payloads) const {
  if (payloads.empty())
    throw Error("DeMo: no payloads to aggregate", "pass every rank's payload, this rank's included");
  std::vector<std::vector<SparseCoeffs>> ranks;
  for (std::size_t r = 0; r < payloads.size(); ++r) ranks.push_back(unpack(payloads[r], r));
  std::vector<torch::Tensor> out;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    std::vector<const SparseCoeffs*> rs;
    for (const auto& r : ranks) rs.push_back(&r[i]);
    auto c = torch::empty(dct_[i].coeff_shape(), torch::kFloat32);
    demo_aggregate(rs, dct_[i].chunk_numel(), c.data_ptr<float>());
    out.push_back(std::move(c));
  }
  return out;
}

void DeMo::apply(const std::vector<std::vector<std::uint8_t>>& payloads, double lr) {
  if (!pending_)
    throw Error("DeMo::apply called without prepare()", "call prepare() first, then the all-gather, then apply()");
  if (!(lr >= 0 && std::isfinite(lr))) throw Error(str("DeMo::apply: bad learning rate ", lr), "lr must be ≥ 0");
  const auto coeffs = aggregate(payloads);  // validates every payload before anything changes
  torch::NoGradGuard no_grad;
  const float lr_f = static_cast<float>(lr);
  const bool decay = cfg_.weight_decay != 0;
  const float decay_f = static_cast<float>(1.0 - lr * cfg_.weight_decay);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    const auto& d = dct_[i];
    auto sign = torch::empty(p.sizes(), torch::kFloat32);
    float* s = sign.data_ptr<float>();
    d.decode(coeffs[i].data_ptr<float>(), s);
    const std::int64_t n = d.numel();
    for (std::int64_t j = 0; j < n; ++j) s[j] = s[j] > 0.0f ? 1.0f : s[j] < 0.0f ? -1.0f : 0.0f;
    if (p.device().is_cpu() && p.scalar_type() == torch::kFloat32 && p.is_contiguous()) {
      float* pp = p.data_ptr<float>();
#pragma omp parallel for schedule(static) if (n >= kParallelElementwise)
      for (std::int64_t j = 0; j < n; ++j) {
        float v = pp[j];
        if (decay) v = v * decay_f;
        const float step = lr_f * s[j];  // exact: s ∈ {−1, 0, 1}
        pp[j] = v - step;
      }
    } else {
      if (decay) p.mul_(static_cast<double>(decay_f));
      p.sub_(sign.to(p.options()), static_cast<double>(lr_f));
    }
    auto& g = p.mutable_grad();
    if (g.defined()) g.copy_(sign);
  }
  ++step_;
  pending_ = false;
}

NamedTensors DeMo::state() const {
  NamedTensors out;
  for (std::size_t i = 0; i < params_.size(); ++i) out.emplace_back(params_[i].first + ".delta", delta_[i]);
  out.emplace_back("step", torch::full({1}, step_, torch::kInt64));
  return out;
}

void DeMo::load_state(const NamedTensors& state) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  std::vector<torch::Tensor> delta;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::string key = params_[i].first + ".delta";
    auto it = by_name.find(key);
    if (it == by_name.end())
      throw Error(str("DeMo state has no '", key, "'"), "the checkpoint does not match this model");
    if (it->second.sizes() != delta_[i].sizes())
      throw Error(str("DeMo state '", key, "' has shape ", it->second.sizes(), ", expected ", delta_[i].sizes()),
                  "the checkpoint does not match this model");
    auto t = to_cpu_float(it->second);
    if (!torch::isfinite(t).all().item<bool>())
      throw Error(str("DeMo state '", key, "' holds a value that is not finite"),
                  "the checkpoint is corrupt; use an earlier one");
    delta.push_back(std::move(t));
  }
  auto it = by_name.find("step");
  if (it == by_name.end() || it->second.numel() != 1)
    throw Error("DeMo state has no 'step' (one integer)", "the checkpoint does not match this model");
  const std::int64_t step = it->second.to(torch::kCPU).to(torch::kInt64).item<std::int64_t>();
  if (step < 0) throw Error(str("DeMo state 'step' is negative: ", step), "the checkpoint is corrupt");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < delta_.size(); ++i) delta_[i].copy_(delta[i]);
  step_ = step;
  pending_ = false;
}

}  // namespace pico::optim
