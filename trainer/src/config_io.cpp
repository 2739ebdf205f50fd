// The one place YAML meets pico's config structs: a table of (key, type, field pointer),
// used both to read YAML/--set and to write the resolved config back out.
#include "pico/trainer/config_io.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/strings.h"

namespace pico::trainer {
namespace {

enum class Kind { kInt, kDouble, kBool, kString, kStringList };

struct Field {
  std::string key;
  Kind kind;
  void* ptr;
  std::vector<std::string> choices;  // kString with a fixed set of values
  std::string doc;
};

std::vector<Field> fields_of(RunConfig& c) {
  auto& m = c.model;
  auto& o = c.training.optimization;
  auto& ld = c.checkpointing.learning_dynamics;
  return {
      {"model.d_model", Kind::kInt, &m.d_model, {}, "residual width"},
      {"model.n_layers", Kind::kInt, &m.n_layers, {}, "decoder blocks"},
      {"model.vocab_size", Kind::kInt, &m.vocab_size, {}, ">= the tokenizer's vocabulary"},
      {"model.max_seq_len", Kind::kInt, &m.max_seq_len, {}, "training sequence length"},
      {"model.attention_n_heads", Kind::kInt, &m.attention_n_heads, {}, "query heads"},
      {"model.attention_n_kv_heads", Kind::kInt, &m.attention_n_kv_heads, {}, "key/value heads (GQA)"},
      {"model.activation_hidden_dim", Kind::kInt, &m.activation_hidden_dim, {}, "SwiGLU hidden width"},
      {"model.norm_eps", Kind::kDouble, &m.norm_eps, {}, "RMSNorm epsilon"},
      {"model.position_emb_theta", Kind::kDouble, &m.position_emb_theta, {}, "RoPE base"},
      {"training.max_steps", Kind::kInt, &c.training.max_steps, {}, "optimizer steps"},
      {"training.optimization.lr", Kind::kDouble, &o.lr, {}, "peak learning rate"},
      {"training.optimization.lr_scheduler",
       Kind::kString,
       &o.lr_scheduler,
       {"linear_with_warmup", "cosine", "constant"},
       "schedule after warmup"},
      {"training.optimization.lr_warmup_steps", Kind::kInt, &o.lr_warmup_steps, {}, "linear warmup steps"},
      {"training.optimization.min_lr_ratio", Kind::kDouble, &o.min_lr_ratio, {}, "cosine floor, × lr"},
      {"training.optimization.gradient_accumulation_steps",
       Kind::kInt,
       &o.gradient_accumulation_steps,
       {},
       "micro-batches per step"},
      {"training.optimization.max_grad_norm", Kind::kDouble, &o.max_grad_norm, {}, "clip threshold, 0 = off"},
      {"training.optimization.beta1", Kind::kDouble, &o.adamw.beta1, {}, "AdamW β1"},
      {"training.optimization.beta2", Kind::kDouble, &o.adamw.beta2, {}, "AdamW β2"},
      {"training.optimization.eps", Kind::kDouble, &o.adamw.eps, {}, "AdamW ε"},
      {"training.optimization.weight_decay", Kind::kDouble, &o.adamw.weight_decay, {}, "AdamW decoupled decay"},
      {"data.path", Kind::kString, &c.data.path, {}, "directory from `pico data prepare`"},
      {"data.dataloader.batch_size", Kind::kInt, &c.data.batch_size, {}, "sequences per step"},
      {"data.verify", Kind::kBool, &c.data.verify, {}, "check shard checksums at start"},
      {"data.same_data_for_all_contributors",
       Kind::kBool,
       &c.data.same_data_for_all_contributors,
       {},
       "equivalence tests only"},
      {"evaluation.every_n_steps", Kind::kInt, &c.evaluation.every_n_steps, {}, "validation interval, 0 = end only"},
      {"evaluation.batches", Kind::kInt, &c.evaluation.batches, {}, "validation batches"},
      {"checkpointing.run_name", Kind::kString, &c.checkpointing.run_name, {}, "default: config file name"},
      {"checkpointing.runs_dir", Kind::kString, &c.checkpointing.runs_dir, {}, "parent of run directories"},
      {"checkpointing.checkpoints_dir", Kind::kString, &c.checkpointing.checkpoints_dir, {}, "inside the run dir"},
      {"checkpointing.save_every_n_steps", Kind::kInt, &c.checkpointing.save_every_n_steps, {}, "0 = end only"},
      {"checkpointing.keep_latest_k",
       Kind::kInt,
       &c.checkpointing.keep_latest_k,
       {},
       "0 = keep every checkpoint, else keep the newest k >= 2"},
      {"checkpointing.keep_every_n_steps",
       Kind::kInt,
       &c.checkpointing.keep_every_n_steps,
       {},
       "with keep_latest_k: also keep multiples of this step"},
      {"checkpointing.auto_resume", Kind::kBool, &c.checkpointing.auto_resume, {}, "resume when a checkpoint exists"},
      {"checkpointing.learning_dynamics.layer_suffixes", Kind::kStringList, &ld.layer_suffixes, {}, "modules recorded"},
      {"checkpointing.learning_dynamics.sequence_idx", Kind::kInt, &ld.sequence_idx, {}, "token position, -1 = last"},
      {"checkpointing.learning_dynamics.batch_size", Kind::kInt, &ld.batch_size, {}, "sequences in the fixed batch"},
      {"monitoring.logging.log_every_n_steps", Kind::kInt, &c.monitoring.log_every_n_steps, {}, "metrics interval"},
      {"monitoring.logging.log_level",
       Kind::kString,
       &c.monitoring.log_level,
       {"debug", "info", "warn", "error"},
       "console verbosity"},
      {"outer.algorithm", Kind::kString, &c.outer.algorithm, {"ddp", "diloco", "demo"}, "how contributors combine"},
      {"outer.inner_steps", Kind::kInt, &c.outer.inner_steps, {}, "DiLoCo H"},
      {"outer.lr", Kind::kDouble, &c.outer.lr, {}, "DiLoCo outer lr"},
      {"outer.momentum", Kind::kDouble, &c.outer.momentum, {}, "DiLoCo outer momentum"},
      {"outer.nesterov", Kind::kBool, &c.outer.nesterov, {}, "DiLoCo Nesterov"},
      {"outer.compression",
       Kind::kString,
       &c.outer.compression,
       {"none", "fp16", "bf16", "uint8"},
       "wire values (ddp, diloco)"},
      {"outer.error_feedback", Kind::kBool, &c.outer.error_feedback, {}, "DiLoCo: keep what compression lost"},
      {"outer.timeout_s", Kind::kDouble, &c.outer.timeout_s, {}, "collective timeout"},
      {"outer.min_contributors",
       Kind::kInt,
       &c.outer.min_contributors,
       {},
       "networked: members a round waits for before it starts"},
      {"outer.round_seconds", Kind::kDouble, &c.outer.round_seconds, {}, "time budget per round (0 = H steps)"},
      {"outer.demo.compression_decay", Kind::kDouble, &c.outer.demo_compression_decay, {}, "DeMo β"},
      {"outer.demo.compression_topk", Kind::kInt, &c.outer.demo_compression_topk, {}, "DeMo top-k per chunk"},
      {"outer.demo.compression_chunk", Kind::kInt, &c.outer.demo_compression_chunk, {}, "DeMo max chunk"},
      {"outer.demo.value_dtype",
       Kind::kString,
       &c.outer.demo_value_dtype,
       {"fp32", "fp16", "bf16"},
       "DeMo coefficient values on the wire"},
      {"local_workers", Kind::kInt, &c.local_workers, {}, "contributors in this process"},
      {"device", Kind::kString, &c.device, {}, "auto | cpu | cuda | cuda:N"},
      {"threads", Kind::kInt, &c.threads, {}, "CPU threads, 0 = all cores"},
      {"seed", Kind::kInt, &c.seed, {}, "initialization and data order"},
  };
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kInt:
      return "int";
    case Kind::kDouble:
      return "float";
    case Kind::kBool:
      return "bool";
    case Kind::kString:
      return "string";
    case Kind::kStringList:
      return "list of strings";
  }
  return "?";
}

std::vector<std::string> all_keys() {
  RunConfig scratch;
  std::vector<std::string> keys;
  for (const auto& f : fields_of(scratch)) keys.push_back(f.key);
  return keys;
}

// Characters the two keys share from the start, counted in whole sections.
std::size_t common_sections(const std::string& a, const std::string& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size() && a[i] == b[i]; ++i)
    if (a[i] == '.') ++n;
  return n;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& source) {
  // A key given without its section ("runs_dir"), under the wrong section (a mis-indented
  // "data.batch_size"), or with a typo ("model.d_modle"). Among the keys with the same last
  // part, the one that shares the most sections with what was written wins (batch_size under
  // data → data.dataloader.batch_size, not checkpointing.learning_dynamics.batch_size).
  std::string guess;
  std::size_t best = 0;
  const std::string leaf = key.substr(key.rfind('.') + 1);
  for (const auto& k : all_keys()) {
    if (!(ends_with(k, "." + leaf) || k == leaf) || k == key) continue;
    const std::size_t shared = common_sections(k, key) + 1;
    if (shared > best) {
      best = shared;
      guess = k;
    }
  }
  if (guess.empty()) guess = closest_match(key, all_keys());
  throw Error(str("unknown config key '", key, "' in ", source),
              guess.empty() ? "run `pico train --help-config` to list every key"
                            : str("did you mean '", guess, "'? (`pico train --help-config` lists every key)"));
}

void set_field(const Field& f, const YAML::Node& node, const std::string& source) {
  auto type_error = [&](const std::string& got) -> Error {
    return Error(str("config key '", f.key, "' in ", source, " expects ", kind_name(f.kind), ", got ", got),
                 str(f.key, ": ", f.doc));
  };
  if (node.IsNull()) return;  // "key:" with no value keeps the default
  if (f.kind == Kind::kStringList) {
    auto* v = static_cast<std::vector<std::string>*>(f.ptr);
    if (node.IsScalar()) {  // "a,b,c" from --set
      v->clear();
      for (auto& s : split(node.Scalar(), ','))
        if (!trim(s).empty()) v->push_back(trim(s));
      return;
    }
    if (!node.IsSequence()) throw type_error("a map");
    v->clear();
    for (const auto& item : node) {
      if (!item.IsScalar()) throw type_error("a nested structure");
      v->push_back(item.Scalar());
    }
    return;
  }
  if (!node.IsScalar()) throw type_error(node.IsSequence() ? "a list" : "a map");
  const std::string s = node.Scalar();
  switch (f.kind) {
    case Kind::kInt: {
      std::int64_t v = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
      if (r.ec != std::errc() || r.ptr != s.data() + s.size()) throw type_error(str("'", s, "'"));
      *static_cast<std::int64_t*>(f.ptr) = v;
      return;
    }
    case Kind::kDouble: {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) throw type_error(str("'", s, "'"));
      *static_cast<double*>(f.ptr) = v;
      return;
    }
    case Kind::kBool: {
      static const std::set<std::string> yes{"true", "True", "TRUE", "yes", "on", "1"};
      static const std::set<std::string> no{"false", "False", "FALSE", "no", "off", "0"};
      if (yes.count(s))
        *static_cast<bool*>(f.ptr) = true;
      else if (no.count(s))
        *static_cast<bool*>(f.ptr) = false;
      else
        throw type_error(str("'", s, "'"));
      return;
    }
    case Kind::kString: {
      if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), s) == f.choices.end())
        throw Error(str("bad value for ", f.key, " in ", source, ": '", s, "'"),
                    str(f.key, " must be one of: ", join(f.choices, ", ")));
      *static_cast<std::string*>(f.ptr) = s;
      return;
    }
    case Kind::kStringList:
      break;
  }
}

const Field* find_field(const std::vector<Field>& fields, const std::string& key) {
  for (const auto& f : fields)
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(const std::vector<Field>& fields, const std::string& prefix) {
  for (const auto& f : fields)
    if (starts_with(f.key, prefix + ".")) return true;
  return false;
}

void walk(const YAML::Node& node, const std::string& prefix, const std::vector<Field>& fields,
          const std::string& source) {
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) throw Error(str("non-scalar key under '", prefix, "' in ", source));
    const std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    const YAML::Node& value = kv.second;
    if (const Field* f = find_field(fields, key)) {
      set_field(*f, value, source);
    } else if (is_section(fields, key)) {
      if (value.IsNull()) continue;
      if (!value.IsMap())
        throw Error(str("config key '", key, "' in ", source, " is a section and needs nested keys"),
                    str("write e.g. '", key, ":' followed by indented 'key: value' lines"));
      walk(value, key, fields, source);
    } else {
      unknown_key(key, source);
    }
  }
}

std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  // YAML 1.1 readers (PyYAML) need a '.' to see a float: 1e-06 would be a string there.
  if (const auto e = s.find_first_of("eE"); e != std::string::npos && s.find('.') == std::string::npos)
    s.insert(e, ".0");
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

void emit_value(YAML::Emitter& out, const Field& f) {
  switch (f.kind) {
    case Kind::kInt:
      out << *static_cast<const std::int64_t*>(f.ptr);
      break;
    case Kind::kDouble:
      out << format_double(*static_cast<const double*>(f.ptr));
      break;
    case Kind::kBool:
      out << *static_cast<const bool*>(f.ptr);
      break;
    case Kind::kString:
      out << YAML::DoubleQuoted << *static_cast<const std::string*>(f.ptr);
      break;
    case Kind::kStringList:
      out << YAML::Flow << *static_cast<const std::vector<std::string>*>(f.ptr);
      break;
  }
}

// Emits the fields whose keys start with `prefix` (fields are grouped by section).
void emit_section(YAML::Emitter& out, const std::vector<Field>& fields, const std::string& prefix) {
  std::vector<std::string> order;  // first-seen order of child names
  for (const auto& f : fields) {
    if (!prefix.empty() && !starts_with(f.key, prefix + ".")) continue;
    const std::string rest = prefix.empty() ? f.key : f.key.substr(prefix.size() + 1);
    const std::string child = rest.substr(0, rest.find('.'));
    if (std::find(order.begin(), order.end(), child) == order.end()) order.push_back(child);
  }
  out << YAML::BeginMap;
  for (const auto& child : order) {
    const std::string key = prefix.empty() ? child : prefix + "." + child;
    out << YAML::Key << child << YAML::Value;
    if (const Field* f = find_field(fields, key))
      emit_value(out, *f);
    else
      emit_section(out, fields, key);
  }
  out << YAML::EndMap;
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(str("cannot parse ", source, ": ", e.what()), "fix the YAML syntax at the line and column shown");
  }
}

}  // namespace

void apply_overrides(RunConfig& cfg, const std::vector<std::string>& overrides) {
  const auto fields = fields_of(cfg);
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(str("bad override '", o, "'"), "write --set section.key=value, e.g. --set training.max_steps=100");
    const std::string key = trim(o.substr(0, eq));
    const std::string value = o.substr(eq + 1);
    const Field* f = find_field(fields, key);
    if (f == nullptr) unknown_key(key, "--set");
    YAML::Node node;
    if (f->kind == Kind::kStringList && !value.empty() && value.front() == '[')
      node = parse_yaml(value, "--set " + key);
    else
      node = YAML::Node(value);
    if (value.empty() && f->kind != Kind::kString)
      throw Error(str("--set ", key, "= has no value"), str(key, " expects ", kind_name(f->kind)));
    set_field(*f, node, "--set");
  }
}

RunConfig parse_run_config(const std::string& yaml, const std::string& source,
                           const std::vector<std::string>& overrides) {
  RunConfig cfg;
  const YAML::Node root = parse_yaml(yaml, source);
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap())
      throw Error(str(source, " is not a YAML mapping of sections"), "see configs/demo.yaml for the layout");
    walk(root, "", fields_of(cfg), source);
  }
  apply_overrides(cfg, overrides);
  cfg.validate();
  return cfg;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!std::filesystem::exists(path))
    throw Error(str("config file ", path, " does not exist"), "pass --config with a YAML file, e.g. configs/demo.yaml");
  RunConfig cfg;
  const YAML::Node root = parse_yaml(read_file(path), path);
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap())
      throw Error(str(path, " is not a YAML mapping of sections"), "see configs/demo.yaml for the layout");
    walk(root, "", fields_of(cfg), path);
  }
  apply_overrides(cfg, overrides);
  if (cfg.checkpointing.run_name.empty()) cfg.checkpointing.run_name = std::filesystem::path(path).stem().string();
  cfg.validate();
  return cfg;
}

std::string to_yaml(const RunConfig& cfg) {
  RunConfig copy = cfg;  // fields_of needs mutable pointers; emitting does not write
  YAML::Emitter out;
  emit_section(out, fields_of(copy), "");
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> describe_keys() {
  RunConfig defaults;
  std::vector<std::string> out;
  for (const auto& f : fields_of(defaults)) {
    YAML::Emitter value;
    emit_value(value, f);
    std::string shown = value.c_str();
    if (f.kind == Kind::kString && shown == "\"\"") shown = "\"\" (none)";
    std::string line = str(f.key, "  (", kind_name(f.kind), ", default ", shown, ")  ", f.doc);
    if (!f.choices.empty()) line += str("  [", join(f.choices, "|"), "]");
    out.push_back(line);
  }
  return out;
}

}  // namespace pico::trainer
