// tests/checkpoints/fixture.h — a prepared tiny dataset and helpers shared by the
// checkpoint, resume and command tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pico/data/prepare.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/trainer.h"
#include "support/test_util.h"

namespace pico::test {

class CheckpointFixture : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data::PrepareOptions o;
    o.inputs = {test_data("kjv_small.txt")};
    o.output_dir = dir_->file("ds");
    o.vocab_size = 512;
    o.num_shards = 2;
    data::prepare_dataset(o);
  }
  static void TearDownTestSuite() { delete dir_; }

  // A ~0.2M-parameter model, 20 steps of 8 × 32 tokens, a checkpoint every 5 steps,
  // metrics every step. `extra` is appended YAML (top-level keys only).
  static std::string yaml(const std::string& run_name, const std::string& extra = "") {
    return "model: {d_model: 64, n_layers: 2, vocab_size: 512, max_seq_len: 32, attention_n_heads: 4,"
           " attention_n_kv_heads: 2, activation_hidden_dim: 128}\n"
           "training: {max_steps: 20, optimization: {lr: 3.0e-3, lr_scheduler: cosine, lr_warmup_steps: 4}}\n"
           "data: {path: " +
           dir_->file("ds") +
           ", dataloader: {batch_size: 8}}\n"
           "evaluation: {every_n_steps: 10, batches: 2}\n"
           "checkpointing: {runs_dir: " +
           dir_->file("runs") + ", run_name: " + run_name +
           ", save_every_n_steps: 5, keep_latest_k: 3, learning_dynamics: {batch_size: 4}}\n"
           "monitoring: {logging: {log_every_n_steps: 1}}\n"
           "threads: 2\nseed: 7\n" +
           extra;
  }
  static trainer::RunConfig config(const std::string& run_name, const std::vector<std::string>& overrides = {}) {
    return trainer::parse_run_config(yaml(run_name), "test config", overrides);
  }
  // Writes the config as a file for the CLI; returns its path.
  static std::string config_file(const std::string& run_name) {
    const std::string path = dir_->file(run_name + ".yaml");
    write_text(path, yaml(run_name));
    return path;
  }
  static std::string run_dir(const std::string& run_name) { return dir_->file("runs/" + run_name); }
  static std::string ckpt(const std::string& run_name, const std::string& file) {
    return run_dir(run_name) + "/checkpoints/" + file;
  }
  static std::string pico(const std::string& args) { return pico_binary() + " " + args; }

  static std::vector<nlohmann::json> metrics(const std::string& run_name) {
    std::vector<nlohmann::json> out;
    std::ifstream in(run_dir(run_name) + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  // The training trajectory of a metrics file: every field that must be bit-identical
  // between an uninterrupted and a resumed run (not timings).
  static void expect_same_trajectory(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      for (const char* key : {"step", "tokens", "loss", "lr", "grad_norm", "val_loss"}) {
        ASSERT_EQ(a[i].contains(key), b[i].contains(key)) << "line " << i << " key " << key;
        if (a[i].contains(key)) {
          EXPECT_EQ(a[i][key].dump(), b[i][key].dump()) << "line " << i << " key " << key;
        }
      }
    }
  }

  // Flips `count` bytes starting at `offset` (offset < 0: from the end).
  static void flip_bytes(const std::string& path, std::int64_t offset, int count = 4) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = static_cast<std::int64_t>(std::filesystem::file_size(path));
    const std::int64_t at = offset < 0 ? size + offset : offset;
    for (int i = 0; i < count; ++i) {
      f.seekg(at + i);
      char c = 0;
      f.get(c);
      f.seekp(at + i);
      f.put(static_cast<char>(c ^ 0x5a));
    }
  }

  static TempDir* dir_;
};

inline TempDir* CheckpointFixture::dir_ = nullptr;

}  // namespace pico::test
