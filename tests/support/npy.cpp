#include "support/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace pico::test {

void save_npy(const std::string& path, const torch::Tensor& tensor) {
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  std::string descr;
  switch (t.scalar_type()) {
    case torch::kFloat32:
      descr = "<f4";
      break;
    case torch::kFloat64:
      descr = "<f8";
      break;
    case torch::kInt64:
      descr = "<i8";
      break;
    case torch::kInt32:
      descr = "<i4";
      break;
    default:
      throw std::runtime_error("save_npy: unsupported dtype");
  }
  std::ostringstream shape;
  shape << "(";
  for (auto s : t.sizes()) shape << s << ",";
  shape << ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape.str() + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const auto len = static_cast<std::uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!out) throw std::runtime_error("save_npy: cannot write " + path);
}

torch::Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("load_npy: cannot read " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error("load_npy: not an npy file: " + path);
  std::uint32_t hlen = 0;
  if (magic[6] == 1) {
    std::uint16_t h16;
    in.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    in.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, '\0');
  in.read(header.data(), hlen);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr': '([<|]?)([fi][48])'")))
    throw std::runtime_error("load_npy: unsupported descr in " + path);
  const std::string kind = m[2];
  if (header.find("'fortran_order': True") != std::string::npos) throw std::runtime_error("load_npy: fortran order");
  std::vector<std::int64_t> shape;
  std::smatch sm;
  if (std::regex_search(header, sm, std::regex("'shape': \\(([^)]*)\\)"))) {
    std::stringstream ss(sm[1]);
    std::string tok;
    while (std::getline(ss, tok, ','))
      if (tok.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(tok));
  }
  torch::ScalarType dtype = kind == "f4"   ? torch::kFloat32
                            : kind == "f8" ? torch::kFloat64
                            : kind == "i8" ? torch::kInt64
                                           : torch::kInt32;
  auto t = torch::empty(shape, dtype);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!in) throw std::runtime_error("load_npy: truncated " + path);
  return t;
}

}  // namespace pico::test
