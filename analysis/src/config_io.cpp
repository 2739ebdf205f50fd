// The analysis folder's one yaml-cpp translation unit: the analysis config (config.h) and
// the model shape from a checkpoint's /config YAML.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "pico/analysis/config.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(str("cannot parse ", source, ": ", e.what()), "fix the YAML syntax at the line and column shown");
  }
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where, const std::vector<std::string>& known,
                              const std::string& source) {
  const std::string leaf = key.substr(key.rfind('.') + 1);
  const std::string guess = closest_match(leaf, known);
  throw Error(str("unknown key '", key, "' in ", source),
              str(guess.empty() ? "" : "did you mean '" + guess + "'? ", "keys of ", where, ": ", join(known, ", ")));
}

void check_keys(const YAML::Node& map, const std::string& prefix, const std::vector<std::string>& known,
                const std::string& source) {
  for (const auto& kv : map) {
    const std::string k = kv.first.Scalar();
    if (std::find(known.begin(), known.end(), k) == known.end())
      unknown_key(prefix.empty() ? k : prefix + "." + k, prefix.empty() ? "the analysis config" : prefix, known,
                  source);
  }
}

std::string scalar(const YAML::Node& n, const std::string& key, const std::string& source) {
  if (!n.IsScalar())
    throw Error(str(key, " in ", source, " must be a single value, got a ", n.IsSequence() ? "list" : "map"),
                str("write ", key, ": VALUE"));
  return n.Scalar();
}

std::int64_t integer(const YAML::Node& n, const std::string& key, const std::string& source) {
  std::string s = scalar(n, key, source);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());  // YAML 1.1 allows 50_000
  std::int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
    throw Error(str(key, " in ", source, " must be an integer, got '", n.Scalar(), "'"), "write a whole number");
  return v;
}

// A list of integers, or `all` (→ empty).
std::vector<std::int64_t> int_list(const YAML::Node& n, const std::string& key, const std::string& source) {
  if (n.IsNull()) return {};
  if (n.IsScalar()) {
    if (n.Scalar() == "all") return {};
    return {integer(n, key, source)};
  }
  if (!n.IsSequence()) throw Error(str(key, " in ", source, " must be a list or all, got a map"), "e.g. [0, 3] or all");
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < n.size(); ++i) out.push_back(integer(n[i], str(key, "[", i, "]"), source));
  return out;
}

ComponentSpec parse_component(const YAML::Node& n, const std::string& key, const std::string& source) {
  if (!n.IsMap())
    throw Error(str(key, " in ", source, " must be a map"), "component_name, data_type, layer_suffixes, layers");
  check_keys(n, key, {"component_name", "data_type", "layer_suffixes", "layers"}, source);
  ComponentSpec c;
  if (!n["component_name"])
    throw Error(str(key, " in ", source, " has no component_name"), "component_name: simple or ov_circuit");
  c.name = scalar(n["component_name"], key + ".component_name", source);
  if (!n["data_type"])
    throw Error(str(key, " in ", source, " has no data_type"), "data_type: weights, gradients or activations");
  const std::string dt = scalar(n["data_type"], key + ".data_type", source);
  const auto t = parse_data_type(dt);
  if (!t)
    throw Error(str(key, ".data_type = '", dt, "' in ", source), "data_type must be weights, gradients or activations");
  c.data_type = *t;
  if (const auto s = n["layer_suffixes"]; s && !s.IsNull()) {
    if (c.name == "ov_circuit") {
      if (!s.IsMap())
        throw Error(str(key, ".layer_suffixes in ", source, " must be a map for ov_circuit"),
                    "layer_suffixes: {value_layer: attention.v_proj, output_layer: attention.o_proj}");
      check_keys(s, key + ".layer_suffixes", {"value_layer", "output_layer"}, source);
      c.value_layer = s["value_layer"] ? scalar(s["value_layer"], key + ".layer_suffixes.value_layer", source) : "";
      c.output_layer = s["output_layer"] ? scalar(s["output_layer"], key + ".layer_suffixes.output_layer", source) : "";
    } else {
      c.layer_suffix = scalar(s, key + ".layer_suffixes", source);
    }
  }
  if (n["layers"]) c.layers = int_list(n["layers"], key + ".layers", source);
  return c;
}

MetricConfig parse_metric(const YAML::Node& n, const std::string& key, const std::string& source) {
  if (!n.IsMap()) throw Error(str(key, " in ", source, " must be a map"), "metric_name, data_split, components, ...");
  check_keys(n, key, {"metric_name", "data_split", "target_checkpoint", "norm_type", "components", "layers"}, source);
  MetricConfig m;
  if (!n["metric_name"])
    throw Error(str(key, " in ", source, " has no metric_name"), str("metrics: ", join(metric_names(), ", ")));
  m.metric_name = scalar(n["metric_name"], key + ".metric_name", source);
  if (n["data_split"]) m.data_split = scalar(n["data_split"], key + ".data_split", source);
  if (n["target_checkpoint"] && !n["target_checkpoint"].IsNull())
    m.target_checkpoint = integer(n["target_checkpoint"], key + ".target_checkpoint", source);
  if (n["norm_type"]) m.norm_type = scalar(n["norm_type"], key + ".norm_type", source);
  if (n["layers"]) m.layers = int_list(n["layers"], key + ".layers", source);
  if (const auto cs = n["components"]; cs && !cs.IsNull()) {
    if (!cs.IsSequence())
      throw Error(str(key, ".components in ", source, " must be a list"), "components: [{...}, ...]");
    for (std::size_t j = 0; j < cs.size(); ++j)
      m.components.push_back(parse_component(cs[j], str(key, ".components[", j, "]"), source));
  }
  return m;
}

}  // namespace

AnalysisConfig parse_analysis_config(const std::string& yaml, const std::string& source) {
  const YAML::Node root = parse_yaml(yaml, source);
  if (!root.IsMap()) throw Error(str(source, " is not a YAML mapping"), "see configs/analysis.yaml for the layout");
  AnalysisConfig cfg;
  cfg.source = source;
  try {
    check_keys(root, "", {"analysis_name", "run_path", "steps", "contributors", "metrics", "monitoring"}, source);
    if (root["analysis_name"]) cfg.analysis_name = scalar(root["analysis_name"], "analysis_name", source);
    if (root["run_path"]) cfg.run_path = scalar(root["run_path"], "run_path", source);
    if (const auto s = root["steps"]; s && !s.IsNull()) {
      if (s.IsMap()) {
        check_keys(s, "steps", {"start", "end", "step"}, source);
        for (const char* k : {"start", "end", "step"})
          if (!s[k]) throw Error(str("steps in ", source, " has no ", k), "steps: {start: 0, end: 1000, step: 250}");
        const std::int64_t a = integer(s["start"], "steps.start", source), b = integer(s["end"], "steps.end", source),
                           st = integer(s["step"], "steps.step", source);
        if (st <= 0 || a < 0 || b < a)
          throw Error(str("steps in ", source, ": start ", a, ", end ", b, ", step ", st),
                      "need 0 <= start <= end and step > 0 (end is included when reached)");
        for (std::int64_t v = a; v <= b; v += st) cfg.steps.push_back(v);
      } else if (s.IsScalar() && s.Scalar() == "all") {
        cfg.steps.clear();
      } else {
        cfg.steps = int_list(s, "steps", source);
      }
    }
    if (const auto c = root["contributors"]; c && !c.IsNull()) {
      if (c.IsScalar() && c.Scalar() == "all")
        cfg.contributors = std::nullopt;
      else
        cfg.contributors = int_list(c, "contributors", source);
    }
    if (const auto ms = root["metrics"]; ms && !ms.IsNull()) {
      if (!ms.IsSequence())
        throw Error(str("metrics in ", source, " must be a list"), "metrics: [{metric_name: gini, ...}]");
      for (std::size_t i = 0; i < ms.size(); ++i)
        cfg.metrics.push_back(parse_metric(ms[i], str("metrics[", i, "]"), source));
    }
    if (const auto mon = root["monitoring"]; mon && !mon.IsNull()) {
      if (!mon.IsMap()) throw Error(str("monitoring in ", source, " must be a map"), "monitoring: {output_dir: DIR}");
      check_keys(mon, "monitoring", {"output_dir", "save_to_wandb", "wandb"}, source);
      if (mon["output_dir"]) cfg.output_dir = scalar(mon["output_dir"], "monitoring.output_dir", source);
      if (mon["save_to_wandb"] && mon["save_to_wandb"].IsScalar() && mon["save_to_wandb"].Scalar() == "true")
        log_warn("monitoring.save_to_wandb in ", source,
                 ": pico analyze does not log to Weights & Biases; results go to CSV, JSON and PNG files");
    }
  } catch (const YAML::Exception& e) {
    throw Error(str("cannot read ", source, ": ", e.what()), "see configs/analysis.yaml for the layout");
  }
  cfg.validate();
  return cfg;
}

AnalysisConfig load_analysis_config(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    throw Error(str("analysis config ", path, " cannot be read"),
                "pass --config with a YAML file, e.g. configs/analysis.yaml");
  }
  return parse_analysis_config(text, path);
}

ModelShape parse_model_shape(const std::string& config_yaml, const std::string& source) {
  const YAML::Node root = parse_yaml(config_yaml, source + " /config");
  ModelShape s;
  auto get = [&](const char* section, const char* key, bool required) -> std::int64_t {
    const YAML::Node sec = root.IsMap() ? root[section] : YAML::Node();
    const YAML::Node v = sec && sec.IsMap() ? sec[key] : YAML::Node();
    if (!v || v.IsNull()) {
      if (required)
        throw Error(str(source, ": its /config has no ", section, ".", key),
                    "the checkpoint was not written by pico train (or is from an incompatible version)");
      return 0;
    }
    return integer(v, str(section, ".", key), source + " /config");
  };
  s.n_layers = get("model", "n_layers", true);
  s.d_model = get("model", "d_model", true);
  s.n_heads = get("model", "attention_n_heads", true);
  s.n_kv_heads = get("model", "attention_n_kv_heads", true);
  s.outer_inner_steps = get("outer", "inner_steps", false);
  if (s.n_layers <= 0 || s.d_model <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.d_model % s.n_heads != 0 ||
      s.n_heads % s.n_kv_heads != 0)
    throw Error(str(source, ": /config has an impossible model shape (n_layers ", s.n_layers, ", d_model ", s.d_model,
                    ", attention_n_heads ", s.n_heads, ", attention_n_kv_heads ", s.n_kv_heads, ")"),
                "the file's config is damaged");
  return s;
}

std::string run_name_from_config(const std::string& config_yaml) {
  try {
    const YAML::Node root = YAML::Load(config_yaml);
    const YAML::Node n = root["checkpointing"]["run_name"];
    if (n && n.IsScalar()) return n.Scalar();
  } catch (const YAML::Exception&) {
  }
  return "";
}

}  // namespace pico::analysis
