// Saving during training and resuming: bit-exact continuation (in process and through the
// CLI), SIGKILL mid-save, corrupt/truncated/wrong-version fallbacks, config mismatches,
// and the content of a training checkpoint checked against h5py and a python reference.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "fixture.h"
#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/models/decoder.h"

namespace pico::test {
namespace {

namespace fs = std::filesystem;
using Resume = CheckpointFixture;

// The uninterrupted 20-step run every resumed run is compared with.
std::vector<nlohmann::json> uninterrupted(const std::string& name) {
  trainer::TrainOptions o;
  o.overwrite = true;  // the binary may run several tests in one process
  trainer::run_training(CheckpointFixture::config(name), o);
  return CheckpointFixture::metrics(name);
}

void expect_same_tensors(const std::string& a, const std::string& b, const std::string& group) {
  const auto da = checkpoints::read_checkpoint(a), db = checkpoints::read_checkpoint(b);
  const auto ta = da.tensors, tb = db.tensors;
  std::size_t n = 0;
  for (const auto& e : ta) {
    if (e.group.rfind(group, 0) != 0) continue;
    const auto* o = db.find(e.group, e.name);
    ASSERT_NE(o, nullptr) << e.path();
    EXPECT_TRUE(torch::equal(e.tensor, o->tensor)) << e.path() << " differs between " << a << " and " << b;
    ++n;
  }
  EXPECT_GT(n, 0u) << group;
}

TEST_F(Resume, InProcessResumeReproducesTheUninterruptedRunBitForBit) {
  const auto a = uninterrupted("full");
  ASSERT_EQ(a.size(), 20u);
  trainer::TrainOptions stop;
  stop.stop_after_step = 7;  // not a multiple of save_every_n_steps: the stop itself saves
  const auto first = trainer::run_training(config("resumed"), stop);
  EXPECT_EQ(first.steps, 7);
  EXPECT_TRUE(fs::exists(ckpt("resumed", "step_000005.h5")));
  EXPECT_TRUE(fs::exists(ckpt("resumed", "step_000007.h5")));
  EXPECT_EQ(metrics("resumed").size(), 7u);
  trainer::TrainOptions resume;
  resume.resume = true;
  const auto second = trainer::run_training(config("resumed"), resume);
  EXPECT_EQ(second.steps, 20);
  EXPECT_EQ(second.tokens, (20 - 7) * 8 * 32);  // what this invocation trained (the summary's tokens)
  expect_same_trajectory(a, metrics("resumed"));
  // Not only the losses: the final weights and AdamW moments are identical.
  expect_same_tensors(ckpt("full", "step_000020.h5"), ckpt("resumed", "step_000020.h5"), "/model");
  expect_same_tensors(ckpt("full", "step_000020.h5"), ckpt("resumed", "step_000020.h5"), "/optim/inner");
  expect_same_tensors(ckpt("full", "step_000020.h5"), ckpt("resumed", "step_000020.h5"), "/learning_dynamics");
  // keep_latest_k = 3 of 5, 10, 15, 20 (and the stop at 7), with a manifest and a latest pointer.
  checkpoints::CheckpointDir dir(run_dir("resumed") + "/checkpoints", 3);
  const auto files = dir.list();
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].second, "step_000020.h5");
  EXPECT_EQ(files[2].second, "step_000010.h5");
  EXPECT_EQ(dir.latest(), "step_000020.h5");
  for (const auto& e : dir.manifest()) EXPECT_EQ(e.sha256, sha256_file(dir.path_of(e.file))) << e.file;
}

TEST_F(Resume, CommandLineResumeAutoResumeAndMetricsTruncation) {
  const auto a = uninterrupted("full");
  const std::string cfg = config_file("cli");
  auto r = run_command(pico("train --config " + cfg + " --stop-after-step 12"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(metrics("cli").size(), 12u);
  // Drop the newest checkpoint: the run continues from step 10 and must redo 11 and 12,
  // so metrics.jsonl is cut back to step 10 first.
  fs::remove(ckpt("cli", "step_000012.h5"));
  r = run_command(pico("train --config " + cfg + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpt("cli", "step_000010.h5")), std::string::npos) << r.output;
  expect_same_trajectory(a, metrics("cli"));

  // checkpointing.auto_resume: a second process continues a run stopped at step 5.
  const std::string cfg2 = config_file("auto");
  r = run_command(pico("train --config " + cfg2 + " --stop-after-step 5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(pico("train --config " + cfg2 + " --set checkpointing.auto_resume=true"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  expect_same_trajectory(a, metrics("auto"));
  // Resuming a finished run is a no-op.
  r = run_command(pico("train --config " + cfg2 + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_trajectory(a, metrics("auto"));
}

// Starts `command` (through sh, exec'd, so the pid is pico's) with output to `log`.
pid_t spawn(const std::string& command, const std::string& log, const std::string& env) {
  const std::string sh = "PICO_FAULT_CHECKPOINT_PAUSE=" + env + " exec " + command + " > " + log + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls between fork and exec
    ::execl("/bin/sh", "sh", "-c", sh.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

TEST_F(Resume, SigkillDuringASaveLeavesThePreviousCheckpointIntact) {
  const auto a = uninterrupted("full");
  const std::string cfg = config_file("killed");
  const std::string dir = run_dir("killed") + "/checkpoints";
  // The save of step 10 pauses half-way through writing its temporary file.
  const pid_t pid = spawn(pico("train --config " + cfg), dir_->file("killed.log"), "step_000010.h5:120");
  ASSERT_GT(pid, 0);
  std::string tmp;
  for (int i = 0; i < 600 && tmp.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename().string().rfind(".step_000010.h5.tmp.", 0) == 0) tmp = it->path().string();
  }
  ASSERT_FALSE(tmp.empty()) << "the save of step 10 never started: " << read_text(dir_->file("killed.log"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // well inside the 120 s pause
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;

  // The previous checkpoint is complete, listed, pointed to, and verifies.
  EXPECT_TRUE(fs::exists(tmp)) << "the half-written temporary should still be there";
  EXPECT_FALSE(fs::exists(dir + "/step_000010.h5"));
  checkpoints::CheckpointDir cd(dir, 3);
  EXPECT_EQ(cd.latest(), "step_000005.h5");
  const auto entry = cd.manifest_entry("step_000005.h5");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->sha256, sha256_file(dir + "/step_000005.h5"));
  auto r = run_command(pico("checkpoint inspect " + dir + "/step_000005.h5"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SHA-256 matches"), std::string::npos) << r.output;
  EXPECT_EQ(checkpoints::read_checkpoint(dir + "/step_000005.h5").attr_int("/train_state", "step"), 5);
  // The half-written temporary is not a checkpoint.
  EXPECT_THROW(checkpoints::read_checkpoint(tmp), checkpoints::CorruptCheckpoint);

  // Resume continues from step 5, removes the stale temporary, and reproduces the run.
  r = run_command(pico("train --config " + cfg + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + dir + "/step_000005.h5"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp));
  expect_same_trajectory(a, metrics("killed"));
}

TEST_F(Resume, CorruptNewestCheckpointIsQuarantinedAndResumeFallsBack) {
  const auto a = uninterrupted("full");
  const std::string cfg = config_file("fallback");
  auto r = run_command(pico("train --config " + cfg + " --stop-after-step 15"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string newest = ckpt("fallback", "step_000015.h5");
  flip_bytes(newest, static_cast<std::int64_t>(fs::file_size(newest) / 2));
  r = run_command(pico("train --config " + cfg + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cannot use " + newest), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SHA-256"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpt("fallback", "step_000010.h5")), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(newest + ".invalid"));
  expect_same_trajectory(a, metrics("fallback"));
}

TEST_F(Resume, WhenNoCheckpointIsUsableTheErrorListsEveryReason) {
  const std::string cfg = config_file("broken");
  auto r = run_command(pico("train --config " + cfg + " --stop-after-step 15"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string s5 = ckpt("broken", "step_000005.h5"), s10 = ckpt("broken", "step_000010.h5"),
                    s15 = ckpt("broken", "step_000015.h5");
  // 15: truncated, and unknown to the manifest (as after a crash between rename and manifest).
  const std::string bytes = read_file(s15);
  write_text(s15, bytes.substr(0, bytes.size() * 6 / 10));
  auto j = nlohmann::json::parse(read_file(run_dir("broken") + "/checkpoints/manifest.json"));
  j["checkpoints"].erase(j["checkpoints"].size() - 1);
  write_text(run_dir("broken") + "/checkpoints/manifest.json", j.dump());
  // 10: a wrong format version (and so a different SHA-256, which is found first: drop it
  // from the manifest too so the version check itself is exercised).
  r = run_command(python() + " -c \"import h5py; f = h5py.File('" + s10 +
                  "', 'r+'); f.attrs['format_version'] = 7; f.close()\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  j["checkpoints"].erase(j["checkpoints"].size() - 1);
  write_text(run_dir("broken") + "/checkpoints/manifest.json", j.dump());
  // 5: a flipped byte in the data (caught by the manifest's SHA-256).
  flip_bytes(s5, static_cast<std::int64_t>(fs::file_size(s5) / 2));

  r = run_command(pico("train --config " + cfg + " --resume"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("none of the 3 checkpoints"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("format version 7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SHA-256"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
  for (const auto& f : {s5, s10, s15}) EXPECT_TRUE(fs::exists(f + ".invalid")) << f;
}

TEST_F(Resume, ConfigThatDoesNotMatchTheCheckpointIsRefusedWithAHint) {
  const std::string cfg = config_file("mismatch");
  auto r = run_command(pico("train --config " + cfg + " --stop-after-step 5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string base = pico("train --config " + cfg + " --resume ");
  struct Case {
    std::string set, expect;
  };
  // A second dataset (another tokenizer): same shapes, different dataset hash.
  r = run_command(pico("data prepare --input " + test_data("kjv_small.txt") + " --output " + dir_->file("ds2") +
                       " --vocab-size 400 --shards 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& c : std::vector<Case>{{"model.d_model=32", "model.d_model = 64"},
                                         {"model.n_layers=3", "model.n_layers"},
                                         {"seed=8", "seed = 7"},
                                         {"data.dataloader.batch_size=4", "data.dataloader.batch_size"},
                                         {"data.path=" + dir_->file("ds2"), "holds dataset"},
                                         // --local: a demo run of one contributor would host a broker
                                         {"outer.algorithm=demo --local", "outer.algorithm = ddp"},
                                         {"local_workers=2", "local_workers = 2"}}) {
    r = run_command(base + "--set " + c.set);
    EXPECT_EQ(r.exit_code, 1) << c.set << ": " << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.set << ": " << r.output;
    EXPECT_NE(r.output.find("HINT"), std::string::npos) << c.set << ": " << r.output;
    EXPECT_TRUE(fs::exists(ckpt("mismatch", "step_000005.h5"))) << "a valid file must not be quarantined";
  }
  // A changed learning rate is allowed, with a warning that the run will differ.
  r = run_command(base + "--set training.optimization.lr=0.001");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("will differ"), std::string::npos) << r.output;
}

TEST_F(Resume, AFreshStartRefusesToDiscardCheckpointsUnlessOverwriting) {
  const std::string cfg = config_file("fresh");
  auto r = run_command(pico("train --config " + cfg + " --stop-after-step 5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::remove(run_dir("fresh") + "/metrics.jsonl");  // only the checkpoints are left
  r = run_command(pico("train --config " + cfg + " --stop-after-step 3"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("already holds 1 checkpoints"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  r = run_command(pico("train --config " + cfg + " --stop-after-step 3 --overwrite"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(ckpt("fresh", "step_000005.h5")));
  EXPECT_TRUE(fs::exists(ckpt("fresh", "step_000003.h5")));
}

TEST_F(Resume, TrainingCheckpointFollowsTheLayoutAndItsLearningDynamicsMatchAReference) {
  trainer::TrainOptions stop;
  stop.stop_after_step = 5;
  const auto cfg = config("layout");
  trainer::run_training(cfg, stop);
  const std::string path = ckpt("layout", "step_000005.h5");
  const auto d = checkpoints::read_checkpoint(path);
  for (const char* g : {"/train_state", "/model", "/optim/inner", "/optim/outer", "/learning_dynamics/train/weights",
                        "/learning_dynamics/train/gradients", "/learning_dynamics/train/activations",
                        "/learning_dynamics/val/weights", "/pseudo_gradient", "/tokenizer"})
    EXPECT_TRUE(d.has_group(g)) << g;
  EXPECT_EQ(d.attr_int("/train_state", "step"), 5);
  EXPECT_EQ(d.attr_int("/train_state", "round"), 0);
  // A lone contributor without an outer optimizer: /optim/outer and /pseudo_gradient are empty.
  for (const auto& e : d.tensors) {
    EXPECT_NE(e.group.rfind("/optim/outer", 0), 0u) << e.path();
    EXPECT_NE(e.group.rfind("/pseudo_gradient", 0), 0u) << e.path();
  }
  EXPECT_EQ(d.attrs.count("/optim/outer"), 0u);
  EXPECT_EQ(d.attr_int("/train_state", "tokens"), 5 * 8 * 32);
  EXPECT_EQ(d.attr_int("/train_state", "data_cursor"), 5 * 8);
  EXPECT_EQ(d.attr_int("/optim/inner", "step"), 5);
  EXPECT_GT(d.tensor("/train_state/rng", "torch_cpu").numel(), 1000);  // the mt19937 state
  EXPECT_EQ(trainer::parse_run_config(d.config_yaml, "ckpt").model.d_model, 64);
  // The embedded tokenizer is the dataset's, byte for byte.
  const auto tok = d.tensor("/tokenizer", "model");
  EXPECT_EQ(std::string(static_cast<const char*>(tok.data_ptr()), static_cast<std::size_t>(tok.numel())),
            read_file(dir_->file("ds/tokenizer.model")));
  // /model in the pico-decoder's parameter order, /optim/inner per parameter.
  models::PicoDecoder m(cfg.model);
  const auto params = m->named_params();
  const auto stored = d.in_group("/model");
  ASSERT_EQ(stored.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(stored[i]->name, params[i].first);
    EXPECT_EQ(stored[i]->tensor.sizes(), params[i].second.sizes());
    EXPECT_EQ(d.tensor("/optim/inner/" + params[i].first, "exp_avg_sq").sizes(), params[i].second.sizes());
  }
  // Learning dynamics: 3 modules × 2 layers, activations (batch, out) at the last token.
  const auto acts = d.in_group("/learning_dynamics/train/activations");
  ASSERT_EQ(acts.size(), 6u);
  EXPECT_EQ(acts[0]->name, "layers.0.attention.v_proj");
  EXPECT_EQ(acts[0]->tensor.sizes(), (std::vector<std::int64_t>{4, 32}));  // kv heads 2 × head dim 16
  EXPECT_EQ(d.attr_int("/learning_dynamics/train", "sequence_idx"), 31);
  EXPECT_EQ(d.attr_int("/learning_dynamics/train", "first_sample"), 4 * 8);  // step 5's batch
  // The independent reference recomputes weights, gradients and activations from /model.
  const auto r = run_command(python() + " " + source_dir() + "/tests/python/checkpoint_reference.py ld " + path + " " +
                             dir_->file("ld.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(read_text(dir_->file("ld.json")));
  for (const char* split : {"train", "val"}) {
    ASSERT_TRUE(j.contains(split)) << split;
    const auto& s = j[split];
    EXPECT_EQ(s["num_samples"], 4);
    EXPECT_EQ(s["max_rel_err"]["weights"].get<double>(), 0.0) << split << ": weights must equal /model";
    // float32 training against a float64 reference
    EXPECT_LT(s["max_rel_err"]["gradients"].get<double>(), 1e-4) << split;
    EXPECT_LT(s["max_rel_err"]["activations"].get<double>(), 1e-4) << split;
    EXPECT_NEAR(s["loss"].get<double>(), s["saved_loss"].get<double>(), 1e-5) << split;
  }
  // Every chunked dataset carries Fletcher32, as h5py sees it.
  const auto lr = run_command(python() + " " + source_dir() + "/tests/python/checkpoint_reference.py layout " + path +
                              " " + dir_->file("layout.json"));
  ASSERT_EQ(lr.exit_code, 0) << lr.output;
  const auto lj = nlohmann::json::parse(read_text(dir_->file("layout.json")));
  std::size_t chunked = 0;
  for (const auto& [name, ds] : lj["datasets"].items()) {
    if (ds["chunks"].empty()) continue;
    ++chunked;
    EXPECT_TRUE(ds["fletcher32"].get<bool>()) << name;
  }
  EXPECT_GT(chunked, 50u);
}

// A local DiLoCo run: 2 contributors (threads of one process), rounds of 4 inner steps.
const char* kDiLoCo = "local_workers: 2\nouter: {algorithm: diloco, inner_steps: 4, lr: 0.7, momentum: 0.9}\n";

trainer::RunConfig diloco_config(const std::string& name) {
  return trainer::parse_run_config(CheckpointFixture::yaml(name, kDiLoCo), "test config");
}

std::string contributor_ckpt(const std::string& name, int w, const std::string& file) {
  return CheckpointFixture::run_dir(name) + "/checkpoints/contributor_" + std::to_string(w) + "/" + file;
}

// metrics.jsonl of a run with several contributors, keyed independently of the order the
// threads wrote in: "step S contributor W" for step records, "round R" for round records.
std::map<std::string, nlohmann::json> keyed(const std::vector<nlohmann::json>& records) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& r : records) {
    const std::string key = r.contains("step") ? str("step ", r["step"].get<std::int64_t>(), " contributor ",
                                                     r["contributor"].get<std::int64_t>())
                                               : str("round ", r["round"].get<std::int64_t>());
    EXPECT_EQ(out.count(key), 0u) << "duplicate record " << key;
    out[key] = r;
  }
  return out;
}

TEST_F(Resume, TwoContributorDiLoCoResumesBitForBitFromTheStepAllContributorsHave) {
  trainer::TrainOptions fresh;
  fresh.overwrite = true;
  trainer::run_training(diloco_config("dfull"), fresh);
  const auto a = keyed(metrics("dfull"));
  ASSERT_EQ(a.size(), 2u * 20u + 5u);  // 20 steps × 2 contributors, 5 rounds

  trainer::TrainOptions stop = fresh;
  stop.stop_after_step = 7;  // inside round 2 (steps 5–8); saves at 5 and 7
  trainer::run_training(diloco_config("dres"), stop);
  for (int w : {0, 1}) {
    EXPECT_TRUE(fs::exists(contributor_ckpt("dres", w, "step_000005.h5"))) << w;
    EXPECT_TRUE(fs::exists(contributor_ckpt("dres", w, "step_000007.h5"))) << w;
  }
  const auto before = keyed(metrics("dres"));
  ASSERT_EQ(before.size(), 2u * 7u + 1u);
  // Contributor 1's newest checkpoint is damaged: it can only go back to step 5, so both do.
  const std::string bad = contributor_ckpt("dres", 1, "step_000007.h5");
  flip_bytes(bad, static_cast<std::int64_t>(fs::file_size(bad) / 2));
  trainer::TrainOptions resume;
  resume.resume = true;
  const auto second = trainer::run_training(diloco_config("dres"), resume);
  EXPECT_EQ(second.steps, 20);
  EXPECT_TRUE(fs::exists(bad + ".invalid"));

  // Every step's loss, lr, gradient norm and validation loss, and every round's θ_g hash
  // and pseudo-gradient norm, equal the uninterrupted run's.
  const auto b = keyed(metrics("dres"));
  ASSERT_EQ(b.size(), a.size());
  // It continued from step 5: the records up to step 5 are the first run's own (same wall
  // clock stamps), steps 6 and 7 were redone.
  for (const char* key : {"step 5 contributor 0", "step 5 contributor 1", "round 1"})
    EXPECT_EQ(b.at(key)["elapsed_s"].dump(), before.at(key)["elapsed_s"].dump()) << key;
  for (const char* key : {"step 6 contributor 0", "step 7 contributor 1"})
    EXPECT_NE(b.at(key)["elapsed_s"].dump(), before.at(key)["elapsed_s"].dump()) << key;
  for (const auto& [key, ra] : a) {
    ASSERT_EQ(b.count(key), 1u) << key;
    const auto& rb = b.at(key);
    for (const char* field : {"tokens", "loss", "lr", "grad_norm", "val_loss", "theta_hash", "pseudo_grad_norm",
                              "round_tokens", "contributors_in_sync"}) {
      ASSERT_EQ(ra.contains(field), rb.contains(field)) << key << " " << field;
      if (ra.contains(field)) {
        EXPECT_EQ(ra[field].dump(), rb[field].dump()) << key << " " << field;
      }
    }
  }
  // The final checkpoints are identical, outer state included.
  for (int w : {0, 1}) {
    const std::string fa = contributor_ckpt("dfull", w, "step_000020.h5"),
                      fb = contributor_ckpt("dres", w, "step_000020.h5");
    for (const char* g : {"/model", "/optim/inner", "/optim/outer", "/pseudo_gradient"}) expect_same_tensors(fa, fb, g);
    const auto da = checkpoints::read_checkpoint(fa), db = checkpoints::read_checkpoint(fb);
    EXPECT_EQ(da.attrs.at("/optim/outer"), db.attrs.at("/optim/outer"));
    EXPECT_EQ(db.attr_int("/train_state", "round"), 5);
  }
}

TEST_F(Resume, DiLoCoCheckpointHoldsThetaGMomentumAndEachContributorsPseudoGradient) {
  trainer::TrainOptions stop;
  stop.overwrite = true;
  stop.stop_after_step = 5;  // one round (steps 1–4) and one step of the next
  const auto cfg = diloco_config("dlayout");
  trainer::run_training(cfg, stop);
  checkpoints::CheckpointData d[2];
  for (int w : {0, 1}) {
    d[w] = checkpoints::read_checkpoint(contributor_ckpt("dlayout", w, "step_000005.h5"));
    EXPECT_EQ(d[w].attr_int("/train_state", "step"), 5);
    EXPECT_EQ(d[w].attr_int("/train_state", "round"), 1);
    EXPECT_EQ(d[w].attr_int("/train_state", "contributor_index"), w);
    EXPECT_EQ(d[w].attr_int("/train_state", "contributors"), 2);
    EXPECT_EQ(d[w].attr_int("/optim/outer", "step"), 1);
    EXPECT_EQ(d[w].attr_int("/optim/outer", "round_tokens"), 8 * 32);  // step 5 of round 2
  }
  // An independent check of round 1 from the initial weights θ₀ (the seed's) and both
  // contributors' Δ_w: equal token weights, so Δ̄ = (Δ₀ + Δ₁)/2, b = Δ̄ (first outer step),
  // θ_g = θ₀ − lr·(Δ̄ + μ·b) (Nesterov). fp32 with each operation rounded, as DiLoCo does.
  models::PicoDecoder init(cfg.model, static_cast<std::uint64_t>(cfg.seed));
  const auto lr = torch::tensor(0.7f), mu = torch::tensor(0.9f);
  std::size_t n = 0;
  for (const auto& [name, p0] : init->named_params()) {
    const auto& delta0 = d[0].tensor("/pseudo_gradient", name);
    const auto& delta1 = d[1].tensor("/pseudo_gradient", name);
    ASSERT_EQ(delta0.sizes(), p0.sizes()) << name;
    EXPECT_FALSE(torch::equal(delta0, delta1)) << name << ": the contributors read different data";
    EXPECT_GT(delta0.abs().max().item<float>(), 0.0f) << name;
    const auto mean = delta0 * 0.5f + delta1 * 0.5f;
    const auto& b = d[0].tensor("/optim/outer/" + name, "momentum");
    EXPECT_TRUE(torch::allclose(b, mean, /*rtol=*/0, /*atol=*/1e-7)) << name;
    const auto theta = p0.detach() - lr * (mean + mu * mean);
    EXPECT_TRUE(torch::allclose(d[0].tensor("/optim/outer/theta_g", name), theta, 1e-6, 1e-7)) << name;
    // Both contributors hold the same θ_g and momentum, bit for bit.
    EXPECT_TRUE(torch::equal(d[0].tensor("/optim/outer/theta_g", name), d[1].tensor("/optim/outer/theta_g", name)));
    EXPECT_TRUE(torch::equal(b, d[1].tensor("/optim/outer/" + name, "momentum")));
    ++n;
  }
  EXPECT_GT(n, 10u);
  // Standard HDF5 readers see the same layout.
  const auto r =
      run_command(python() + " -c \"import h5py; f = h5py.File('" + contributor_ckpt("dlayout", 0, "step_000005.h5") +
                  "', 'r'); o = f['optim/outer']; print(len(o['theta_g']), len(f['pseudo_gradient']), "
                  "int(o.attrs['step']), o['embedding_proj.weight/momentum'].shape)\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(str(n, " ", n, " 1 (512, 64)")), std::string::npos) << r.output;
}

// --- DeMo: δ (the decoupled momentum, which is also its error feedback) is in /optim/outer.

const char* kDeMo = "local_workers: 2\nouter: {algorithm: demo, demo: {compression_topk: 8, compression_chunk: 16}}\n";

trainer::RunConfig demo_config(const std::string& name) {
  return trainer::parse_run_config(CheckpointFixture::yaml(name, kDeMo), "test config");
}

TEST_F(Resume, TwoContributorDeMoResumesBitForBit) {
  trainer::TrainOptions fresh;
  fresh.overwrite = true;
  trainer::run_training(demo_config("mfull"), fresh);
  const auto a = keyed(metrics("mfull"));
  ASSERT_EQ(a.size(), 2u * 20u);  // DeMo has no rounds

  trainer::TrainOptions stop = fresh;
  stop.stop_after_step = 7;  // saves at 5 and 7
  trainer::run_training(demo_config("mres"), stop);
  // The checkpoint holds δ for every parameter (parameter shape) and DeMo's step count, and
  // δ differs between the contributors (each folds in its own gradients and keeps what it
  // did not send).
  const auto d0 = checkpoints::read_checkpoint(contributor_ckpt("mres", 0, "step_000007.h5"));
  const auto d1 = checkpoints::read_checkpoint(contributor_ckpt("mres", 1, "step_000007.h5"));
  EXPECT_EQ(d0.attr_int("/optim/outer", "step"), 7);
  std::size_t n = 0;
  for (const auto* e : d0.in_group("/model")) {
    const auto& delta = d0.tensor("/optim/outer/" + e->name, "delta");
    EXPECT_EQ(delta.sizes(), e->tensor.sizes()) << e->name;
    EXPECT_GT(delta.abs().max().item<float>(), 0.0f) << e->name;
    EXPECT_FALSE(torch::equal(delta, d1.tensor("/optim/outer/" + e->name, "delta"))) << e->name;
    // Every contributor applies the same sign step: the weights agree bit for bit.
    EXPECT_TRUE(torch::equal(e->tensor, d1.tensor("/model", e->name))) << e->name;
    ++n;
  }
  EXPECT_GT(n, 10u);

  trainer::TrainOptions resume;
  resume.resume = true;
  const auto second = trainer::run_training(demo_config("mres"), resume);
  EXPECT_EQ(second.steps, 20);
  const auto b = keyed(metrics("mres"));
  ASSERT_EQ(b.size(), a.size());
  for (const auto& [key, ra] : a) {
    ASSERT_EQ(b.count(key), 1u) << key;
    for (const char* field : {"tokens", "loss", "lr", "grad_norm", "val_loss", "bytes_sent"}) {
      ASSERT_EQ(ra.contains(field), b.at(key).contains(field)) << key << " " << field;
      if (ra.contains(field)) {
        if (std::string(field) == "bytes_sent") continue;  // counts this process's traffic only
        EXPECT_EQ(ra[field].dump(), b.at(key)[field].dump()) << key << " " << field;
      }
    }
  }
  for (int w : {0, 1}) {
    const std::string fa = contributor_ckpt("mfull", w, "step_000020.h5"),
                      fb = contributor_ckpt("mres", w, "step_000020.h5");
    for (const char* g : {"/model", "/optim/outer"}) expect_same_tensors(fa, fb, g);
    EXPECT_EQ(checkpoints::read_checkpoint(fb).attr_int("/optim/outer", "step"), 20);
  }
}

// --- --comm zmq: one process per contributor, each resuming from its own directory.

// A run's config file with `extra` appended; returns its path.
std::string config_file_with(const std::string& name, const std::string& extra) {
  const std::string path = CheckpointFixture::dir_->file(name + ".yaml");
  write_text(path, CheckpointFixture::yaml(name, extra));
  return path;
}

// metrics.jsonl of a run whose contributors are processes: each process writes its own
// round records, so rounds are keyed by contributor too.
std::map<std::string, nlohmann::json> keyed_by_process(const std::vector<nlohmann::json>& records) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& r : records) {
    const std::string what = r.contains("step") ? str("step ", r["step"].get<std::int64_t>())
                                                : str("round ", r["round"].get<std::int64_t>());
    const std::string key = str(what, " contributor ", r["contributor"].get<std::int64_t>());
    EXPECT_EQ(out.count(key), 0u) << "duplicate record " << key;
    out[key] = r;
  }
  return out;
}

// Process ids whose command line contains `needle` (the contributor processes of a run).
std::vector<pid_t> processes_with(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(it->path().string() + "/cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

TEST_F(Resume, ZmqProcessesStoppedThenKilledResumeBitForBit) {
  const std::string zfull = config_file_with("zfull", kDiLoCo), zres = config_file_with("zres", kDiLoCo);
  auto r = run_command(pico("train --config " + zfull + " --comm zmq"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto a = keyed_by_process(metrics("zfull"));
  ASSERT_EQ(a.size(), 2u * 20u + 2u * 5u);  // 20 steps and 5 rounds, each recorded by both processes

  // 1. Stop after step 7 (inside round 2), then resume in processes that are SIGKILLed
  //    (launcher and contributors) once step 12 is recorded: checkpoints exist for 5, 7, 10.
  r = run_command(pico("train --config " + zres + " --comm zmq --stop-after-step 7"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(keyed_by_process(metrics("zres")).size(), 2u * 7u + 2u);
  for (int w : {0, 1}) EXPECT_TRUE(fs::exists(contributor_ckpt("zres", w, "step_000007.h5"))) << w;
  const std::string log = dir_->file("zres.log");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const std::string cmd = "exec " + pico("train --config " + zres + " --comm zmq --resume") + " > " + log + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  bool reached = false;
  for (int i = 0; i < 1200 && !reached; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (const auto& rec : metrics("zres"))
      reached = reached || (rec.contains("step") && rec["step"].get<std::int64_t>() >= 12);
  }
  ASSERT_TRUE(reached) << read_text(log);
  // Only the launcher is killed: its contributor processes must not outlive it.
  const std::string workers = run_dir("zres") + "/rendezvous";
  ASSERT_EQ(processes_with(workers).size(), 2u) << read_text(log);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = processes_with(workers).empty();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!gone)
    for (pid_t p : processes_with(workers)) ::kill(p, SIGKILL);
  EXPECT_TRUE(gone) << "contributor processes outlived their SIGKILLed launcher";
  const auto killed = keyed_by_process(metrics("zres"));
  EXPECT_LT(killed.size(), a.size());

  // 2. Resume again: from the newest step both contributors have; metrics.jsonl keeps the
  //    records up to it and gets the rest, each exactly once.
  r = run_command(pico("train --config " + zres + " --comm zmq --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + contributor_ckpt("zres", 1, "step_")), std::string::npos) << r.output;
  const auto b = keyed_by_process(metrics("zres"));
  ASSERT_EQ(b.size(), a.size());
  // The records of steps 1–7 are the first process's own (same wall-clock stamps).
  EXPECT_EQ(b.at("step 3 contributor 1")["elapsed_s"].dump(), killed.at("step 3 contributor 1")["elapsed_s"].dump());
  for (const auto& [key, ra] : a) {
    ASSERT_EQ(b.count(key), 1u) << key;
    for (const char* field :
         {"tokens", "loss", "lr", "grad_norm", "val_loss", "theta_hash", "pseudo_grad_norm", "round_tokens"}) {
      ASSERT_EQ(ra.contains(field), b.at(key).contains(field)) << key << " " << field;
      if (ra.contains(field)) {
        EXPECT_EQ(ra[field].dump(), b.at(key)[field].dump()) << key << " " << field;
      }
    }
  }
  for (int w : {0, 1}) {
    const std::string fa = contributor_ckpt("zfull", w, "step_000020.h5"),
                      fb = contributor_ckpt("zres", w, "step_000020.h5");
    for (const char* g : {"/model", "/optim/inner", "/optim/outer", "/pseudo_gradient"}) expect_same_tensors(fa, fb, g);
  }

  // 3. The same run with threads of one process (the same ring arithmetic, the same intra-op
  //    thread count): bit-identical too, so a run may be resumed with either communicator.
  trainer::TrainOptions fresh;
  fresh.overwrite = true;
  trainer::run_training(diloco_config("zthreads"), fresh);
  const auto t = keyed(metrics("zthreads"));
  for (const auto& [key, rt] : t) {
    const std::string k = key.rfind("round", 0) == 0 ? key + " contributor 0" : key;
    ASSERT_EQ(a.count(k), 1u) << k;
    for (const char* field : {"loss", "grad_norm", "val_loss", "theta_hash"})
      if (rt.contains(field)) {
        EXPECT_EQ(rt[field].dump(), a.at(k)[field].dump()) << k << " " << field;
      }
  }

  // 4. Bad input: a contributor's checkpoint directory is missing; another config.
  fs::rename(run_dir("zfull") + "/checkpoints/contributor_1", run_dir("zfull") + "/c1");
  r = run_command(pico("train --config " + zfull + " --comm zmq --resume"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("contributor_1 is missing"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  fs::rename(run_dir("zfull") + "/c1", run_dir("zfull") + "/checkpoints/contributor_1");
  r = run_command(pico("train --config " + zfull + " --comm zmq --resume --set seed=8 --set outer.timeout_s=20"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("seed = 7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HINT"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pico::test
