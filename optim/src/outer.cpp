#include "pico/optim/outer.h"

#include <bit>

#include "pico/common/hash.h"

namespace pico::optim {

static_assert(std::endian::native == std::endian::little, "pico's wire and hash formats are little-endian");

torch::Tensor to_cpu_float(const torch::Tensor& t) {
  torch::NoGradGuard no_grad;
  auto out = t.detach();
  if (!out.device().is_cpu() || out.scalar_type() != torch::kFloat32)
    out = out.to(torch::TensorOptions().device(torch::kCPU).dtype(torch::kFloat32));
  return out.contiguous();
}

std::string hash_tensors(const NamedTensors& tensors) {
  Sha256 h;
  for (const auto& [name, t] : tensors) {
    if (t.scalar_type() == torch::kInt64) {
      const auto c = t.detach().to(torch::kCPU).contiguous();
      h.update(c.data_ptr<std::int64_t>(), static_cast<std::size_t>(c.numel()) * sizeof(std::int64_t));
    } else {
      const auto c = to_cpu_float(t);
      h.update(c.data_ptr<float>(), static_cast<std::size_t>(c.numel()) * sizeof(float));
    }
  }
  return h.hex_digest();
}

}  // namespace pico::optim
