// pico eval — mean next-token loss of a checkpoint's model over a text file, one JSON line.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"
#include "pico/data/manifest.h"
#include "pico/data/sampler.h"
#include "pico/trainer/inference.h"

namespace pico::apps {
namespace {

struct EvalArgs {
  std::string checkpoint;
  std::string text_file;
  std::string data;  // a dataset directory: evaluate its validation split
  std::int64_t batch_size = 8;
  std::int64_t threads = 0;
  std::string save_logits;
};

void set_threads(std::int64_t threads) {
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads)
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

// A little-endian .npy (v1.0) of a contiguous CPU tensor (float32 or int64).
void write_npy(const std::string& path, const torch::Tensor& t0) {
  const auto t = t0.contiguous();
  const char* descr = t.scalar_type() == torch::kFloat32 ? "<f4" : "<i8";
  std::string shape = "(";
  for (auto d : t.sizes()) shape += std::to_string(d) + ",";
  shape += ")";
  std::string header = str("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += "\n";
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  const auto len = static_cast<std::uint16_t>(header.size());
  bytes += static_cast<char>(len & 0xff);
  bytes += static_cast<char>(len >> 8);
  bytes += header;
  bytes.append(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel() * t.element_size()));
  write_file_atomic(path, bytes);
}

// The validation split of a prepared dataset, as token ids; its tokenizer must be the
// checkpoint's (the ids would mean other pieces otherwise).
std::vector<std::int32_t> validation_ids(const std::string& dir, const trainer::LoadedModel& m) {
  const auto ds = data::Dataset::open(dir, /*verify=*/true);
  const std::string mine = sha256_hex(m.tokenizer_model);
  if (ds->manifest().tokenizer_sha256 != mine)
    throw Error(
        str("dataset ", dir, " was tokenized with another tokenizer (", ds->manifest().tokenizer_sha256.substr(0, 12),
            "…) than checkpoint ", m.path, " (", mine.substr(0, 12), "…)"),
        "evaluate on the dataset the run trained on (data.path in its config), or use --text-file");
  const data::TokenStream val = data::val_stream(*ds);
  if (val.size() < 2)
    throw Error(str("dataset ", dir, " has no validation split"),
                "prepare it with --val-fraction > 0, or evaluate a text with --text-file");
  std::vector<std::int64_t> wide(val.size());
  val.read(0, val.size(), wide.data());
  return std::vector<std::int32_t>(wide.begin(), wide.end());
}

void run_eval(const EvalArgs& a) {
  if (a.batch_size < 1) throw Error(str("--batch-size ", a.batch_size), "use at least 1 window per forward pass");
  if (a.text_file.empty() == a.data.empty())
    throw Error("pico eval needs one of --text-file FILE or --data DIR",
                "e.g. pico eval --checkpoint runs/demo --data data/kjv (its validation split)");
  if (!a.text_file.empty() && !std::filesystem::is_regular_file(a.text_file))
    throw Error(str("text file ", a.text_file, " does not exist"), "pass --text-file with a UTF-8 text file");
  set_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  trainer::LoadedModel m = trainer::load_model(a.checkpoint);
  std::vector<std::int32_t> ids;
  if (!a.data.empty()) {
    ids = validation_ids(a.data, m);
  } else {
    const data::Tokenizer tok = trainer::load_tokenizer(m);
    ids = tok.encode(read_file(a.text_file));
  }
  const std::string source = a.data.empty() ? a.text_file : a.data + " (validation split)";
  if (ids.size() < 2)
    throw Error(
        str("text file ", a.text_file, " encodes to ", ids.size(), " token(s); a next-token loss needs at least 2"),
        "pass a longer --text-file");
  const auto r = trainer::evaluate_ids(m.model, ids, a.batch_size);
  if (!a.save_logits.empty()) {
    // The first window's inputs and logits, for comparisons with other implementations.
    torch::NoGradGuard no_grad;
    const std::int64_t n = std::min<std::int64_t>(m.config.model.max_seq_len, static_cast<std::int64_t>(ids.size()));
    auto x = torch::empty({1, n}, torch::kLong);
    auto* xp = x.data_ptr<std::int64_t>();
    for (std::int64_t j = 0; j < n; ++j) xp[j] = ids[static_cast<std::size_t>(j)];
    write_npy(a.save_logits + ".tokens.npy", x);
    write_npy(a.save_logits + ".logits.npy", m.model->forward(x).to(torch::kFloat32));
  }
  log_info("eval of ", m.path, " (step ", m.step, ") on ", source, ": ", ids.size(), " tokens in ", r.windows,
           " windows, ", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s");
  nlohmann::ordered_json j = {{"tokens", r.tokens}, {"loss", r.loss}, {"ppl", r.ppl}};
  std::cout << j.dump() << std::endl;
}

void register_eval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* sub =
      app.add_subcommand("eval",
                         "Mean next-token loss of a checkpoint's model over a text file or a dataset's validation "
                         "split.");
  sub->footer(
      "Prints one JSON line {\"tokens\": N, \"loss\": L, \"ppl\": P}. The text is tokenized with the run's\n"
      "tokenizer (embedded in the checkpoint; no BOS/EOS added) and cut into consecutive windows of\n"
      "max_seq_len + 1 tokens (a last shorter window of >= 2 tokens included); each window of n tokens\n"
      "predicts its last n - 1. L is the mean cross-entropy (nats) over all N predicted tokens, P = exp(L).");
  sub->add_option("--checkpoint", args->checkpoint,
                  "A step_*.h5 file, or a run or checkpoints directory (its newest checkpoint)")
      ->required();
  auto* text = sub->add_option("--text-file", args->text_file, "UTF-8 text to evaluate on");
  sub->add_option("--data", args->data,
                  "A dataset directory (pico data prepare): evaluate its whole validation split, tokenized as "
                  "prepared")
      ->excludes(text);
  sub->add_option("--batch-size", args->batch_size,
                  "Windows per forward pass (memory vs speed; changes the result only by float rounding)")
      ->capture_default_str();
  sub->add_option("--threads", args->threads, "CPU threads, 0 = all cores")->capture_default_str();
  sub->add_option("--save-logits", args->save_logits,
                  "Also write PREFIX.tokens.npy (1, T) and PREFIX.logits.npy (1, T, V) for the first window");
  sub->callback([args] { run_eval(*args); });
}

}  // namespace

PICO_COMMAND(50, register_eval);

}  // namespace pico::apps
