#include "state_blob.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "pico/common/error.h"

namespace pico::trainer {
namespace {
constexpr char kMagic[4] = {'P', 'S', 'T', 'B'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint64_t kMaxHeader = 16u << 20;
}  // namespace

std::string serialize_state(const optim::NamedTensors& state, std::int64_t round) {
  nlohmann::json tensors = nlohmann::json::array();
  std::uint64_t offset = 0;
  std::vector<torch::Tensor> contiguous;
  for (const auto& [name, t] : state) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    PICO_CHECK(c.scalar_type() == torch::kFloat32 || c.scalar_type() == torch::kInt64, "state tensor ", name,
               " has an unsupported dtype");
    const auto bytes = static_cast<std::uint64_t>(c.numel() * c.element_size());
    tensors.push_back({{"name", name},
                       {"dtype", c.scalar_type() == torch::kFloat32 ? "float32" : "int64"},
                       {"shape", c.sizes().vec()},
                       {"offset", offset},
                       {"bytes", bytes}});
    offset += bytes;
    contiguous.push_back(c);
  }
  const std::string header = nlohmann::json{{"round", round}, {"tensors", tensors}}.dump();
  std::string out(4 + 4 + 8, '\0');
  std::memcpy(out.data(), kMagic, 4);
  std::memcpy(out.data() + 4, &kVersion, 4);
  const std::uint64_t hlen = header.size();
  std::memcpy(out.data() + 8, &hlen, 8);
  out += header;
  out.reserve(out.size() + offset);
  for (const auto& c : contiguous)
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.numel() * c.element_size()));
  return out;
}

optim::NamedTensors deserialize_state(const std::string& blob, std::int64_t& round) {
  const char* kHint = "the snapshot is damaged or from another pico version; it will be fetched again";
  if (blob.size() < 16 || std::memcmp(blob.data(), kMagic, 4) != 0) throw Error("not a pico state snapshot", kHint);
  std::uint32_t version;
  std::memcpy(&version, blob.data() + 4, 4);
  if (version != kVersion) throw Error(str("state snapshot version ", version, ", expected ", kVersion), kHint);
  std::uint64_t hlen;
  std::memcpy(&hlen, blob.data() + 8, 8);
  if (hlen > kMaxHeader || hlen > blob.size() - 16) throw Error("state snapshot header length is out of range", kHint);
  const auto header =
      nlohmann::json::parse(blob.begin() + 16, blob.begin() + 16 + static_cast<std::ptrdiff_t>(hlen), nullptr, false);
  if (header.is_discarded() || !header.is_object() || !header.contains("tensors") || !header["tensors"].is_array() ||
      !header.contains("round") || !header["round"].is_number_integer())
    throw Error("state snapshot header is malformed", kHint);
  round = header["round"].get<std::int64_t>();
  const std::uint64_t data_start = 16 + hlen;
  const std::uint64_t data_bytes = blob.size() - data_start;
  optim::NamedTensors out;
  try {
    for (const auto& t : header["tensors"]) {
      const std::string name = t.at("name").get<std::string>();
      const std::string dtype = t.at("dtype").get<std::string>();
      const auto shape = t.at("shape").get<std::vector<std::int64_t>>();
      const auto offset = t.at("offset").get<std::uint64_t>();
      const auto bytes = t.at("bytes").get<std::uint64_t>();
      if (dtype != "float32" && dtype != "int64") throw Error(str("state tensor ", name, " has dtype ", dtype), kHint);
      std::uint64_t numel = 1;
      for (auto d : shape) {
        if (d < 0 || d > (std::int64_t{1} << 40)) throw Error(str("state tensor ", name, " has a bad shape"), kHint);
        numel *= static_cast<std::uint64_t>(d);
      }
      const std::uint64_t elem = dtype == "float32" ? 4 : 8;
      if (numel * elem != bytes || offset > data_bytes || bytes > data_bytes - offset)
        throw Error(str("state tensor ", name, " does not fit the snapshot"), kHint);
      auto tensor = torch::empty(shape, dtype == "float32" ? torch::kFloat32 : torch::kInt64);
      std::memcpy(tensor.data_ptr(), blob.data() + data_start + offset, bytes);
      out.emplace_back(name, tensor);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(str("state snapshot header is malformed: ", e.what()), kHint);
  }
  return out;
}

}  // namespace pico::trainer
