// pico data prepare — text → sentencepiece tokenizer + token shards + manifest.
#include <memory>

#include "commands.h"
#include "pico/data/prepare.h"

namespace pico::apps {

namespace {

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Prepare datasets: tokenizer and pre-tokenized shards.");
  data->require_subcommand(1);
  auto opts = std::make_shared<data::PrepareOptions>();
  auto* prep =
      data->add_subcommand("prepare",
                           "Train a BPE tokenizer (or use --tokenizer), tokenize the inputs and write shards, a\n"
                           "validation split and manifest.json into --output.");
  prep->add_option("--input,-i", opts->inputs, "UTF-8 text file(s); one line is one unit of text")
      ->required()
      ->take_all();
  prep->add_option("--output,-o", opts->output_dir, "Dataset directory to write")->required();
  prep->add_option("--vocab-size", opts->vocab_size, "Vocabulary size of a new tokenizer")
      ->capture_default_str()
      ->check(CLI::Range(260, 1 << 20));
  prep->add_option("--tokenizer", opts->tokenizer, "Use this sentencepiece model instead of training one");
  prep->add_option("--shards", opts->num_shards, "Number of training shards (contributors get whole shards)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  prep->add_option("--val-fraction", opts->val_fraction, "Share of text held out for validation")
      ->capture_default_str();
  prep->add_option("--seed", opts->seed, "Chooses which text is held out")->capture_default_str();
  prep->add_option("--threads", opts->threads, "Encoding threads (0 = all cores)")->capture_default_str();
  prep->add_flag("--overwrite", opts->overwrite,
                 "Replace the dataset already in --output (its manifest, tokenizer and shards)");
  prep->callback([opts] { data::prepare_dataset(*opts); });
}

}  // namespace

PICO_COMMAND(20, register_data);

}  // namespace pico::apps
