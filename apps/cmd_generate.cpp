// pico generate — continue a prompt with a checkpoint's model, streaming the text.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "commands.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/trainer/inference.h"

namespace pico::apps {
namespace {

struct GenerateArgs {
  std::string checkpoint;
  std::string prompt;
  std::int64_t max_new_tokens = 100;
  double temperature = 0.8;
  std::int64_t top_k = 0;
  std::uint64_t seed = 0;
  std::int64_t threads = 0;
};

// Ends with an incomplete UTF-8 sequence, decoded by sentencepiece as U+FFFD.
bool ends_incomplete(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

void run_generate(const GenerateArgs& a) {
  if (a.prompt.empty())
    throw Error("--prompt is empty", "pass the text to continue, e.g. --prompt \"In the beginning\"");
  torch::set_num_threads(a.threads > 0 ? static_cast<int>(a.threads)
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  trainer::LoadedModel m = trainer::load_model(a.checkpoint);
  const data::Tokenizer tok = trainer::load_tokenizer(m);
  const auto prompt = tok.encode(a.prompt);
  trainer::GenerateOptions o;
  o.max_new_tokens = a.max_new_tokens;
  o.temperature = a.temperature;
  o.top_k = a.top_k;
  o.seed = a.seed;
  o.eos_id = tok.eos_id();
  o.vocab_limit = tok.vocab_size();
  // Stream: decode prompt + generated so far and print what is new (whole pieces and whole
  // UTF-8 characters only, so byte-fallback tokens never print half a character).
  std::cout << a.prompt << std::flush;
  const std::string base = tok.decode(prompt);
  std::vector<std::int32_t> all = prompt;
  std::size_t printed = 0;
  auto flush_new = [&](bool final) {
    const std::string full = tok.decode(all);
    if (full.compare(0, base.size(), base) != 0) return;  // prompt's text changed by merging; wait
    const std::string text = full.substr(base.size());
    if (text.size() > printed && (final || !ends_incomplete(text))) {
      std::cout << text.substr(printed) << std::flush;
      printed = text.size();
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = trainer::generate(m.model, prompt, o, [&](std::int32_t id) {
    all.push_back(id);
    flush_new(false);
  });
  flush_new(true);
  std::cout << std::endl;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_info(out.size(), " tokens in ", s, " s (", static_cast<double>(out.size()) / std::max(s, 1e-9), " tok/s), ",
           m.path, " step ", m.step);
}

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand("generate", "Continue a prompt with a checkpoint's model, streaming the text.");
  sub->footer(
      "Prints the prompt, then each new piece of text as soon as it is complete. Greedy (argmax) with\n"
      "--temperature 0; otherwise softmax sampling at that temperature, optionally among the --top-k most\n"
      "likely tokens, reproducible for a given --seed. Stops at --max-new-tokens or the tokenizer's EOS.\n"
      "The context is the last max_seq_len tokens (no KV cache: fine for the small models pico trains).");
  sub->add_option("--checkpoint", args->checkpoint,
                  "A step_*.h5 file, or a run or checkpoints directory (its newest checkpoint)")
      ->required();
  sub->add_option("--prompt,-p", args->prompt, "Text to continue (tokenized without BOS/EOS)")->required();
  sub->add_option("--max-new-tokens,-n", args->max_new_tokens, "Tokens to generate at most (stops early at EOS)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--temperature,-t", args->temperature, "Softmax temperature; 0 = greedy (argmax)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k,-k", args->top_k, "Sample only among the k most likely tokens; 0 = all")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", args->seed, "Sampling seed (same seed, same text)")->capture_default_str();
  sub->add_option("--threads", args->threads, "CPU threads, 0 = all cores")->capture_default_str();
  sub->callback([args] { run_generate(*args); });
}

}  // namespace

PICO_COMMAND(60, register_generate);

}  // namespace pico::apps
