// libpico_spm — sentencepiece behind a plain C interface, loaded into its own link-map
// namespace with dlmopen(LM_ID_NEWLM).
//
// Why: Debian's libsentencepiece embeds its own protobuf-lite and exports its symbols, while
// LibTorch loads the full libprotobuf.so.32. Linked into one process the two interpose each
// other and the process crashes in static initializers before main(). RTLD_DEEPBIND is not
// enough (it breaks libstdc++'s copy-relocated std::cout). In a separate namespace the module
// has its own symbol scope, so only C types and caller-owned buffers cross the boundary:
// nothing allocated on one side is freed on the other.
// This file is the whole interface; data/src/tokenizer.cpp is its only caller.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>
#include <vector>

#define PICO_SPM_API extern "C" __attribute__((visibility("default")))

namespace {

void set_error(char* err, std::size_t cap, const std::string& msg) {
  if (err == nullptr || cap == 0) return;
  std::strncpy(err, msg.c_str(), cap - 1);
  err[cap - 1] = '\0';
}

class LinesIterator : public sentencepiece::SentenceIterator {
 public:
  LinesIterator(const char* const* lines, std::size_t n) : lines_(lines), n_(n) { load(); }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    ++i_;
    load();
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    while (i_ < n_ && lines_[i_][0] == '\0') ++i_;
    if (i_ < n_) value_ = lines_[i_];
  }
  const char* const* lines_;
  std::size_t n_, i_ = 0;
  std::string value_;
};

}  // namespace

PICO_SPM_API void* pico_spm_load(const char* path, char* err, std::size_t err_cap) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

PICO_SPM_API void pico_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

// Encodes text into out[0, cap); returns the number of ids (which may exceed cap: call again
// with a larger buffer), or -1 on error.
PICO_SPM_API long pico_spm_encode(void* handle, const char* text, std::size_t len, int* out, std::size_t cap, char* err,
                                  std::size_t err_cap) {
  std::vector<int> ids;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(absl::string_view(text, len), &ids);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return -1;
  }
  if (ids.size() <= cap) std::memcpy(out, ids.data(), ids.size() * sizeof(int));
  return static_cast<long>(ids.size());
}

// Decodes ids into out[0, cap); returns the byte length (call again if > cap), or -1.
PICO_SPM_API long pico_spm_decode(void* handle, const int* ids, std::size_t n, char* out, std::size_t cap, char* err,
                                  std::size_t err_cap) {
  std::string text;
  const std::vector<int> v(ids, ids + n);
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(v, &text);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return -1;
  }
  if (text.size() <= cap) std::memcpy(out, text.data(), text.size());
  return static_cast<long>(text.size());
}

// which: 0 = vocabulary size, 1 = bos id, 2 = eos id, 3 = unk id
PICO_SPM_API int pico_spm_info(void* handle, int which) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  switch (which) {
    case 0:
      return sp->GetPieceSize();
    case 1:
      return sp->bos_id();
    case 2:
      return sp->eos_id();
    case 3:
      return sp->unk_id();
    default:
      return -1;
  }
}

// Trains a model from `lines` with sentencepiece's flag string `args`. 0 on success.
PICO_SPM_API int pico_spm_train(const char* args, const char* const* lines, std::size_t n, char* err,
                                std::size_t err_cap) {
  LinesIterator it(lines, n);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return 1;
  }
  return 0;
}
