#include <gtest/gtest.h>

#include "pico/common/error.h"
#include "pico/trainer/config_io.h"
#include "support/test_util.h"

namespace pico::trainer {
namespace {

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_run_config(yaml, "test.yaml", overrides);
  } catch (const Error& e) {
    return std::string(e.what()) + " | HINT: " + e.hint();
  }
  return "";
}

TEST(Config, DefaultsFollowPicoTrain) {
  const RunConfig c = parse_run_config("", "empty");
  EXPECT_EQ(c.model.d_model, 768);
  EXPECT_EQ(c.model.n_layers, 12);
  EXPECT_EQ(c.model.vocab_size, 50304);
  EXPECT_EQ(c.model.max_seq_len, 2048);
  EXPECT_EQ(c.model.attention_n_heads, 12);
  EXPECT_EQ(c.model.attention_n_kv_heads, 4);
  EXPECT_EQ(c.model.activation_hidden_dim, 3072);
  EXPECT_DOUBLE_EQ(c.model.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.training.optimization.lr, 3e-4);
  EXPECT_EQ(c.training.optimization.lr_scheduler, "linear_with_warmup");
  EXPECT_EQ(c.checkpointing.runs_dir, "runs");
  EXPECT_EQ(c.checkpointing.learning_dynamics.layer_suffixes,
            (std::vector<std::string>{"attention.v_proj", "attention.o_proj", "swiglu.w_2"}));
}

TEST(Config, ReadsYamlAndOverrides) {
  const RunConfig c = parse_run_config(
      "model:\n  d_model: 64\n  attention_n_heads: 4\n  attention_n_kv_heads: 2\n"
      "training:\n  max_steps: 7\n  optimization:\n    lr: 1.0e-3\n    lr_scheduler: cosine\n"
      "data:\n  dataloader:\n    batch_size: 4\n"
      "checkpointing:\n  learning_dynamics:\n    layer_suffixes: [swiglu.w_2]\n",
      "test.yaml", {"training.max_steps=9", "device=cpu", "checkpointing.learning_dynamics.layer_suffixes=[a, b]"});
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.training.max_steps, 9);
  EXPECT_DOUBLE_EQ(c.training.optimization.lr, 1e-3);
  EXPECT_EQ(c.training.optimization.lr_scheduler, "cosine");
  EXPECT_EQ(c.data.batch_size, 4);
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.checkpointing.learning_dynamics.layer_suffixes, (std::vector<std::string>{"a", "b"}));
}

TEST(Config, ResolvedYamlRoundTrips) {
  RunConfig c = parse_run_config("model:\n  d_model: 96\n  attention_n_heads: 4\n", "x",
                                 {"seed=7", "training.optimization.lr=0.00123"});
  const RunConfig back = parse_run_config(to_yaml(c), "resolved");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_EQ(back.model.d_model, 96);
  EXPECT_EQ(back.seed, 7);
  EXPECT_DOUBLE_EQ(back.training.optimization.lr, 0.00123);
}

TEST(Config, UnknownKeysSuggestTheRightOne) {
  auto e = error_of("model:\n  d_modle: 64\n");
  EXPECT_NE(e.find("unknown config key 'model.d_modle'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'model.d_model'"), std::string::npos) << e;
  e = error_of("", {"runs_dir=/tmp"});
  EXPECT_NE(e.find("checkpointing.runs_dir"), std::string::npos) << e;
  e = error_of("trainin:\n  max_steps: 3\n");
  EXPECT_NE(e.find("unknown config key"), std::string::npos) << e;
}

TEST(Config, WrongTypesNameKeyAndValue) {
  auto e = error_of("training:\n  max_steps: lots\n");
  EXPECT_NE(e.find("training.max_steps"), std::string::npos) << e;
  EXPECT_NE(e.find("expects int"), std::string::npos) << e;
  EXPECT_NE(e.find("'lots'"), std::string::npos) << e;
  e = error_of("model:\n  d_model: 1.5\n");
  EXPECT_NE(e.find("model.d_model"), std::string::npos) << e;
  e = error_of("model: 3\n");
  EXPECT_NE(e.find("is a section"), std::string::npos) << e;
  e = error_of("data:\n  verify: maybe\n");
  EXPECT_NE(e.find("data.verify"), std::string::npos) << e;
  e = error_of("model:\n  d_model: [1, 2]\n");
  EXPECT_NE(e.find("got a list"), std::string::npos) << e;
  e = error_of("training:\n  optimization:\n    lr_scheduler: exponential\n");
  EXPECT_NE(e.find("linear_with_warmup, cosine, constant"), std::string::npos) << e;
  e = error_of("model: [\n");
  EXPECT_NE(e.find("cannot parse test.yaml"), std::string::npos) << e;
}

TEST(Config, OutOfRangeValuesSayWhatIsAllowed) {
  auto e = error_of("training:\n  max_steps: 0\n");
  EXPECT_NE(e.find("training.max_steps"), std::string::npos) << e;
  EXPECT_NE(e.find("> 0"), std::string::npos) << e;
  e = error_of("model:\n  d_model: 100\n  attention_n_heads: 12\n");
  EXPECT_NE(e.find("not divisible"), std::string::npos) << e;
  e = error_of(
      "data:\n  dataloader:\n    batch_size: 10\ntraining:\n  optimization:\n    gradient_accumulation_steps: 3\n");
  EXPECT_NE(e.find("gradient_accumulation_steps"), std::string::npos) << e;
  e = error_of("checkpointing:\n  keep_latest_k: 1\n");
  EXPECT_NE(e.find(">= 2"), std::string::npos) << e;
  e = error_of("", {"device=tpu"});
  EXPECT_NE(e.find("auto, cpu, cuda"), std::string::npos) << e;
  e = error_of("", {"training.optimization.beta2=1.5"});
  EXPECT_NE(e.find("training.optimization.beta2"), std::string::npos) << e;
  e = error_of("", {"no_equals_sign"});
  EXPECT_NE(e.find("section.key=value"), std::string::npos) << e;
}

TEST(Config, MissingFileIsAClearError) {
  try {
    load_run_config("/nonexistent/config.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/config.yaml"), std::string::npos);
  }
}

TEST(Config, RunNameDefaultsToTheFileName) {
  test::TempDir dir;
  test::write_text(dir.file("my-run.yaml"), "seed: 1\n");
  EXPECT_EQ(load_run_config(dir.file("my-run.yaml")).checkpointing.run_name, "my-run");
}

}  // namespace
}  // namespace pico::trainer
