// Hugging Face Llama export: name mapping, safetensors, config.json (docs/CHECKPOINT_FORMAT.md).
#include "pico/checkpoints/hf_export.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "pico/common/error.h"
#include "pico/common/fs.h"

namespace pico::checkpoints {
namespace {

// pico module path inside a block → Llama's.
const std::vector<std::pair<std::string, std::string>>& block_map() {
  static const std::vector<std::pair<std::string, std::string>> m = {{"attention.q_proj", "self_attn.q_proj"},
                                                                     {"attention.k_proj", "self_attn.k_proj"},
                                                                     {"attention.v_proj", "self_attn.v_proj"},
                                                                     {"attention.o_proj", "self_attn.o_proj"},
                                                                     {"swiglu.w_0", "mlp.gate_proj"},
                                                                     {"swiglu.w_1", "mlp.up_proj"},
                                                                     {"swiglu.w_2", "mlp.down_proj"},
                                                                     {"attention_norm", "input_layernorm"},
                                                                     {"swiglu_norm", "post_attention_layernorm"}};
  return m;
}

const char* safetensors_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return "F32";
    case torch::kFloat64:
      return "F64";
    case torch::kFloat16:
      return "F16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kInt64:
      return "I64";
    case torch::kInt32:
      return "I32";
    case torch::kUInt8:
      return "U8";
    case torch::kBool:
      return "BOOL";
    default:
      break;
  }
  throw Error(str("dtype ", t, " has no safetensors name"), "export float32/float16/bfloat16 tensors");
}

std::optional<torch::ScalarType> dtype_from_safetensors(const std::string& s) {
  static const std::map<std::string, torch::ScalarType> m = {
      {"F32", torch::kFloat32}, {"F64", torch::kFloat64}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  auto it = m.find(s);
  if (it == m.end()) return std::nullopt;
  return it->second;
}

// A file written through a temporary name, fsynced, renamed into place.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    const std::filesystem::path p(path_);
    dir_ = p.has_parent_path() ? p.parent_path().string() : ".";
    tmp_ = dir_ + "/." + p.filename().string() + ".tmp." + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(str("cannot create ", tmp_, ": ", std::strerror(errno)), "check permissions and free space");
  }
  ~AtomicFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  void write(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error(str("write to ", tmp_, " failed: ", std::strerror(errno)), "check free disk space");
      }
      p += w;
      n -= static_cast<std::size_t>(w);
      written_ += static_cast<std::uint64_t>(w);
    }
  }
  void commit() {
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      ::unlink(tmp_.c_str());
      throw Error(str("fsync/close of ", tmp_, " failed: ", std::strerror(errno)));
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      ::unlink(tmp_.c_str());
      throw Error(str("rename ", tmp_, " -> ", path_, " failed: ", std::strerror(errno)));
    }
    fsync_path(dir_);
  }
  std::uint64_t written() const { return written_; }

 private:
  std::string path_, dir_, tmp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

}  // namespace

std::string hf_llama_name(const std::string& n) {
  if (n == "embedding_proj.weight") return "model.embed_tokens.weight";
  if (n == "output_norm.weight") return "model.norm.weight";
  if (n == "de_embedding_proj.weight") return "lm_head.weight";
  static const std::regex layer(R"(layers\.(\d+)\.(.+)\.weight)");
  std::smatch m;
  if (std::regex_match(n, m, layer)) {
    for (const auto& [from, to] : block_map())
      if (m[2].str() == from) return str("model.layers.", m[1].str(), ".", to, ".weight");
  }
  throw Error(str("parameter '", n, "' has no Hugging Face Llama counterpart"),
              "only pico-decoder parameters (embedding_proj, layers.N.{attention,swiglu,...}, output_norm, "
              "de_embedding_proj) can be exported to the hf format");
}

std::string pico_name_from_hf(const std::string& n) {
  if (n == "model.embed_tokens.weight") return "embedding_proj.weight";
  if (n == "model.norm.weight") return "output_norm.weight";
  if (n == "lm_head.weight") return "de_embedding_proj.weight";
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+)\.weight)");
  std::smatch m;
  if (std::regex_match(n, m, layer)) {
    for (const auto& [from, to] : block_map())
      if (m[2].str() == to) return str("layers.", m[1].str(), ".", from, ".weight");
  }
  throw Error(str("Hugging Face tensor '", n, "' has no pico-decoder counterpart"),
              "pico reads LlamaForCausalLM checkpoints without biases, with untied embeddings");
}

std::string hf_llama_config_json(const HfLlamaConfig& c) {
  auto token = [](std::int64_t id) { return id >= 0 ? nlohmann::ordered_json(id) : nlohmann::ordered_json(nullptr); };
  nlohmann::ordered_json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.hidden_size / c.num_attention_heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"pretraining_tp", 1},
      {"initializer_range", 0.02},
      {"tie_word_embeddings", false},
      {"torch_dtype", c.torch_dtype},
      {"use_cache", true},
      {"vocab_size", c.vocab_size},
      {"bos_token_id", token(c.bos_token_id)},
      {"eos_token_id", token(c.eos_token_id)},
  };
  return j.dump(2) + "\n";
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  std::vector<torch::Tensor> data;
  std::set<std::string> names;
  for (const auto& [name, t0] : tensors) {
    if (!names.insert(name).second) throw Error(str("duplicate tensor name '", name, "' for ", path));
    auto t = t0.detach().to(torch::kCPU).contiguous();
    const std::uint64_t n = static_cast<std::uint64_t>(t.numel() * t.element_size());
    header[name] = {{"dtype", safetensors_dtype(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(t);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  AtomicFile f(path);
  const std::uint64_t len = h.size();
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(len >> (8 * i));
  f.write(le, 8);
  f.write(h.data(), h.size());
  for (const auto& t : data) f.write(t.data_ptr(), static_cast<std::size_t>(t.numel() * t.element_size()));
  f.commit();
}

NamedTensors read_safetensors(const std::string& path) {
  MappedFile m(path);
  auto bad = [&](const std::string& what) -> Error {
    return Error(str(path, " is not a valid safetensors file: ", what), "re-export it with pico export --format hf");
  };
  if (m.size() < 8) throw bad("shorter than its 8-byte header length");
  std::uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<std::uint64_t>(m.data()[i]) << (8 * i);
  if (len > m.size() - 8 || len > (100u << 20)) throw bad(str("header length ", len, " exceeds the file"));
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(m.data()) + 8, len));
  } catch (const nlohmann::json::exception& e) {
    throw bad(str("header is not JSON: ", e.what()));
  }
  if (!h.is_object()) throw bad("header is not a JSON object");
  const std::uint64_t data_bytes = m.size() - 8 - len;
  const std::uint8_t* base = m.data() + 8 + len;
  NamedTensors out;
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    try {
      const auto dtype = dtype_from_safetensors(v.at("dtype").get<std::string>());
      if (!dtype) throw bad(str("tensor ", name, " has unknown dtype ", v.at("dtype")));
      const auto shape = v.at("shape").get<std::vector<std::int64_t>>();
      const auto off = v.at("data_offsets").get<std::vector<std::uint64_t>>();
      std::uint64_t n = static_cast<std::uint64_t>(c10::elementSize(*dtype));
      for (auto s : shape) {
        if (s < 0) throw bad(str("tensor ", name, " has a negative dimension"));
        n *= static_cast<std::uint64_t>(s);
      }
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_bytes || off[1] - off[0] != n)
        throw bad(str("tensor ", name, " has data_offsets that do not match its shape or the file size"));
      auto t = torch::empty(shape, torch::TensorOptions().dtype(*dtype));
      std::memcpy(t.data_ptr(), base + off[0], n);
      out.emplace_back(name, t);
    } catch (const nlohmann::json::exception& e) {
      throw bad(str("tensor ", name, ": ", e.what()));
    }
  }
  return out;
}

HfExportResult export_hf_llama(const std::string& dir, const NamedTensors& params, const HfLlamaConfig& c,
                               const std::string& tokenizer_model_bytes) {
  const std::int64_t C = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const std::int64_t hd = c.hidden_size / c.num_attention_heads;
  const std::int64_t Q = c.num_attention_heads * hd, KV = c.num_key_value_heads * hd;
  std::map<std::string, std::vector<std::int64_t>> expected = {
      {"model.embed_tokens.weight", {V, C}}, {"model.norm.weight", {C}}, {"lm_head.weight", {V, C}}};
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = str("model.layers.", i, ".");
    expected[p + "self_attn.q_proj.weight"] = {Q, C};
    expected[p + "self_attn.k_proj.weight"] = {KV, C};
    expected[p + "self_attn.v_proj.weight"] = {KV, C};
    expected[p + "self_attn.o_proj.weight"] = {C, Q};
    expected[p + "mlp.gate_proj.weight"] = {I, C};
    expected[p + "mlp.up_proj.weight"] = {I, C};
    expected[p + "mlp.down_proj.weight"] = {C, I};
    expected[p + "input_layernorm.weight"] = {C};
    expected[p + "post_attention_layernorm.weight"] = {C};
  }
  NamedTensors hf;
  HfExportResult r;
  for (const auto& [name, t] : params) {
    const std::string h = hf_llama_name(name);
    auto it = expected.find(h);
    if (it == expected.end())
      throw Error(str("parameter ", name, " (", h, ") does not belong to a Llama of ", c.num_hidden_layers, " layers"),
                  "the checkpoint's tensors do not match its config");
    if (t.sizes().vec() != it->second)
      throw Error(str("parameter ", name, " has shape ", t.sizes(), ", the Llama config expects ",
                      c10::IntArrayRef(it->second)),
                  "the checkpoint's tensors do not match its config");
    expected.erase(it);
    r.num_params += t.numel();
    hf.emplace_back(h, t);
  }
  if (!expected.empty())
    throw Error(str("the checkpoint lacks ", expected.size(), " tensors a LlamaForCausalLM needs, e.g. ",
                    expected.begin()->first),
                "export a checkpoint written by pico train (its /model group)");
  make_dirs(dir);
  const std::string st = dir + "/model.safetensors";
  write_safetensors(st, hf, {{"format", "pt"}});
  r.files.push_back(st);
  std::error_code ec;
  r.safetensors_bytes = std::filesystem::file_size(st, ec);
  write_file_atomic(dir + "/config.json", hf_llama_config_json(c));
  r.files.push_back(dir + "/config.json");
  write_file_atomic(dir + "/tokenizer.model", tokenizer_model_bytes);
  r.files.push_back(dir + "/tokenizer.model");
  // LlamaTokenizer over the same sentencepiece model; pico adds no BOS/EOS when it encodes.
  nlohmann::ordered_json tok = {{"tokenizer_class", "LlamaTokenizer"},
                                {"add_bos_token", false},
                                {"add_eos_token", false},
                                {"bos_token", "<s>"},
                                {"eos_token", "</s>"},
                                {"unk_token", "<unk>"},
                                {"model_max_length", c.max_position_embeddings},
                                {"clean_up_tokenization_spaces", false},
                                {"legacy", true}};
  write_file_atomic(dir + "/tokenizer_config.json", tok.dump(2) + "\n");
  r.files.push_back(dir + "/tokenizer_config.json");
  auto token = [](std::int64_t id) { return id >= 0 ? nlohmann::ordered_json(id) : nlohmann::ordered_json(nullptr); };
  nlohmann::ordered_json gen = {
      {"bos_token_id", token(c.bos_token_id)}, {"eos_token_id", token(c.eos_token_id)}, {"do_sample", false}};
  write_file_atomic(dir + "/generation_config.json", gen.dump(2) + "\n");
  r.files.push_back(dir + "/generation_config.json");
  return r;
}

}  // namespace pico::checkpoints
