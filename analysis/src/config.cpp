// The metric table, config validation, step/layer lists and the quick form (no YAML here:
// that is config_io.cpp).
#include "pico/analysis/config.h"

#include <algorithm>
#include <charconv>
#include <set>

#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

const std::vector<DataType> kAll = {DataType::kWeights, DataType::kGradients, DataType::kActivations};

std::string data_types_text(const std::vector<DataType>& types) {
  std::vector<std::string> names;
  for (auto t : types) names.push_back(data_type_name(t));
  return join(names, ", ");
}

std::int64_t parse_int(std::string text, const std::string& what) {
  text.erase(std::remove(text.begin(), text.end(), '_'), text.end());  // YAML 1.1's 50_000
  text = trim(text);
  std::int64_t v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size())
    throw Error(str(what, ": '", text, "' is not an integer"), "write a whole number, e.g. 1000");
  return v;
}

}  // namespace

const std::vector<MetricInfo>& metric_infos() {
  static const std::vector<MetricInfo> table = {
      {"cka",
       MetricKind::kCka,
       true,
       false,
       {DataType::kActivations},
       "linear CKA of activations vs target_checkpoint (1 = same representation)"},
      {"pwcca",
       MetricKind::kPwcca,
       true,
       false,
       {DataType::kActivations},
       "projection-weighted CCA of activations vs target_checkpoint (needs more samples than neurons)"},
      {"per",
       MetricKind::kPer,
       false,
       false,
       {DataType::kWeights, DataType::kGradients},
       "proportional effective rank: exp(entropy of normalized singular values) / their count"},
      {"condition_number", MetricKind::kConditionNumber, false, false, kAll, "largest / smallest singular value"},
      {"gini", MetricKind::kGini, false, false, kAll, "Gini coefficient of |x| (sparsity, 0..1)"},
      {"hoyer", MetricKind::kHoyer, false, false, kAll, "Hoyer sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1)"},
      {"norm", MetricKind::kNorm, false, false, kAll, "norm_type frobenius, nuclear or inf (max |x|)"},
      {"drift",
       MetricKind::kDrift,
       false,
       true,
       {},
       "DiLoCo: ||theta_w - theta_g|| per layer and contributor, and relative to ||theta_g||"},
      {"pseudo_gradient_cosine",
       MetricKind::kPseudoGradientCosine,
       false,
       true,
       {},
       "DiLoCo: cosine of contributors' pseudo-gradients per layer and round, every pair"},
  };
  return table;
}

const MetricInfo* find_metric(std::string_view name) {
  for (const auto& m : metric_infos())
    if (m.name == name) return &m;
  return nullptr;
}

std::vector<std::string> metric_names() {
  std::vector<std::string> out;
  for (const auto& m : metric_infos()) out.emplace_back(m.name);
  return out;
}

const MetricInfo& MetricConfig::info() const {
  const MetricInfo* m = find_metric(metric_name);
  PICO_CHECK(m != nullptr, "unknown metric ", metric_name, " (validate() first)");
  return *m;
}

std::string MetricConfig::output_name() const {
  return metric_name == "norm" ? "norm_" + norm_type : metric_name;
}

void AnalysisConfig::validate() const {
  const std::string where = source.empty() ? "the analysis config" : source;
  if (run_path.empty())
    throw Error(str("no run to analyze in ", where, " (run_path)"),
                "give the run directory: `pico analyze RUN_DIR ...` or run_path: runs/NAME in the config");
  if (metrics.empty())
    throw Error(str("no metrics in ", where),
                str("add metrics (e.g. --metrics gini,hoyer,per); available: ", join(metric_names(), ", ")));
  for (std::size_t i = 0; i < metrics.size(); ++i) {
    const MetricConfig& m = metrics[i];
    const std::string key = str("metrics[", i, "]");
    const MetricInfo* info = find_metric(m.metric_name);
    if (info == nullptr) {
      const std::string guess = closest_match(m.metric_name, metric_names());
      throw Error(str("unknown metric '", m.metric_name, "' (", key, ".metric_name in ", where, ")"),
                  str(guess.empty() ? "" : "did you mean '" + guess + "'? ", "metrics: ", join(metric_names(), ", ")));
    }
    if (m.data_split != "train" && m.data_split != "val")
      throw Error(str(key, ".data_split = '", m.data_split, "' in ", where), "data_split must be train or val");
    if (info->kind == MetricKind::kNorm) {
      if (m.norm_type != "frobenius" && m.norm_type != "nuclear" && m.norm_type != "inf")
        throw Error(str(key, " (norm): norm_type = '", m.norm_type, "' in ", where),
                    "norm_type must be frobenius, nuclear or inf");
    } else if (!m.norm_type.empty()) {
      throw Error(str(key, " (", m.metric_name, "): norm_type is only for the norm metric (", where, ")"),
                  "remove norm_type");
    }
    if (m.target_checkpoint && !info->comparative)
      throw Error(str(key, " (", m.metric_name, "): target_checkpoint is only for comparative metrics (cka, pwcca)"),
                  "remove target_checkpoint");
    if (m.target_checkpoint && *m.target_checkpoint < 0)
      throw Error(str(key, ".target_checkpoint = ", *m.target_checkpoint, " in ", where), "steps are >= 0");
    for (auto l : m.layers)
      if (l < 0) throw Error(str(key, ".layers contains ", l, " in ", where), "layers are indices >= 0, or all");
    if (info->decentralized) {
      if (!m.components.empty())
        throw Error(str(key, " (", m.metric_name,
                        ") takes no components: it compares whole layers of the contributors' "
                        "models (",
                        where, ")"),
                    "remove components; select layers with layers: [..] or all");
      continue;
    }
    if (m.components.empty())
      throw Error(str(key, " (", m.metric_name, ") has no components in ", where),
                  "add components: [{component_name: simple, data_type: weights, layer_suffixes: swiglu.w_2, "
                  "layers: all}]");
    for (std::size_t j = 0; j < m.components.size(); ++j) {
      const ComponentSpec& c = m.components[j];
      const std::string ckey = str(key, ".components[", j, "]");
      if (c.name != "simple" && c.name != "ov_circuit") {
        const std::string guess = closest_match(c.name, {"simple", "ov_circuit"});
        throw Error(str("unknown component '", c.name, "' (", ckey, ".component_name in ", where, ")"),
                    str(guess.empty() ? "" : "did you mean '" + guess + "'? ", "components: simple, ov_circuit"));
      }
      if (std::find(info->data_types.begin(), info->data_types.end(), c.data_type) == info->data_types.end())
        throw Error(str(m.metric_name, " cannot be computed on ", data_type_name(c.data_type), " (", ckey,
                        ".data_type in ", where, ")"),
                    str(m.metric_name, " supports: ", data_types_text(info->data_types)));
      if (c.name == "simple" && c.layer_suffix.empty())
        throw Error(str(ckey, " (simple) has no layer_suffixes in ", where),
                    "name the module, e.g. layer_suffixes: swiglu.w_2 (or attention.v_proj, attention.o_proj)");
      if (c.name == "ov_circuit" && (c.value_layer.empty() || c.output_layer.empty()))
        throw Error(
            str(ckey, " (ov_circuit) needs layer_suffixes.value_layer and layer_suffixes.output_layer in ", where),
            "layer_suffixes: {value_layer: attention.v_proj, output_layer: attention.o_proj}");
      for (auto l : c.layers)
        if (l < 0) throw Error(str(ckey, ".layers contains ", l, " in ", where), "layers are indices >= 0, or all");
    }
  }
  if (contributors)
    for (auto c : *contributors)
      if (c < 0) throw Error(str("contributors contains ", c, " in ", where), "contributors are indices >= 0, or all");
  for (auto s : steps)
    if (s < 0) throw Error(str("steps contains ", s, " in ", where), "steps are >= 0");
}

std::vector<std::int64_t> parse_steps(const std::string& text_in, const std::string& what) {
  const std::string text = trim(text_in);
  if (text.empty() || text == "all") return {};
  std::vector<std::int64_t> out;
  if (text.find(':') != std::string::npos) {
    const auto parts = split(text, ':');
    if (parts.size() != 3)
      throw Error(str(what, ": '", text, "' is not a step range"),
                  "write START:END:STEP, e.g. 0:1000:250 (END included)");
    const std::int64_t a = parse_int(parts[0], what), b = parse_int(parts[1], what), s = parse_int(parts[2], what);
    if (s <= 0 || a < 0 || b < a)
      throw Error(str(what, ": bad step range ", text), "need 0 <= START <= END and STEP > 0, e.g. 0:1000:250");
    for (std::int64_t v = a; v <= b; v += s) out.push_back(v);
    return out;
  }
  for (const auto& p : split(text, ','))
    if (!trim(p).empty()) out.push_back(parse_int(p, what));
  for (auto v : out)
    if (v < 0) throw Error(str(what, ": step ", v, " is negative"), "steps are >= 0");
  return out;
}

std::vector<std::int64_t> parse_layers(const std::string& text_in, const std::string& what) {
  const std::string text = trim(text_in);
  if (text.empty() || text == "all") return {};
  std::vector<std::int64_t> out;
  for (const auto& p : split(text, ','))
    if (!trim(p).empty()) {
      const auto v = parse_int(p, what);
      if (v < 0) throw Error(str(what, ": layer ", v, " is negative"), "layers are indices >= 0, or all");
      out.push_back(v);
    }
  return out;
}

AnalysisConfig quick_config(const QuickOptions& q, const std::vector<std::string>& recorded_suffixes) {
  AnalysisConfig cfg;
  cfg.source = "the command line";
  cfg.run_path = q.run_path;
  cfg.steps = parse_steps(q.steps, "--steps");
  if (trim(q.contributors) == "all")
    cfg.contributors = std::nullopt;
  else
    cfg.contributors = parse_layers(q.contributors, "--contributors");
  const auto layers = parse_layers(q.layers, "--layers");
  std::vector<std::string> names;
  for (const auto& m : q.metrics)
    for (const auto& n : split(m, ','))
      if (!trim(n).empty()) names.push_back(trim(n));
  if (q.decentralized)
    for (const char* n : {"drift", "pseudo_gradient_cosine"})
      if (std::find(names.begin(), names.end(), n) == names.end()) names.emplace_back(n);
  if (names.empty())
    throw Error("pico analyze: no metrics given",
                str("pass --metrics (e.g. --metrics gini,hoyer,per) or --decentralized; available: ",
                    join(metric_names(), ", ")));
  std::vector<std::string> suffixes = q.suffixes.empty() ? recorded_suffixes : q.suffixes;
  if (suffixes.empty()) suffixes = {"attention.v_proj", "attention.o_proj", "swiglu.w_2"};
  std::vector<DataType> types;
  for (const auto& t : q.data_types)
    for (const auto& n : split(t, ','))
      if (!trim(n).empty()) {
        auto dt = parse_data_type(trim(n));
        if (!dt)
          throw Error(str("--data-type: unknown data type '", trim(n), "'"),
                      "data types: weights, gradients, activations");
        types.push_back(*dt);
      }
  for (const auto& name : names) {
    // "norm" is all three norms; "norm_nuclear" one of them.
    std::vector<std::pair<std::string, std::string>> expanded;  // (metric_name, norm_type)
    if (name == "norm")
      expanded = {{"norm", "frobenius"}, {"norm", "nuclear"}, {"norm", "inf"}};
    else if (starts_with(name, "norm_"))
      expanded = {{"norm", name.substr(5)}};
    else
      expanded = {{name, ""}};
    for (const auto& [metric_name, norm_type] : expanded) {
      const MetricInfo* info = find_metric(metric_name);
      if (info == nullptr) {
        std::vector<std::string> candidates = metric_names();
        for (const char* n : {"norm_frobenius", "norm_nuclear", "norm_inf"}) candidates.emplace_back(n);
        const std::string guess = closest_match(name, candidates);
        throw Error(str("--metrics: unknown metric '", name, "'"),
                    str(guess.empty() ? "" : "did you mean '" + guess + "'? ", "metrics: ", join(candidates, ", ")));
      }
      MetricConfig m;
      m.metric_name = metric_name;
      m.norm_type = norm_type;
      m.data_split = q.data_split;
      if (info->comparative) m.target_checkpoint = q.target_step;
      if (info->decentralized) {
        m.layers = layers;
        cfg.metrics.push_back(std::move(m));
        continue;
      }
      std::vector<DataType> use;
      if (types.empty()) use = {info->comparative ? DataType::kActivations : DataType::kWeights};
      for (auto t : types)
        if (std::find(info->data_types.begin(), info->data_types.end(), t) != info->data_types.end()) use.push_back(t);
      if (use.empty())
        throw Error(str(name, " cannot be computed on ", data_types_text(types), " (--data-type)"),
                    str(name, " supports: ", data_types_text(info->data_types)));
      for (const auto& comp_list : q.components)
        for (const auto& comp_raw : split(comp_list, ',')) {
          const std::string comp = trim(comp_raw);
          if (comp.empty()) continue;
          for (auto t : use) {
            ComponentSpec c;
            c.name = comp;
            c.data_type = t;
            c.layers = layers;
            if (comp == "simple") {
              for (const auto& s : suffixes) {
                c.layer_suffix = s;
                m.components.push_back(c);
              }
            } else {
              m.components.push_back(c);
            }
          }
        }
      cfg.metrics.push_back(std::move(m));
    }
  }
  if (q.target_step) {
    bool any = false;
    for (const auto& m : cfg.metrics) any = any || m.info().comparative;
    if (!any)
      throw Error(str("--target-step ", *q.target_step, " is only for comparative metrics (cka, pwcca)"),
                  "drop --target-step, or add cka or pwcca to --metrics");
  }
  cfg.validate();
  return cfg;
}

}  // namespace pico::analysis
