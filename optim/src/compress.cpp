#include "pico/optim/compress.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "pico/common/error.h"

namespace pico::optim {

namespace {

constexpr std::uint32_t kTopKMagic = 0x314b5054;  // "TPK1" little-endian
constexpr std::uint8_t kTopKVersion = 1;
constexpr std::size_t kTopKHeader = 24;

template <typename T>
T get(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::vector<float> load_residual(const NamedTensors& state, const std::string& key, std::size_t n) {
  for (const auto& [name, t] : state) {
    if (name != key) continue;
    if (static_cast<std::size_t>(t.numel()) != n)
      throw Error(str("compressor state '", key, "' has ", t.numel(), " values, expected ", n),
                  "the checkpoint does not match this model or compression setting");
    const auto c = to_cpu_float(t);
    const float* p = c.data_ptr<float>();
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i]))
        throw Error(str("compressor state '", key, "' holds a value that is not finite"), "the checkpoint is corrupt");
    return std::vector<float>(p, p + n);
  }
  throw Error(str("compressor state has no '", key, "'"), "the checkpoint does not match this compression setting");
}

torch::Tensor residual_tensor(const std::vector<float>& e) {
  return torch::from_blob(const_cast<float*>(e.data()), {static_cast<std::int64_t>(e.size())}, torch::kFloat32).clone();
}

}  // namespace

// ---- ErrorFeedback -----------------------------------------------------------------------

ErrorFeedback::ErrorFeedback(std::string name, std::size_t n, WireDtype dtype)
    : name_(std::move(name)), n_(n), dtype_(dtype), e_(n, 0.0f), y_(n), decoded_(n) {}

void ErrorFeedback::add_residual(const float* x, float* y) const {
  bool finite = true;
  for (std::size_t i = 0; i < n_; ++i) {
    y[i] = x[i] + e_[i];
    finite = finite && std::isfinite(y[i]);
  }
  if (!finite)
    throw Error(str("error feedback '", name_, "': the buffer plus its residual holds a value that is not finite"),
                "the update diverged; the residual was not changed");
}

void ErrorFeedback::update_residual(const float* y, const std::uint8_t* wire) {
  decode(dtype_, wire, n_, decoded_.data());
  for (std::size_t i = 0; i < n_; ++i) e_[i] = y[i] - decoded_[i];
}

void ErrorFeedback::encode(const float* x, std::uint8_t* wire) {
  add_residual(x, y_.data());
  pico::encode(dtype_, y_.data(), n_, wire);
  update_residual(y_.data(), wire);
}

void ErrorFeedback::compensate(float* x) {
  add_residual(x, y_.data());
  wire_.resize(wire_bytes());
  pico::encode(dtype_, y_.data(), n_, wire_.data());
  update_residual(y_.data(), wire_.data());
  std::copy(y_.begin(), y_.end(), x);
}

void ErrorFeedback::reset() {
  std::fill(e_.begin(), e_.end(), 0.0f);
}

NamedTensors ErrorFeedback::state() const {
  return {{name_ + ".residual", residual_tensor(e_)}};
}

void ErrorFeedback::load_state(const NamedTensors& state) {
  e_ = load_residual(state, name_ + ".residual", n_);
}

// ---- TopKCompressor ----------------------------------------------------------------------

TopKCompressor::TopKCompressor(std::string name, std::size_t n, std::size_t k, WireDtype value_dtype)
    : name_(std::move(name)), n_(n), k_(k), dtype_(value_dtype), e_(n, 0.0f) {
  if (n == 0 || n >= (std::size_t{1} << 32))
    throw Error(str("top-k compressor '", name_, "': ", n, " values per round"), "top-k handles 1 to 2^32 - 1 values");
  if (k == 0 || k > n)
    throw Error(str("top-k compressor '", name_, "': k = ", k, " for ", n, " values"), "k must be in [1, n]");
}

std::size_t TopKCompressor::payload_bytes() const {
  return kTopKHeader + 4 * k_ + encoded_size(dtype_, k_);
}

std::vector<std::uint8_t> TopKCompressor::compress(const float* x) {
  std::vector<float> y(n_);
  bool finite = true;
  for (std::size_t i = 0; i < n_; ++i) {
    y[i] = x[i] + e_[i];
    finite = finite && std::isfinite(y[i]);
  }
  if (!finite)
    throw Error(str("top-k compressor '", name_, "': the buffer plus its residual holds a value that is not finite"),
                "the update diverged; the residual was not changed");
  std::vector<std::uint32_t> order(n_);
  std::iota(order.begin(), order.end(), 0u);
  auto before = [&y](std::uint32_t a, std::uint32_t b) {
    const float fa = std::fabs(y[a]), fb = std::fabs(y[b]);
    return fa > fb || (fa == fb && a < b);
  };
  if (k_ < n_)
    std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k_ - 1), order.end(), before);
  order.resize(k_);
  std::sort(order.begin(), order.end());

  std::vector<float> vals(k_), dec(k_);
  for (std::size_t j = 0; j < k_; ++j) vals[j] = y[order[j]];
  std::vector<std::uint8_t> out(payload_bytes());
  std::uint8_t* p = out.data();
  const std::uint32_t magic = kTopKMagic;
  const std::uint64_t n64 = n_, k64 = k_;
  std::memcpy(p, &magic, 4);
  p[4] = kTopKVersion;
  p[5] = static_cast<std::uint8_t>(dtype_);
  p[6] = p[7] = 0;
  std::memcpy(p + 8, &n64, 8);
  std::memcpy(p + 16, &k64, 8);
  std::memcpy(p + kTopKHeader, order.data(), 4 * k_);
  std::uint8_t* wv = p + kTopKHeader + 4 * k_;
  encode(dtype_, vals.data(), k_, wv);
  decode(dtype_, wv, k_, dec.data());
  // e ← y − what the payload delivers.
  e_ = std::move(y);
  for (std::size_t j = 0; j < k_; ++j) e_[order[j]] = e_[order[j]] - dec[j];
  return out;
}

void TopKCompressor::decode_add(const std::vector<std::uint8_t>& payload, float* dst, std::string_view source) const {
  const auto fail = [&](const std::string& what) {
    return Error(str("bad top-k payload from ", source, " for '", name_, "': ", what),
                 "every contributor must run the same pico version, model and compression settings");
  };
  if (payload.size() != payload_bytes()) throw fail(str(payload.size(), " bytes, expected ", payload_bytes()));
  const std::uint8_t* p = payload.data();
  if (get<std::uint32_t>(p) != kTopKMagic) throw fail("bad magic");
  if (p[4] != kTopKVersion) throw fail(str("format version ", int{p[4]}, ", expected ", int{kTopKVersion}));
  if (p[5] != static_cast<std::uint8_t>(dtype_))
    throw fail(str("value type ", int{p[5]}, ", expected ", int{static_cast<std::uint8_t>(dtype_)}));
  if (get<std::uint64_t>(p + 8) != n_ || get<std::uint64_t>(p + 16) != k_)
    throw fail(str("n = ", get<std::uint64_t>(p + 8), ", k = ", get<std::uint64_t>(p + 16), ", expected n = ", n_,
                   ", k = ", k_));
  std::vector<std::uint32_t> idx(k_);
  std::memcpy(idx.data(), p + kTopKHeader, 4 * k_);
  for (std::size_t j = 0; j < k_; ++j) {
    if (idx[j] >= n_) throw fail(str("index ", idx[j], " out of range [0, ", n_, ")"));
    if (j > 0 && idx[j] <= idx[j - 1])
      throw fail(str("indices not strictly ascending (", idx[j - 1], ", ", idx[j], ")"));
  }
  std::vector<float> vals(k_);
  decode(dtype_, p + kTopKHeader + 4 * k_, k_, vals.data());
  for (std::size_t j = 0; j < k_; ++j)
    if (!std::isfinite(vals[j])) throw fail(str("value ", j, " (index ", idx[j], ") is not finite: ", vals[j]));
  for (std::size_t j = 0; j < k_; ++j) dst[idx[j]] = dst[idx[j]] + vals[j];
}

void TopKCompressor::reset() {
  std::fill(e_.begin(), e_.end(), 0.0f);
}

NamedTensors TopKCompressor::state() const {
  return {{name_ + ".residual", residual_tensor(e_)}};
}

void TopKCompressor::load_state(const NamedTensors& state) {
  e_ = load_residual(state, name_ + ".residual", n_);
}

}  // namespace pico::optim
