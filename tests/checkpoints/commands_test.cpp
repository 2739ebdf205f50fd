// pico checkpoint inspect, export --format hf, eval and generate, against independent
// python references, plus their errors on bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "fixture.h"
#include "pico/checkpoints/hf_export.h"
#include "pico/common/fs.h"
#include "pico/data/tokenizer.h"
#include "pico/trainer/inference.h"
#include "support/npy.h"

namespace pico::test {
namespace {

namespace fs = std::filesystem;

class Commands : public CheckpointFixture {
 protected:
  static void SetUpTestSuite() {
    CheckpointFixture::SetUpTestSuite();
    trainer::TrainOptions o;
    o.overwrite = true;
    trainer::run_training(config("trained", {"training.max_steps=30"}), o);
    // ~600 tokens of text: many windows of 33 tokens and a shorter last one of >= 2.
    const std::string text = read_file(test_data("kjv_small.txt"));
    const auto tok = data::Tokenizer::load(dir_->file("ds/tokenizer.model"));
    std::size_t len = 2500;
    while (tok.encode(text.substr(text.size() / 2, len)).size() % 33 < 2) len += 7;
    write_text(dir_->file("eval.txt"), text.substr(text.size() / 2, len));
  }
  static std::string trained() { return ckpt("trained", "step_000030.h5"); }
};

TEST_F(Commands, InspectShowsTheCheckpointAndVerifiesItsChecksums) {
  auto r = run_command(pico("checkpoint inspect " + trained()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s :
       {"step 30", "tokens 7680", "2 layers, d_model 64", "/model/embedding_proj.weight", "[512, 64]",
        "/optim/inner/layers.1.swiglu.w_2.weight/exp_avg_sq", "/learning_dynamics/val/activations/layers.1.swiglu.w_2",
        "float32", "embedded", "datasets read back intact", "SHA-256 matches"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  EXPECT_EQ(r.output.find("FAILED"), std::string::npos) << r.output;
  // A run directory resolves to its newest checkpoint.
  r = run_command(pico("checkpoint inspect --groups-only " + run_dir("trained")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step_000030.h5"), std::string::npos) << r.output;

  // A damaged copy: the bad dataset is named, the exit status is 1, with a HINT.
  fs::copy_file(trained(), ckpt("trained", "step_000031.h5"));
  const std::string copy = ckpt("trained", "step_000031.h5");
  const auto bytes = read_file(copy);
  // Damage the middle of /model/embedding_proj.weight (its first row is a known byte run).
  const auto d = checkpoints::read_checkpoint(trained(), {{"/learning_dynamics", "/optim"}});
  const auto& emb = d.tensor("/model", "embedding_proj.weight");
  const auto pos = bytes.find(std::string(static_cast<const char*>(emb.data_ptr()), 256));
  ASSERT_NE(pos, std::string::npos);
  flip_bytes(copy, static_cast<std::int64_t>(pos) + 100);
  r = run_command(pico("checkpoint inspect " + copy));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAILED: Fletcher32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("failed verification"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  fs::remove(copy);
}

TEST_F(Commands, HfExportGivesTheSameLogitsAsPicoUnderHuggingFaceConventions) {
  const std::string out = dir_->file("hf");
  auto r = run_command(pico("export --checkpoint " + trained() + " --format hf --output " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f :
       {"model.safetensors", "config.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const auto cfg = nlohmann::json::parse(read_file(out + "/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["hidden_size"], 64);
  EXPECT_EQ(cfg["intermediate_size"], 128);
  EXPECT_EQ(cfg["num_hidden_layers"], 2);
  EXPECT_EQ(cfg["num_attention_heads"], 4);
  EXPECT_EQ(cfg["num_key_value_heads"], 2);
  EXPECT_EQ(cfg["max_position_embeddings"], 32);
  EXPECT_EQ(cfg["vocab_size"], 512);
  EXPECT_EQ(cfg["rms_norm_eps"], 1e-6);
  EXPECT_EQ(cfg["rope_theta"], 10000.0);
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["hidden_act"], "silu");
  EXPECT_EQ(cfg["bos_token_id"], 1);
  EXPECT_EQ(cfg["eos_token_id"], 2);
  EXPECT_EQ(read_file(out + "/tokenizer.model"), read_file(dir_->file("ds/tokenizer.model")));
  // Same tensors as the checkpoint, under Llama names.
  const auto st = checkpoints::read_safetensors(out + "/model.safetensors");
  const auto d = checkpoints::read_checkpoint(trained(), {{"/learning_dynamics", "/optim"}});
  EXPECT_EQ(st.size(), d.in_group("/model").size());
  for (const auto& [name, t] : st)
    EXPECT_TRUE(torch::equal(t, d.tensor("/model", checkpoints::pico_name_from_hf(name)))) << name;

  // pico's logits for a window of real text, and the reference's from the export alone.
  r = run_command(pico("eval --checkpoint " + trained() + " --text-file " + dir_->file("eval.txt") + " --save-logits " +
                       dir_->file("pico")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* dtype : {"float32", "float64"}) {
    r = run_command(python() + " " + source_dir() + "/tests/python/llama_reference.py " + out + " " +
                    dir_->file("pico.tokens.npy") + " " + dir_->file(std::string("ref_") + dtype + ".npy") + " " +
                    dtype);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto ref = load_npy(dir_->file(std::string("ref_") + dtype + ".npy"));
    const auto mine = load_npy(dir_->file("pico.logits.npy"));
    ASSERT_EQ(ref.sizes(), mine.sizes());
    EXPECT_EQ(mine.size(1), 32);
    const double diff = (mine.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>();
    std::cout << "[ export ] max |pico - HF-convention reference (" << dtype << ")| = " << diff << " over "
              << mine.numel() << " logits (scale " << ref.abs().max().item<double>() << ")\n";
    EXPECT_LT(diff, 1e-4) << dtype;  // the bound for fp32 CPU
  }
}

TEST_F(Commands, EvalMatchesAnIndependentPythonComputation) {
  auto r = run_command(pico("eval --checkpoint " + trained() + " --text-file " + dir_->file("eval.txt")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The JSON line is the only thing on stdout; the log goes to stderr.
  const auto out = run_command(
      "(" + pico("eval --checkpoint " + trained() + " --text-file " + dir_->file("eval.txt") + " --batch-size 3") +
      " 2>/dev/null)");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  const auto j = nlohmann::json::parse(out.output);
  ASSERT_EQ(j.size(), 3u) << out.output;
  r = run_command(python() + " " + source_dir() + "/tests/python/checkpoint_reference.py eval " + trained() + " " +
                  dir_->file("eval.txt") + " " + dir_->file("eval_ref.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ref = nlohmann::json::parse(read_text(dir_->file("eval_ref.json")));
  // Same windows ⇒ same number of predicted tokens: N − ⌈N/33⌉ (one unpredicted token per window).
  const std::int64_t n = ref["text_tokens"];
  EXPECT_GT(n % 33, 1) << "the text should end in a shorter window of >= 2 tokens";
  EXPECT_EQ(j["tokens"].get<std::int64_t>(), n - (n + 32) / 33);
  EXPECT_EQ(j["tokens"], ref["tokens"]);
  // float32 model against a float64 reference
  EXPECT_NEAR(j["loss"].get<double>(), ref["loss"].get<double>(), 2e-5 * ref["loss"].get<double>());
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(j["loss"].get<double>()), 1e-9 * j["ppl"].get<double>());
  EXPECT_LT(j["loss"].get<double>(), std::log(512.0)) << "a trained model beats uniform guessing";
  // A text of one token, a missing file.
  write_text(dir_->file("one.txt"), "a");
  r = run_command(pico("eval --checkpoint " + trained() + " --text-file " + dir_->file("one.txt")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("at least 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  r = run_command(pico("eval --checkpoint " + trained() + " --text-file " + dir_->file("missing.txt")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir_->file("missing.txt")), std::string::npos) << r.output;
}

TEST_F(Commands, GreedyGenerationIsTheModelsArgmaxAndSamplingIsReproducible) {
  torch::set_num_threads(2);
  auto m = trainer::load_model(trained());
  const auto tok = trainer::load_tokenizer(m);
  const std::string prompt = "And God said";
  const auto ids = tok.encode(prompt);
  trainer::GenerateOptions g;
  g.temperature = 0;
  g.max_new_tokens = 40;  // longer than max_seq_len: the context window slides
  std::vector<std::int32_t> streamed;
  const auto greedy = trainer::generate(m.model, ids, g, [&](std::int32_t id) { streamed.push_back(id); });
  ASSERT_EQ(greedy.size(), 40u);
  EXPECT_EQ(streamed, greedy);
  {  // the argmax of the model's logits, step by step, computed here
    torch::NoGradGuard no_grad;
    std::vector<std::int32_t> ctx = ids;
    for (std::size_t i = 0; i < greedy.size(); ++i) {
      const std::size_t n = std::min<std::size_t>(32, ctx.size());
      auto x = torch::empty({1, static_cast<std::int64_t>(n)}, torch::kLong);
      for (std::size_t k = 0; k < n; ++k) x.data_ptr<std::int64_t>()[k] = ctx[ctx.size() - n + k];
      const auto logits = m.model->forward(x)[0][static_cast<std::int64_t>(n) - 1];
      const auto best = logits.argmax().item<std::int64_t>();
      ASSERT_EQ(greedy[i], best) << "token " << i;
      ctx.push_back(static_cast<std::int32_t>(best));
    }
  }
  // top-k 1 sampling is greedy; a seed fixes a sample; another seed gives another one.
  trainer::GenerateOptions s;
  s.temperature = 1.0;
  s.top_k = 1;
  s.max_new_tokens = 40;
  EXPECT_EQ(trainer::generate(m.model, ids, s), greedy);
  s.top_k = 0;
  s.temperature = 1.5;
  s.seed = 3;
  const auto a = trainer::generate(m.model, ids, s), b = trainer::generate(m.model, ids, s);
  EXPECT_EQ(a, b);
  s.seed = 4;
  EXPECT_NE(trainer::generate(m.model, ids, s), a);

  // The CLI streams the same greedy text, twice the same.
  const std::string cmd = "(" +
                          pico("generate --checkpoint " + trained() + " --prompt \"" + prompt +
                               "\" --temperature 0 --max-new-tokens 40 --threads 2") +
                          " 2>/dev/null)";
  const auto r1 = run_command(cmd), r2 = run_command(cmd);
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  EXPECT_EQ(r1.output, r2.output);
  std::vector<std::int32_t> all = ids;
  all.insert(all.end(), greedy.begin(), greedy.end());
  const std::string full = tok.decode(all), base = tok.decode(ids);
  ASSERT_EQ(full.rfind(base, 0), 0u);
  EXPECT_EQ(r1.output, prompt + full.substr(base.size()) + "\n");
  const std::string sample = "(" +
                             pico("generate --checkpoint " + trained() + " --prompt \"" + prompt +
                                  "\" --temperature 1.2 --top-k 20 --seed 11 -n 30") +
                             " 2>/dev/null)";
  EXPECT_EQ(run_command(sample).output, run_command(sample).output);

  auto r = run_command(pico("generate --checkpoint " + trained() + " --prompt hi --temperature -1"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  r = run_command(pico("generate --checkpoint " + trained() + " --prompt \"\""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
}

TEST_F(Commands, BadInputGetsAClearErrorNamingTheFile) {
  write_text(dir_->file("garbage.h5"), "not a checkpoint");
  write_text(dir_->file("h5.txt"), "some text to evaluate");
  fs::create_directories(dir_->file("emptydir"));
  struct Case {
    std::string args, expect;
  };
  for (const auto& c : std::vector<Case>{
           {"export --checkpoint " + trained() + " --format onnx --output " + dir_->file("x"), "--format hf"},
           {"export --checkpoint " + dir_->file("nope.h5") + " --output " + dir_->file("x"), dir_->file("nope.h5")},
           {"export --checkpoint " + dir_->file("garbage.h5") + " --output " + dir_->file("x"), "not an HDF5 file"},
           {"eval --checkpoint " + dir_->file("emptydir") + " --text-file " + dir_->file("h5.txt"), "no checkpoint"},
           {"eval --checkpoint " + dir_->file("garbage.h5") + " --text-file " + dir_->file("h5.txt"),
            dir_->file("garbage.h5")},
           {"generate --checkpoint " + dir_->file("garbage.h5") + " --prompt hi", dir_->file("garbage.h5")},
           {"checkpoint inspect " + dir_->file("garbage.h5"), dir_->file("garbage.h5")},
           {"checkpoint inspect " + dir_->file("h5.txt"), "not an HDF5 file"}}) {
    const auto r = run_command(pico(c.args));
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("HINT"), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("terminate"), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace pico::test
