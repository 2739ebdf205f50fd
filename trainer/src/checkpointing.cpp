// A training run's state ↔ CheckpointData; learning dynamics; resume (checkpointing.h).
#include "pico/trainer/checkpointing.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"
#include "pico/data/sampler.h"
#include "pico/trainer/config_io.h"

namespace pico::trainer {
namespace {

using checkpoints::CheckpointData;
using checkpoints::CorruptCheckpoint;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A host copy that never aliases the source (.to(kCPU) alone returns the same CPU tensor).
torch::Tensor host_copy(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, t.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
}

const char* kTrainState = "/train_state";
const char* kModel = "/model";
const char* kOptimInner = "/optim/inner";
const char* kExpAvg = ".exp_avg";
const char* kExpAvgSq = ".exp_avg_sq";

std::string fmt_mb(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

// Torch's default generators: the CPU one, and each CUDA device's when CUDA is present.
std::vector<std::pair<std::string, at::Generator>> default_generators() {
  std::vector<std::pair<std::string, at::Generator>> out;
  out.emplace_back("torch_cpu", at::detail::getDefaultCPUGenerator());
  if (torch::cuda::is_available()) {
    const auto n = static_cast<int>(torch::cuda::device_count());
    for (int i = 0; i < n; ++i)
      out.emplace_back(str("torch_cuda_", i), at::globalContext().defaultGenerator(
                                                  torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i))));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------

namespace {
const char* kOptimOuter = "/optim/outer";
const char* kThetaG = "theta_g";
const char* kPseudoGradient = "/pseudo_gradient";
}  // namespace

void add_outer_state(const OuterStateIO& outer, CheckpointData& d) {
  for (const auto& [name, t] : outer.outer_state()) {
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) {
      PICO_CHECK(t.numel() == 1 && !t.is_floating_point(), "outer state scalar '", name, "' is not one integer");
      d.set_attr(kOptimOuter, name, t.to(torch::kCPU).to(torch::kInt64).item<std::int64_t>());
      continue;
    }
    const std::string param = name.substr(0, dot), field = name.substr(dot + 1);
    PICO_CHECK(!param.empty() && !field.empty(), "outer state name '", name, "' is not <param>.<field>");
    if (field == kThetaG)
      d.add(std::string(kOptimOuter) + "/" + kThetaG, param, host_copy(t));
    else
      d.add(std::string(kOptimOuter) + "/" + param, field, host_copy(t));
  }
  for (const auto& [name, t] : outer.pseudo_gradient()) d.add(kPseudoGradient, name, host_copy(t));
}

optim::NamedTensors read_outer_state(const CheckpointData& d) {
  optim::NamedTensors out;
  const std::string prefix = std::string(kOptimOuter) + "/";
  const std::string theta_group = prefix + kThetaG;
  for (const auto& e : d.tensors) {
    if (e.group.rfind(prefix, 0) != 0) continue;
    if (e.group == theta_group)
      out.emplace_back(e.name + "." + kThetaG, e.tensor);
    else
      out.emplace_back(e.group.substr(prefix.size()) + "." + e.name, e.tensor);
  }
  if (const auto it = d.attrs.find(kOptimOuter); it != d.attrs.end()) {
    for (const auto& [name, v] : it->second) {
      if (const auto* i = std::get_if<std::int64_t>(&v)) out.emplace_back(name, torch::tensor({*i}, torch::kLong));
    }
  }
  return out;
}

optim::NamedTensors read_pseudo_gradient(const CheckpointData& d) {
  optim::NamedTensors out;
  for (const auto* e : d.in_group(kPseudoGradient)) out.emplace_back(e->name, e->tensor);
  return out;
}

void capture_learning_dynamics(models::PicoDecoder& model, const torch::Tensor& inputs, const torch::Tensor& targets,
                               const LearningDynamicsConfig& ld, const std::string& group, CheckpointData& out) {
  torch::AutoGradMode grad_mode(true);
  const auto modules = model->modules_matching(ld.layer_suffixes);
  std::map<std::string, torch::Tensor> params;
  for (auto& [name, p] : model->named_params()) params[name] = p;
  std::vector<torch::Tensor> weights;  // (out, in) each
  for (const auto& m : modules) {
    auto it = params.find(m + ".weight");
    PICO_CHECK(it != params.end(), "learning-dynamics module ", m, " has no weight");
    weights.push_back(it->second);
  }
  models::ActivationRecorder recorder;
  recorder.suffixes = ld.layer_suffixes;
  const torch::Tensor loss = model->loss(inputs, targets, &recorder);
  std::vector<torch::Tensor> grads;
  if (!weights.empty())
    grads = torch::autograd::grad({loss}, weights, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                  /*create_graph=*/false, /*allow_unused=*/true);
  const std::int64_t T = inputs.size(1);
  const std::int64_t pos = ld.sequence_idx < 0 ? T + ld.sequence_idx : ld.sequence_idx;
  if (pos < 0 || pos >= T)
    throw Error(str("checkpointing.learning_dynamics.sequence_idx = ", ld.sequence_idx, " is outside sequences of ", T,
                    " tokens"),
                "use -1 (the last token) or an index below model.max_seq_len");
  out.add(group, "input_ids", host_copy(inputs));    // (B, T)
  out.add(group, "target_ids", host_copy(targets));  // (B, T): input_ids shifted by one token
  for (std::size_t i = 0; i < modules.size(); ++i) {
    out.add(group + "/weights", modules[i], host_copy(weights[i]));
    out.add(group + "/gradients", modules[i],
            grads[i].defined() ? host_copy(grads[i]) : torch::zeros_like(weights[i], torch::kCPU));
    auto act = recorder.outputs.find(modules[i]);
    PICO_CHECK(act != recorder.outputs.end(), "no recorded output for ", modules[i]);
    out.add(group + "/activations", modules[i], host_copy(act->second.select(1, pos)));  // (B, out)
  }
  out.set_attr(group, "loss", loss.item<double>());
  out.set_attr(group, "num_samples", inputs.size(0));
  out.set_attr(group, "sequence_length", T);
  out.set_attr(group, "sequence_idx", pos);
}

CheckpointData gather_state(const RunConfig& cfg, Contributor& c, const TrainState& state,
                            const std::string& tokenizer_model, const OuterStateIO* outer) {
  CheckpointData d;
  d.config_yaml = to_yaml(cfg);
  const auto& manifest = c.dataset().manifest();

  // /train_state: counters, the data cursor (the sample sequence is a pure function of
  // seed, shards and sample index, so the index is the whole loader state), RNG states.
  d.set_attr(kTrainState, "step", state.step);
  d.set_attr(kTrainState, "round", state.round);
  d.set_attr(kTrainState, "tokens", state.tokens);
  d.set_attr(kTrainState, "data_cursor", state.step * cfg.data.batch_size);
  d.set_attr(kTrainState, "data_seed", cfg.seed);
  d.set_attr(kTrainState, "data_path", cfg.data.path);
  d.set_attr(kTrainState, "dataset_hash", manifest.dataset_hash);
  d.set_attr(kTrainState, "contributor_index", static_cast<std::int64_t>(c.index()));
  d.set_attr(kTrainState, "contributors", cfg.local_workers);
  if (!state.run_id.empty()) d.set_attr(kTrainState, "run_id", state.run_id);
  std::vector<std::int64_t> shards(c.shards().begin(), c.shards().end());
  d.add(kTrainState, "shards", torch::tensor(shards, torch::kLong));
  for (auto& [name, gen] : default_generators()) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    d.add(std::string(kTrainState) + "/rng", name, gen.get_state().clone());
  }

  // /tokenizer: the sentencepiece model itself, so eval/generate/export need no dataset.
  d.set_attr("/tokenizer", "sha256", sha256_hex(tokenizer_model));
  d.set_attr("/tokenizer", "file_name", manifest.tokenizer_file);
  d.set_attr("/tokenizer", "vocab_size", static_cast<std::int64_t>(manifest.vocab_size));
  auto tok = torch::empty({static_cast<std::int64_t>(tokenizer_model.size())}, torch::kUInt8);
  std::memcpy(tok.data_ptr(), tokenizer_model.data(), tokenizer_model.size());
  d.add("/tokenizer", "model", tok);

  // /model and /optim/inner.
  for (const auto& [name, p] : c.model()->named_params()) d.add(kModel, name, host_copy(p));
  const auto& opt = c.inner_optimizer();
  d.set_attr(kOptimInner, "type", std::string("adamw"));
  d.set_attr(kOptimInner, "step", opt.step_count());
  const auto& a = cfg.training.optimization.adamw;
  d.set_attr(kOptimInner, "beta1", a.beta1);
  d.set_attr(kOptimInner, "beta2", a.beta2);
  d.set_attr(kOptimInner, "eps", a.eps);
  d.set_attr(kOptimInner, "weight_decay", a.weight_decay);
  for (const auto& [key, t] : opt.state()) {
    // "<param>.exp_avg" → /optim/inner/<param>/exp_avg
    const bool sq = ends_with(key, kExpAvgSq);
    const std::string suffix = sq ? kExpAvgSq : kExpAvg;
    PICO_CHECK(ends_with(key, suffix), "unexpected optimizer state name ", key);
    d.add(std::string(kOptimInner) + "/" + key.substr(0, key.size() - suffix.size()), suffix.substr(1), host_copy(t));
  }
  d.add_group(kOptimOuter);
  d.add_group(kPseudoGradient);
  if (outer != nullptr) add_outer_state(*outer, d);
  return d;
}

void gather_learning_dynamics(const RunConfig& cfg, Contributor& c, const TrainState& state, CheckpointData& d) {
  // /learning_dynamics: "train" = the first ld.batch_size samples of the batch of the step
  // just taken; "val" = the first ld.batch_size validation windows (fixed for the run).
  const auto& ld = cfg.checkpointing.learning_dynamics;
  d.set_attr("/learning_dynamics", "layer_suffixes", join(ld.layer_suffixes, ","));
  d.set_attr("/learning_dynamics", "batch_size", ld.batch_size);
  d.set_attr("/learning_dynamics", "sequence_idx", ld.sequence_idx);
  d.set_attr("/learning_dynamics", "step", state.step);
  const torch::Device dev = c.device();
  {
    const std::uint64_t first =
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, state.step - 1) * cfg.data.batch_size);
    const data::Batch b = c.sampler().batch(first, ld.batch_size);
    capture_learning_dynamics(c.model(), ids_to_tensor(b.inputs, ld.batch_size, b.seq_len, dev),
                              ids_to_tensor(b.targets, ld.batch_size, b.seq_len, dev), ld, "/learning_dynamics/train",
                              d);
    d.set_attr("/learning_dynamics/train", "first_sample", static_cast<std::int64_t>(first));
  }
  if (c.dataset().num_val_shards() > 0) {
    const data::BatchSampler val(data::val_stream(c.dataset()), cfg.model.max_seq_len,
                                 static_cast<std::uint64_t>(cfg.seed), 0);
    const data::Batch b = val.sequential(0, ld.batch_size);
    capture_learning_dynamics(c.model(), ids_to_tensor(b.inputs, ld.batch_size, b.seq_len, dev),
                              ids_to_tensor(b.targets, ld.batch_size, b.seq_len, dev), ld, "/learning_dynamics/val", d);
    d.set_attr("/learning_dynamics/val", "first_window", std::int64_t{0});
  } else {
    d.set_attr("/learning_dynamics/val", "num_samples", std::int64_t{0});  // the dataset has no validation split
  }
}

CheckpointData gather_checkpoint(const RunConfig& cfg, Contributor& c, const TrainState& state,
                                 const std::string& tokenizer_model, const OuterStateIO* outer) {
  CheckpointData d = gather_state(cfg, c, state, tokenizer_model, outer);
  gather_learning_dynamics(cfg, c, state, d);
  return d;
}

// ---------------------------------------------------------------------------------------

std::vector<std::string> check_resume_compatible(const RunConfig& saved, const std::string& saved_dataset_hash,
                                                 const RunConfig& current, const std::string& current_dataset_hash,
                                                 const std::string& source) {
  auto mismatch = [&](const std::string& key, const auto& was, const auto& now, const std::string& hint) {
    throw Error(str("checkpoint ", source, " was written with ", key, " = ", was, ", this run has ", key, " = ", now),
                hint);
  };
  const auto& a = saved.model;
  const auto& b = current.model;
  const std::string model_hint =
      "a checkpoint only loads into the model shape it was trained with: use the run's config.yaml (or --set the key "
      "back), or start a new run with --overwrite or another checkpointing.run_name";
  if (a.d_model != b.d_model) mismatch("model.d_model", a.d_model, b.d_model, model_hint);
  if (a.n_layers != b.n_layers) mismatch("model.n_layers", a.n_layers, b.n_layers, model_hint);
  if (a.vocab_size != b.vocab_size) mismatch("model.vocab_size", a.vocab_size, b.vocab_size, model_hint);
  if (a.max_seq_len != b.max_seq_len) mismatch("model.max_seq_len", a.max_seq_len, b.max_seq_len, model_hint);
  if (a.attention_n_heads != b.attention_n_heads)
    mismatch("model.attention_n_heads", a.attention_n_heads, b.attention_n_heads, model_hint);
  if (a.attention_n_kv_heads != b.attention_n_kv_heads)
    mismatch("model.attention_n_kv_heads", a.attention_n_kv_heads, b.attention_n_kv_heads, model_hint);
  if (a.activation_hidden_dim != b.activation_hidden_dim)
    mismatch("model.activation_hidden_dim", a.activation_hidden_dim, b.activation_hidden_dim, model_hint);
  if (a.norm_eps != b.norm_eps) mismatch("model.norm_eps", a.norm_eps, b.norm_eps, model_hint);
  if (a.position_emb_theta != b.position_emb_theta)
    mismatch("model.position_emb_theta", a.position_emb_theta, b.position_emb_theta, model_hint);
  const std::string data_hint =
      "the data order is a function of (seed, dataset, batch size): resume with the values the run started with "
      "(RUN_DIR/config.yaml), or start a new run with --overwrite or another checkpointing.run_name";
  if (saved.seed != current.seed) mismatch("seed", saved.seed, current.seed, data_hint);
  if (saved.data.batch_size != current.data.batch_size)
    mismatch("data.dataloader.batch_size", saved.data.batch_size, current.data.batch_size, data_hint);
  const std::string outer_hint =
      "each contributor's checkpoint holds the state of its outer algorithm and its data shards: resume with the "
      "outer.algorithm and local_workers (--local-workers) the run started with (RUN_DIR/config.yaml), or start a new "
      "run with --overwrite or another checkpointing.run_name";
  if (saved.outer.algorithm != current.outer.algorithm)
    mismatch("outer.algorithm", saved.outer.algorithm, current.outer.algorithm, outer_hint);
  if (saved.local_workers != current.local_workers)
    mismatch("local_workers", saved.local_workers, current.local_workers, outer_hint);
  if (saved.outer.error_feedback != current.outer.error_feedback)
    mismatch("outer.error_feedback", saved.outer.error_feedback, current.outer.error_feedback, outer_hint);
  if (saved_dataset_hash != current_dataset_hash)
    throw Error(
        str("checkpoint ", source, " was trained on dataset ", saved_dataset_hash.substr(0, 16), " (", saved.data.path,
            "), but data.path = ", current.data.path, " holds dataset ", current_dataset_hash.substr(0, 16)),
        "point data.path at the dataset the run was started with, or start a new run with --overwrite");
  std::vector<std::string> warnings;
  if (saved.data.path != current.data.path)
    warnings.push_back(
        str("data.path moved from ", saved.data.path, " to ", current.data.path, " (same dataset hash)"));
  auto differs = [&](const std::string& key, const auto& was, const auto& now) {
    if (was != now)
      warnings.push_back(
          str(key, " changed from ", was, " to ", now, ": the continued run will differ from an uninterrupted one"));
  };
  const auto& o1 = saved.training.optimization;
  const auto& o2 = current.training.optimization;
  if (saved.training.max_steps != current.training.max_steps) {
    const auto& sched = current.training.optimization.lr_scheduler;
    warnings.push_back(
        str("training.max_steps changed from ", saved.training.max_steps, " to ", current.training.max_steps,
            sched == "constant" ? std::string(": the run continues to the new length")
                                : str(": the ", sched,
                                      " learning-rate schedule is laid over the new length, so from the "
                                      "resumed step on the learning rate differs from the original run's (the schedule "
                                      "does not restart; it jumps to where the new length puts this step)")));
  }
  differs("training.optimization.lr", o1.lr, o2.lr);
  differs("training.optimization.lr_scheduler", o1.lr_scheduler, o2.lr_scheduler);
  differs("training.optimization.lr_warmup_steps", o1.lr_warmup_steps, o2.lr_warmup_steps);
  differs("training.optimization.min_lr_ratio", o1.min_lr_ratio, o2.min_lr_ratio);
  differs("training.optimization.gradient_accumulation_steps", o1.gradient_accumulation_steps,
          o2.gradient_accumulation_steps);
  differs("training.optimization.max_grad_norm", o1.max_grad_norm, o2.max_grad_norm);
  differs("training.optimization.beta1", o1.adamw.beta1, o2.adamw.beta1);
  differs("training.optimization.beta2", o1.adamw.beta2, o2.adamw.beta2);
  differs("training.optimization.eps", o1.adamw.eps, o2.adamw.eps);
  differs("training.optimization.weight_decay", o1.adamw.weight_decay, o2.adamw.weight_decay);
  differs("outer.inner_steps", saved.outer.inner_steps, current.outer.inner_steps);
  differs("outer.lr", saved.outer.lr, current.outer.lr);
  differs("outer.momentum", saved.outer.momentum, current.outer.momentum);
  differs("outer.nesterov", saved.outer.nesterov, current.outer.nesterov);
  differs("outer.compression", saved.outer.compression, current.outer.compression);
  return warnings;
}

TrainState restore_checkpoint(const CheckpointData& data, const RunConfig& cfg, Contributor& c, OuterStateIO* outer,
                              bool shards_must_match) {
  const std::string& src = data.source.empty() ? std::string("(in memory)") : data.source;
  const RunConfig saved = parse_run_config(data.config_yaml, str("checkpoint ", src, " (/config@yaml)"));
  const std::string saved_hash = data.attr_string(kTrainState, "dataset_hash");
  for (const auto& w : check_resume_compatible(saved, saved_hash, cfg, c.dataset().manifest().dataset_hash, src))
    log_warn("resume: ", w);

  TrainState st;
  st.step = data.attr_int(kTrainState, "step");
  st.round = data.attr_int(kTrainState, "round");
  st.tokens = data.attr_int(kTrainState, "tokens");
  if (st.step < 0 || st.tokens < 0 || st.round < 0)
    throw CorruptCheckpoint(str("checkpoint ", src, " has negative counters (step ", st.step, ")"),
                            "the file is damaged; resume from an older checkpoint");
  const std::int64_t cursor = data.attr_int(kTrainState, "data_cursor");
  if (cursor != st.step * cfg.data.batch_size)
    throw CorruptCheckpoint(str("checkpoint ", src, " has data_cursor ", cursor,
                                ", expected step × batch_size = ", st.step * cfg.data.batch_size),
                            "the file is damaged or was written by an incompatible pico");
  const auto& shards_t = data.tensor(kTrainState, "shards");
  std::vector<std::size_t> shards;
  for (std::int64_t i = 0; i < shards_t.numel(); ++i)
    shards.push_back(static_cast<std::size_t>(shards_t[i].item<std::int64_t>()));
  if (const auto it = data.attrs.find(kTrainState); it != data.attrs.end() && it->second.count("run_id"))
    st.run_id = data.attr_string(kTrainState, "run_id");
  if (shards != c.shards() && !shards_must_match) {
    log_warn("resume: checkpoint ", src,
             " read other train shards than this contributor now reads (its broker gave it "
             "another data slot); it continues on the new ones");
  } else if (shards != c.shards()) {
    auto list = [](const std::vector<std::size_t>& v) {
      std::vector<std::string> parts;
      for (auto x : v) parts.push_back(std::to_string(x));
      return str("[", join(parts, ", "), "]");
    };
    throw Error(str("checkpoint ", src, " belongs to a contributor that read train shards ", list(shards),
                    ", this contributor reads ", list(c.shards())),
                "resume each contributor from its own checkpoints, with the same number of contributors");
  }

  // Validate every tensor before changing anything.
  std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;  // (destination, source)
  auto expect = [&](const std::string& group, const std::string& name, const torch::Tensor& like) {
    const torch::Tensor& t = data.tensor(group, name);
    if (t.sizes() != like.sizes() || t.scalar_type() != like.scalar_type())
      throw Error(str("checkpoint ", src, ": ", group, "/", name, " is ", checkpoints::dtype_name(t.scalar_type()), " ",
                      t.sizes(), ", the model has ", checkpoints::dtype_name(like.scalar_type()), " ", like.sizes()),
                  "the checkpoint does not match this model; use the run's own config");
    return &t;
  };
  for (const auto& [name, p] : c.model()->named_params()) copies.emplace_back(p, expect(kModel, name, p));
  std::vector<std::pair<std::string, torch::Tensor>> opt_state;
  for (const auto& [key, t] : c.inner_optimizer().state()) {
    const bool sq = ends_with(key, kExpAvgSq);
    const std::string suffix = sq ? kExpAvgSq : kExpAvg;
    const torch::Tensor* s =
        expect(std::string(kOptimInner) + "/" + key.substr(0, key.size() - suffix.size()), suffix.substr(1), t);
    opt_state.emplace_back(key, *s);
  }
  const std::int64_t opt_step = data.attr_int(kOptimInner, "step");
  std::vector<std::pair<at::Generator, torch::Tensor>> rng;
  for (auto& [name, gen] : default_generators()) {
    const auto* e = data.find(std::string(kTrainState) + "/rng", name);
    if (e == nullptr) {
      if (name == "torch_cpu")
        throw CorruptCheckpoint(str("checkpoint ", src, " has no /train_state/rng/torch_cpu"),
                                "the file is damaged or was not written by pico train");
      log_warn("resume: checkpoint ", src, " has no state for ", name, " (it was written without that device)");
      continue;
    }
    rng.emplace_back(gen, e->tensor);
  }

  // The outer state last among the checks: load_outer_state validates everything before it
  // changes anything, and nothing of the contributor has changed yet.
  const optim::NamedTensors outer_state = read_outer_state(data);
  if (outer != nullptr) {
    outer->load_outer_state(outer_state);
    outer->load_pseudo_gradient(read_pseudo_gradient(data));
    if (outer->rounds_done() != st.round)
      throw CorruptCheckpoint(
          str("checkpoint ", src, " says ", st.round, " outer rounds were done (/train_state@round), ",
              "its outer state says ", outer->rounds_done()),
          "the file is damaged or was written by an incompatible pico");
  } else if (!outer_state.empty()) {
    throw Error(str("checkpoint ", src, " holds outer-optimizer state (/optim/outer), which this run has no use for"),
                "resume it with the outer.algorithm it was written with");
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [dst, s] : copies) dst.copy_(*s);
  }
  c.inner_optimizer().load_state(opt_state, opt_step);
  for (auto& [gen, state] : rng) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
  return st;
}

// ---------------------------------------------------------------------------------------

RunCheckpointer::RunCheckpointer(const RunConfig& cfg, const data::Dataset& dataset, const std::string& dir)
    : cfg_(cfg),
      tokenizer_model_(read_file(dataset.tokenizer_path())),
      dir_(dir.empty() ? cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir : dir, cfg.checkpointing.keep_latest_k,
           cfg.checkpointing.keep_every_n_steps),
      saver_(std::make_unique<checkpoints::AsyncSaver>(dir_)) {
  if (std::filesystem::exists(dir_.dir())) dir_.remove_stale_temporaries();
}

RunCheckpointer::~RunCheckpointer() = default;  // AsyncSaver's destructor waits

void RunCheckpointer::start_fresh(bool overwrite) {
  const auto files = dir_.list();
  if (files.empty()) return;
  if (!overwrite)
    throw Error(
        str("checkpoint directory ", dir_.dir(), " already holds ", files.size(), " checkpoints (newest ",
            files.front().second, ")"),
        "pass --resume to continue that run, --overwrite to start it over, or --set checkpointing.run_name=NEW");
  for (const auto& [step, name] : files) std::filesystem::remove(dir_.path_of(name));
  std::error_code ec;
  std::filesystem::remove(dir_.manifest_path(), ec);
  std::filesystem::remove(dir_.latest_path(), ec);
  log_info("--overwrite: deleted ", files.size(), " checkpoints of the previous run in ", dir_.dir());
}

std::optional<TrainState> RunCheckpointer::resume(Contributor& c, OuterStateIO* outer, std::int64_t max_step) {
  auto files = dir_.list();
  std::erase_if(files, [&](const auto& f) { return f.first > max_step; });
  if (files.empty()) {
    if (max_step == std::numeric_limits<std::int64_t>::max())
      log_info("resume: no checkpoint in ", dir_.dir(), " yet; starting from step 0");
    else
      log_warn("resume: no checkpoint of step ≤ ", max_step, " in ", dir_.dir());
    return std::nullopt;
  }
  std::vector<std::string> reasons;
  for (const auto& [step, name] : files) {
    const std::string path = dir_.path_of(name);
    const auto t0 = Clock::now();
    try {
      if (auto entry = dir_.manifest_entry(name)) {
        const std::string sha = sha256_file(path);
        if (sha != entry->sha256)
          throw CorruptCheckpoint(str("checkpoint ", path, " has SHA-256 ", sha.substr(0, 16),
                                      "…, its manifest entry says ", entry->sha256.substr(0, 16), "…"),
                                  "the file changed after it was written (disk corruption or a partial copy)");
      } else {
        log_warn("resume: ", path, " is not in ", dir_.manifest_path(),
                 " (a crash after writing it?); relying on its Fletcher32 checksums");
      }
      const auto data = checkpoints::read_checkpoint(path, {{"/learning_dynamics"}});
      if (!member_of_.empty()) {
        const auto it = data.attrs.find(kTrainState);
        const std::string id = it != data.attrs.end() && it->second.count("run_id")
                                   ? data.attr_string(kTrainState, "run_id")
                                   : std::string("(none: a local run)");
        if (id != member_of_)
          throw Error(
              str("checkpoint ", path, " belongs to run ", id, ", this contributor is joining run ", member_of_),
              "resume a member with the join code of the run it was part of, or join this run afresh "
              "without --resume (another --set checkpointing.run_name keeps the old checkpoints)");
      }
      const TrainState st = restore_checkpoint(data, cfg_, c, outer, /*shards_must_match=*/member_of_.empty());
      if (st.step != step)
        throw CorruptCheckpoint(str("checkpoint ", path, " holds step ", st.step, ", its name says ", step),
                                "rename it to step_NNNNNN.h5 for the step it holds, or remove it");
      last_saved_step_ = st.step;
      log_info("resumed from ", path, " (step ", st.step, ", ", st.tokens, " tokens) in ", seconds_since(t0), " s");
      return st;
    } catch (const CorruptCheckpoint& e) {
      log_warn("resume: cannot use ", path, ": ", e.what(), e.hint().empty() ? "" : " HINT: ", e.hint());
      reasons.push_back(str(name, ": ", e.what()));
      dir_.quarantine(name, e.what());
    } catch (const Error& e) {
      log_warn("resume: cannot use ", path, ": ", e.what(), e.hint().empty() ? "" : " HINT: ", e.hint());
      reasons.push_back(str(name, ": ", e.what(), e.hint().empty() ? "" : " (HINT: " + e.hint() + ")"));
    }
  }
  throw Error(
      str("none of the ", files.size(), " checkpoints in ", dir_.dir(), " can be resumed:\n  ", join(reasons, "\n  ")),
      member_of_.empty()
          ? "fix the config to match the run (RUN_DIR/config.yaml), or start over with --overwrite"
          : "the run's shared config is not the one these checkpoints were written with (was it started "
            "over?): join it afresh without --resume (another --set checkpointing.run_name keeps the old "
            "checkpoints)");
}

bool RunCheckpointer::maybe_save(Contributor& c, const TrainState& state, const OuterStateIO* outer, bool force) {
  const std::int64_t every = cfg_.checkpointing.save_every_n_steps;
  const bool due = force || (every > 0 && state.step % every == 0);
  if (!due || state.step == last_saved_step_) return false;
  const auto t0 = Clock::now();
  CheckpointData data = gather_state(cfg_, c, state, tokenizer_model_, outer);
  const double copy_s = seconds_since(t0);
  gather_learning_dynamics(cfg_, c, state, data);
  const double snapshot = seconds_since(t0);
  snapshot_seconds_ += snapshot;
  const std::uint64_t bytes = data.tensor_bytes();
  saver_->submit(state.step, std::move(data));  // waits for (and rethrows) the previous save first
  last_saved_step_ = state.step;
  ++saves_;
  log_info("checkpoint step ", state.step, ": snapshot of ", fmt_mb(bytes), " in ", std::round(snapshot * 1e4) / 10,
           " ms (host copies ", std::round(copy_s * 1e4) / 10, " ms, learning dynamics ",
           std::round((snapshot - copy_s) * 1e4) / 10, " ms); writing ",
           dir_.path_of(checkpoints::CheckpointDir::file_name(state.step)), " in the background");
  return true;
}

void RunCheckpointer::finish() {
  const auto last = saver_->wait();
  if (saves_ > 0 && last)
    log_info("checkpoints: ", saves_, " saved to ", dir_.dir(), "; training paused ",
             std::round((snapshot_seconds_ + saver_->waited_seconds()) * 1e3), " ms in total for them (snapshots ",
             std::round(snapshot_seconds_ * 1e3), " ms, waiting for writes ",
             std::round(saver_->waited_seconds() * 1e3), " ms); last: ", last->file, ", ", fmt_mb(last->bytes), " in ",
             std::round(last->save_seconds * 1e3), " ms");
}

}  // namespace pico::trainer
