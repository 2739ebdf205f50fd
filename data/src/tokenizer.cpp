#include "pico/data/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"

namespace pico::data {
namespace {

// The C interface of libpico_spm (src/spm_shim.cpp).
struct SpmApi {
  void* (*load)(const char*, char*, std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  long (*encode)(void*, const char*, std::size_t, int*, std::size_t, char*, std::size_t) = nullptr;
  long (*decode)(void*, const int*, std::size_t, char*, std::size_t, char*, std::size_t) = nullptr;
  int (*info)(void*, int) = nullptr;
  int (*train)(const char*, const char* const*, std::size_t, char*, std::size_t) = nullptr;
};

std::vector<std::string> candidate_paths() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("PICO_SPM_LIB"); env && *env) out.emplace_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back((exe.parent_path() / "libpico_spm.so").string());
    out.push_back((exe.parent_path() / "../lib/pico/libpico_spm.so").string());
  }
#ifdef PICO_SPM_BUILD_PATH
  out.emplace_back(PICO_SPM_BUILD_PATH);
#endif
  return out;
}

const SpmApi& spm() {
  static SpmApi api;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    void* handle = nullptr;
    std::string tried;
    for (const auto& path : candidate_paths()) {
      if (!std::filesystem::exists(path)) {
        tried += "\n  " + path + " (missing)";
        continue;
      }
      handle = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) break;
      tried += "\n  " + path + " (" + ::dlerror() + ")";
    }
    if (handle == nullptr) {
      failure = "cannot load libpico_spm.so (sentencepiece) from:" + tried;
      return;
    }
    auto sym = [&](const char* name) {
      void* p = ::dlsym(handle, name);
      if (p == nullptr) failure = str("libpico_spm.so lacks ", name);
      return p;
    };
    api.load = reinterpret_cast<decltype(api.load)>(sym("pico_spm_load"));
    api.free = reinterpret_cast<decltype(api.free)>(sym("pico_spm_free"));
    api.encode = reinterpret_cast<decltype(api.encode)>(sym("pico_spm_encode"));
    api.decode = reinterpret_cast<decltype(api.decode)>(sym("pico_spm_decode"));
    api.info = reinterpret_cast<decltype(api.info)>(sym("pico_spm_info"));
    api.train = reinterpret_cast<decltype(api.train)>(sym("pico_spm_train"));
  });
  if (!failure.empty())
    throw Error(failure,
                "install pico with scripts/setup (it builds libpico_spm.so next to the pico binary), "
                "or point PICO_SPM_LIB at it");
  return api;
}

}  // namespace

struct Tokenizer::Impl {
  void* handle = nullptr;
  ~Impl() {
    if (handle != nullptr) spm().free(handle);
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& model_path) {
  if (!std::filesystem::exists(model_path))
    throw Error(str("tokenizer model ", model_path, " does not exist"),
                "pass the tokenizer.model written by `pico data prepare`, or prepare the dataset again");
  Tokenizer t;
  char err[512] = {0};
  t.impl_->handle = spm().load(model_path.c_str(), err, sizeof err);
  if (t.impl_->handle == nullptr)
    throw Error(str("cannot load tokenizer ", model_path, ": ", err),
                "the file is not a sentencepiece model; re-run `pico data prepare`");
  t.path_ = model_path;
  return t;
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids(text.size() / 2 + 16);
  char err[512] = {0};
  for (;;) {
    const long n = spm().encode(impl_->handle, text.data(), text.size(), ids.data(), ids.size(), err, sizeof err);
    PICO_CHECK(n >= 0, "sentencepiece encode failed: ", err);
    if (static_cast<std::size_t>(n) <= ids.size()) return {ids.begin(), ids.begin() + n};
    ids.resize(static_cast<std::size_t>(n));
  }
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out(ids.size() * 8 + 16, '\0');
  char err[512] = {0};
  for (;;) {
    const long n = spm().decode(impl_->handle, ids.data(), ids.size(), out.data(), out.size(), err, sizeof err);
    PICO_CHECK(n >= 0, "sentencepiece decode failed: ", err);
    if (static_cast<std::size_t>(n) <= out.size()) {
      out.resize(static_cast<std::size_t>(n));
      return out;
    }
    out.resize(static_cast<std::size_t>(n));
  }
}

std::string Tokenizer::decode_piece(std::int32_t id) const {
  return decode(std::vector<std::int32_t>{id});
}
std::int32_t Tokenizer::vocab_size() const {
  return spm().info(impl_->handle, 0);
}
std::int32_t Tokenizer::bos_id() const {
  return spm().info(impl_->handle, 1);
}
std::int32_t Tokenizer::eos_id() const {
  return spm().info(impl_->handle, 2);
}

std::string train_tokenizer(const std::vector<std::string>& lines, const std::string& output_dir,
                            const TokenizerTrainOptions& options) {
  if (options.vocab_size < 260)
    throw Error(str("--vocab-size ", options.vocab_size, " is too small"),
                "byte fallback needs 256 byte pieces plus specials: use at least 260 (4096 suits the demo)");
  make_dirs(output_dir);
  const std::string prefix = output_dir + "/tokenizer";
  const std::string args = str("--model_prefix=", prefix, " --vocab_size=", options.vocab_size,
                               " --model_type=bpe --character_coverage=1.0 --byte_fallback=true --split_digits=true",
                               " --num_threads=", options.num_threads, " --input_sentence_size=", options.max_sentences,
                               " --shuffle_input_sentence=true --max_sentence_length=65536 --minloglevel=2",
                               " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1");
  std::vector<const char*> ptrs;
  ptrs.reserve(lines.size());
  for (const auto& l : lines) ptrs.push_back(l.c_str());
  log_info("training a BPE tokenizer (vocab ", options.vocab_size, ") on ", lines.size(), " lines");
  char err[1024] = {0};
  if (spm().train(args.c_str(), ptrs.data(), ptrs.size(), err, sizeof err) != 0)
    throw Error(str("tokenizer training failed: ", err),
                "a smaller --vocab-size, or more input text, usually fixes this");
  std::filesystem::remove(prefix + ".vocab");
  return prefix + ".model";
}

}  // namespace pico::data
