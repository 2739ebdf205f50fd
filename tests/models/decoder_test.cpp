#include "pico/models/decoder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "pico/common/error.h"
#include "support/npy.h"
#include "support/test_util.h"

namespace pico::models {
namespace {

ModelConfig tiny(std::int64_t kv_heads = 2) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.vocab_size = 97;
  c.max_seq_len = 24;
  c.attention_n_heads = 4;
  c.attention_n_kv_heads = kv_heads;
  c.activation_hidden_dim = 64;
  c.norm_eps = 1e-6;
  c.position_emb_theta = 10000;
  return c;
}

TEST(Decoder, ParameterNamesFollowPicoTrain) {
  PicoDecoder m(tiny());
  std::vector<std::string> names;
  std::int64_t count = 0;
  for (const auto& [n, p] : m->named_params()) {
    names.push_back(n);
    count += p.numel();
  }
  EXPECT_EQ(count, tiny().num_params());
  for (const char* expected :
       {"embedding_proj.weight", "layers.0.attention_norm.weight", "layers.0.attention.q_proj.weight",
        "layers.0.attention.k_proj.weight", "layers.0.attention.v_proj.weight", "layers.0.attention.o_proj.weight",
        "layers.1.swiglu_norm.weight", "layers.1.swiglu.w_0.weight", "layers.1.swiglu.w_1.weight",
        "layers.1.swiglu.w_2.weight", "output_norm.weight", "de_embedding_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  const auto ld = m->modules_matching({"attention.v_proj", "attention.o_proj", "swiglu.w_2"});
  EXPECT_EQ(
      ld, (std::vector<std::string>{"layers.0.attention.v_proj", "layers.0.attention.o_proj", "layers.0.swiglu.w_2",
                                    "layers.1.attention.v_proj", "layers.1.attention.o_proj", "layers.1.swiglu.w_2"}));
}

TEST(Decoder, InitializationIsDeterministicPerSeed) {
  PicoDecoder a(tiny(), 5), b(tiny(), 5), c(tiny(), 6);
  const auto pa = a->named_params(), pb = b->named_params(), pc = c->named_params();
  for (std::size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  EXPECT_FALSE(torch::equal(pa[0].second, pc[0].second));
}

TEST(Decoder, IsCausal) {
  torch::manual_seed(0);
  for (std::int64_t kv : {1, 2, 4}) {
    PicoDecoder m(tiny(kv), 1);
    auto tokens = torch::randint(0, 97, {2, 20}, torch::kLong);
    const auto base = m->forward(tokens);
    for (std::int64_t t : {0, 5, 18}) {
      auto changed = tokens.clone();
      changed.narrow(1, t + 1, 20 - t - 1).random_(0, 97);
      const auto out = m->forward(changed);
      // Positions <= t see exactly the same inputs: bitwise equal outputs.
      EXPECT_TRUE(torch::equal(out.narrow(1, 0, t + 1), base.narrow(1, 0, t + 1))) << "kv " << kv << " t " << t;
      EXPECT_FALSE(torch::allclose(out.narrow(1, t + 1, 1), base.narrow(1, t + 1, 1)));
    }
  }
}

TEST(Decoder, MatchesIndependentPythonReference) {
  for (std::int64_t kv : {1, 2, 4}) {
    const auto cfg = tiny(kv);
    PicoDecoder m(cfg, 3);
    {  // larger weights than the init so that every part of the network matters
      torch::NoGradGuard g;
      for (auto& [n, p] : m->named_params()) p.normal_(n.find("norm") != std::string::npos ? 1.0 : 0.0, 0.3);
    }
    test::TempDir dir;
    for (const auto& [n, p] : m->named_params()) test::save_npy(dir.file(n + ".npy"), p);
    auto tokens = torch::randint(0, cfg.vocab_size, {3, cfg.max_seq_len}, torch::kLong);
    test::save_npy(dir.file("tokens.npy"), tokens);
    std::ofstream(dir.file("config.json"))
        << "{\"d_model\":" << cfg.d_model << ",\"n_layers\":" << cfg.n_layers
        << ",\"attention_n_heads\":" << cfg.attention_n_heads
        << ",\"attention_n_kv_heads\":" << cfg.attention_n_kv_heads << ",\"norm_eps\":" << cfg.norm_eps
        << ",\"position_emb_theta\":" << cfg.position_emb_theta << "}";
    const auto r = test::run_command(test::python() + " " + test::source_dir() + "/tests/python/decoder_reference.py " +
                                     dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto ref = test::load_npy(dir.file("reference_logits.npy"));
    torch::NoGradGuard g;
    const auto mine = m->forward(tokens).to(torch::kFloat64);
    ASSERT_EQ(mine.sizes(), ref.sizes());
    // float32 against a float64 reference: a relative error of 1e-5 of the logits' scale.
    const double scale = ref.abs().max().item<double>();
    const double err = (mine - ref).abs().max().item<double>();
    EXPECT_LT(err, 1e-5 * scale) << "kv_heads " << kv << ": max |pico - reference| = " << err << " (scale " << scale
                                 << ")";
  }
}

TEST(Decoder, RecordsModuleOutputs) {
  PicoDecoder m(tiny(), 1);
  ActivationRecorder rec;
  rec.suffixes = {"attention.v_proj", "swiglu.w_2"};
  m->forward(torch::randint(0, 97, {2, 10}, torch::kLong), &rec);
  ASSERT_EQ(rec.outputs.size(), 4u);
  EXPECT_EQ(rec.outputs.at("layers.1.attention.v_proj").sizes(), (std::vector<std::int64_t>{2, 10, 16}));
  EXPECT_EQ(rec.outputs.at("layers.0.swiglu.w_2").sizes(), (std::vector<std::int64_t>{2, 10, 32}));
}

TEST(Decoder, LossIsCrossEntropyAndTooLongInputsAreRefused) {
  PicoDecoder m(tiny(), 1);
  auto x = torch::randint(0, 97, {2, 8}, torch::kLong);
  auto y = torch::randint(0, 97, {2, 8}, torch::kLong);
  const double loss = m->loss(x, y).item<double>();
  // freshly initialized: close to uniform over 97 tokens
  EXPECT_NEAR(loss, std::log(97.0), 0.2);
  EXPECT_THROW(m->forward(torch::zeros({1, 25}, torch::kLong)), Error);
}

TEST(ModelConfig, ValidateNamesTheKey) {
  auto c = tiny();
  c.attention_n_kv_heads = 3;
  try {
    c.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_n_kv_heads"), std::string::npos);
  }
  c = tiny();
  c.d_model = 30;
  EXPECT_THROW(c.validate(), Error);
}

}  // namespace
}  // namespace pico::models
