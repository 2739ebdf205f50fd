// pico export — a checkpoint as a Hugging Face Llama model directory.
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/checkpoints/hf_export.h"
#include "pico/checkpoints/store.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/data/tokenizer.h"
#include "pico/trainer/inference.h"

namespace pico::apps {
namespace {

struct ExportArgs {
  std::string checkpoint;
  std::string format = "hf";
  std::string output;
  bool overwrite = false;
};

void run_export(const ExportArgs& a) {
  if (a.format != "hf")
    throw Error(str("unknown export format '", a.format, "'"), "pico export supports --format hf (Hugging Face Llama)");
  for (const char* name : {"model.safetensors", "config.json", "tokenizer.model"})
    if (!a.overwrite && std::filesystem::exists(a.output + "/" + name))
      throw Error(str("--output ", a.output, " already holds an export (", name, ")"),
                  "pass --overwrite to replace it, or choose another --output");
  const trainer::LoadedModel m = trainer::load_model(a.checkpoint);
  const auto& mc = m.config.model;
  const data::Tokenizer tok = trainer::load_tokenizer(m);
  checkpoints::HfLlamaConfig hf;
  hf.hidden_size = mc.d_model;
  hf.intermediate_size = mc.activation_hidden_dim;
  hf.num_hidden_layers = mc.n_layers;
  hf.num_attention_heads = mc.attention_n_heads;
  hf.num_key_value_heads = mc.attention_n_kv_heads;
  hf.max_position_embeddings = mc.max_seq_len;
  hf.vocab_size = mc.vocab_size;
  hf.rms_norm_eps = mc.norm_eps;
  hf.rope_theta = mc.position_emb_theta;
  hf.bos_token_id = tok.bos_id();
  hf.eos_token_id = tok.eos_id();
  hf.torch_dtype = "float32";
  const auto r = checkpoints::export_hf_llama(a.output, m.model->named_params(), hf, m.tokenizer_model);
  std::cout << "exported " << m.path << " (step " << m.step << ", " << static_cast<double>(r.num_params) / 1e6
            << "M parameters) to " << a.output << ":\n";
  for (const auto& f : r.files) std::cout << "  " << f << "\n";
}

void register_export(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* sub = app.add_subcommand("export", "Export a checkpoint's model (Hugging Face Llama format).");
  sub->footer(
      "--format hf writes DIR/model.safetensors (Llama parameter names), config.json (LlamaForCausalLM),\n"
      "tokenizer.model (the run's sentencepiece model), tokenizer_config.json and generation_config.json,\n"
      "loadable with transformers' LlamaForCausalLM.from_pretrained(DIR). Mapping: docs/CHECKPOINT_FORMAT.md.");
  sub->add_option("--checkpoint", args->checkpoint,
                  "A step_*.h5 file, or a run or checkpoints directory (its newest checkpoint)")
      ->required();
  sub->add_option("--format", args->format, "Export format: hf (Hugging Face Llama, the only one so far)")
      ->capture_default_str();
  sub->add_option("--output,-o", args->output, "Directory to write (created if needed)")->required();
  sub->add_flag("--overwrite", args->overwrite, "Replace an export already in --output");
  sub->callback([args] { run_export(*args); });
}

}  // namespace

PICO_COMMAND(40, register_export);

}  // namespace pico::apps
