// Running an analysis over a run's checkpoints (see runner.h).
#include "pico/analysis/runner.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <memory>
#include <set>

#include "pico/analysis/metrics.h"
#include "pico/checkpoints/checkpoint.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---------------------------------------------------------------------------------------
// Reading only what is needed

struct Needs {
  std::map<std::string, std::map<DataType, std::set<std::string>>> ld;  // split → kind → modules
  bool model = false;            // /model (decentralized; weights not in /learning_dynamics)
  bool theta_g = false;          // /optim/outer/theta_g
  bool pseudo_gradient = false;  // /pseudo_gradient
};

std::string parent_of(const std::string& g) {
  const auto p = g.rfind('/');
  return p == 0 || p == std::string::npos ? "/" : g.substr(0, p);
}
std::string leaf_of(const std::string& g) {
  return g.substr(g.rfind('/') + 1);
}

std::vector<std::string> skip_groups(const checkpoints::FileInfo& info, const Needs& needs) {
  std::set<std::string> datasets;
  for (const auto& d : info.datasets) datasets.insert(d.path);
  bool need_model = needs.model;
  for (const auto& [split, kinds] : needs.ld)
    if (auto it = kinds.find(DataType::kWeights); it != kinds.end())
      for (const auto& m : it->second)
        if (!datasets.count(str("/learning_dynamics/", split, "/weights/", m))) need_model = true;
  std::vector<std::string> skip;
  for (const auto& g : info.groups) {
    const std::string parent = parent_of(g);
    bool drop = false;
    if (g == "/optim/inner" || g == "/tokenizer" || g == "/train_state/rng")
      drop = true;
    else if (g == "/model")
      drop = !need_model;
    else if (g == "/pseudo_gradient")
      drop = !needs.pseudo_gradient;
    else if (g == "/optim/outer")
      drop = !needs.theta_g;
    else if (parent == "/optim/outer")
      drop = g != "/optim/outer/theta_g";  // momentum
    else if (parent == "/learning_dynamics")
      drop = !needs.ld.count(leaf_of(g));
    else if (parent_of(parent) == "/learning_dynamics") {
      auto it = needs.ld.find(leaf_of(parent));
      const auto kind = parse_data_type(leaf_of(g));
      drop = it == needs.ld.end() || !kind || !it->second.count(*kind);
    }
    if (drop) skip.push_back(g);
  }
  return skip;
}

struct Loaded {
  std::string path;
  checkpoints::CheckpointData data;
  double seconds = 0;
};

Loaded load(const std::string& path, const Needs& needs) {
  const auto t0 = Clock::now();
  Loaded l;
  l.path = path;
  const auto info = checkpoints::inspect_checkpoint(path, /*verify=*/false);
  checkpoints::ReadOptions o;
  o.skip_groups = skip_groups(info, needs);
  l.data = checkpoints::read_checkpoint(path, o);
  l.seconds = since(t0);
  return l;
}

// Reads paths[i + 1] on a second thread while the caller works on paths[i].
class Prefetcher {
 public:
  Prefetcher(std::vector<std::string> paths, Needs needs) : paths_(std::move(paths)), needs_(std::move(needs)) {
    if (!paths_.empty()) start(0);
  }
  bool done() const { return next_ >= paths_.size(); }
  Loaded next(Profile& prof) {
    PICO_CHECK(!done(), "prefetcher exhausted");
    const auto t0 = Clock::now();
    Loaded l = pending_.get();  // rethrows a read error
    prof.read_wait_seconds += since(t0);
    prof.read_seconds += l.seconds;
    prof.files_read += 1;
    prof.bytes_read += l.data.tensor_bytes();
    ++next_;
    if (next_ < paths_.size()) start(next_);
    return l;
  }

 private:
  void start(std::size_t i) {
    pending_ = std::async(std::launch::async, [path = paths_[i], needs = needs_] { return load(path, needs); });
  }
  std::vector<std::string> paths_;
  Needs needs_;
  std::size_t next_ = 0;
  std::future<Loaded> pending_;
};

std::optional<std::int64_t> attr_int(const checkpoints::CheckpointData& d, const std::string& g, const std::string& n) {
  const auto* v = d.attr(g, n);
  if (v == nullptr || !std::holds_alternative<std::int64_t>(*v)) return std::nullopt;
  return std::get<std::int64_t>(*v);
}

// ---------------------------------------------------------------------------------------
// Rows and their order

struct Keyed {
  std::array<std::int64_t, 5> key{};  // metric, sub-metric, component, layer, head
  std::string contributor;
  Row row;
};

constexpr std::int64_t kLayerEmbedding = -1;
constexpr std::int64_t kLayerOutputNorm = 1'000'000;
constexpr std::int64_t kLayerDeEmbedding = 1'000'001;
constexpr std::int64_t kLayerAll = 1'000'002;

void sort_rows(std::vector<Keyed>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const Keyed& a, const Keyed& b) {
    if (a.key != b.key) return a.key < b.key;
    if (a.contributor != b.contributor) {
      // numeric contributors ("2" < "10"), then pairs
      if (a.contributor.size() != b.contributor.size()) return a.contributor.size() < b.contributor.size();
      return a.contributor < b.contributor;
    }
    return a.row.step < b.row.step;
  });
}

// ---------------------------------------------------------------------------------------
// Model metrics (components)

std::string component_key(const ComponentSpec& c, const std::string& split) {
  return str(c.name, "|", c.layer_suffix, "|", c.value_layer, "|", c.output_layer, "|", data_type_name(c.data_type),
             "|", split);
}

struct CacheEntry {
  std::vector<ComponentTensor> tensors;
  std::vector<torch::Tensor> svals;  // lazily, per tensor
};

class StepComponents {
 public:
  StepComponents(const CheckpointView* train, const CheckpointView* val, const ModelShape& shape, Profile& prof)
      : train_(train), val_(val), shape_(shape), prof_(prof) {}

  CacheEntry& get(const ComponentSpec& c, const std::string& split, std::int64_t layer) {
    const std::string key = str(component_key(c, split), "|", layer);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    const auto t0 = Clock::now();
    const CheckpointView* view = split == "val" ? val_ : train_;
    PICO_CHECK(view != nullptr, "no view for split ", split);
    CacheEntry e;
    e.tensors = build_component(*view, c, shape_, layer);
    e.svals.resize(e.tensors.size());
    prof_.component_seconds += since(t0);
    return cache_.emplace(key, std::move(e)).first->second;
  }

  const torch::Tensor& svals(CacheEntry& e, std::size_t i) {
    if (!e.svals[i].defined()) {
      const auto t0 = Clock::now();
      e.svals[i] = singular_values(e.tensors[i].value);
      prof_.svd_seconds += since(t0);
    }
    return e.svals[i];
  }

 private:
  const CheckpointView* train_;
  const CheckpointView* val_;
  const ModelShape& shape_;
  Profile& prof_;
  std::map<std::string, CacheEntry> cache_;
};

double compute_single(const MetricConfig& m, StepComponents& sc, CacheEntry& e, std::size_t i, Profile& prof) {
  const MetricKind k = m.info().kind;
  const bool uses_svd = k == MetricKind::kPer || k == MetricKind::kConditionNumber ||
                        (k == MetricKind::kNorm && m.norm_type == "nuclear");
  torch::Tensor s;
  if (uses_svd) s = sc.svals(e, i);
  const auto t0 = Clock::now();
  const torch::Tensor& x = e.tensors[i].value;
  double v = 0;
  switch (k) {
    case MetricKind::kPer:
      v = proportional_effective_rank(s);
      break;
    case MetricKind::kConditionNumber:
      v = condition_number(s);
      break;
    case MetricKind::kGini:
      v = gini(x);
      break;
    case MetricKind::kHoyer:
      v = hoyer(x);
      break;
    case MetricKind::kNorm:
      if (m.norm_type == "nuclear")
        v = norm_nuclear(s);
      else if (m.norm_type == "frobenius")
        v = norm_frobenius(x);
      else
        v = norm_inf(x);
      break;
    default:
      PICO_CHECK(false, "not a single-checkpoint metric: ", m.metric_name);
  }
  prof.metric_seconds[m.output_name()] += since(t0);
  return v;
}

double compute_comparative(const MetricConfig& m, const torch::Tensor& x, const torch::Tensor& target,
                           const std::string& what, Profile& prof) {
  const auto t0 = Clock::now();
  double v = 0;
  try {
    if (m.info().kind == MetricKind::kCka)
      v = linear_cka(x, target);
    else
      v = pwcca(x, target).value;
  } catch (const Error& e) {
    throw Error(str(m.metric_name, " on ", what, ": ", e.what()), e.hint());
  }
  prof.metric_seconds[m.metric_name] += since(t0);
  return v;
}

std::vector<std::int64_t> resolve_layers(const std::vector<std::int64_t>& layers, const ModelShape& shape,
                                         const std::string& key) {
  if (layers.empty()) {
    std::vector<std::int64_t> all;
    for (std::int64_t l = 0; l < shape.n_layers; ++l) all.push_back(l);
    return all;
  }
  for (auto l : layers)
    if (l >= shape.n_layers)
      throw Error(str(key, ": layer ", l, " does not exist: the model has ", shape.n_layers,
                      " layers (model.n_layers in the checkpoint's config)"),
                  str("layers are 0..", shape.n_layers - 1, ", or all"));
  return layers;
}

std::vector<std::int64_t> resolve_steps(const std::vector<std::int64_t>& requested, const ContributorFiles& c,
                                        const std::string& what) {
  std::vector<std::int64_t> available;
  for (const auto& [s, p] : c.files) available.push_back(s);
  if (requested.empty()) return available;
  std::vector<std::int64_t> missing;
  for (auto s : requested)
    if (!c.files.count(s)) missing.push_back(s);
  if (!missing.empty())
    throw Error(str("no checkpoint for ", what, " ", steps_text(missing), " in ", c.dir, " (it has steps ",
                    steps_text(available, 20), ")"),
                "pico train saves every checkpointing.save_every_n_steps steps and keeps the newest "
                "checkpointing.keep_latest_k files: raise keep_latest_k to keep a whole trajectory, or analyze the "
                "steps listed");
  std::vector<std::int64_t> out = requested;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

struct StepJob {
  std::int64_t step = 0;
  std::string path;
  bool analyze = false;  // compute the metrics at this step
  bool target = false;   // build the components of comparative metrics targeting it
};

void run_model_metrics(const AnalysisConfig& cfg, const ContributorFiles& contributor, bool multi,
                       const ModelShape& shape, const std::vector<std::size_t>& metric_ids,
                       const std::vector<std::int64_t>& steps, std::vector<Keyed>& out, AnalysisResult& result,
                       ProgressLine* progress, std::size_t& files_done, std::size_t files_total,
                       Clock::time_point t_start) {
  Profile& prof = result.profile;
  // Resolve layers and targets.
  std::vector<std::vector<std::vector<std::int64_t>>> layers(cfg.metrics.size());
  std::map<std::size_t, std::int64_t> target_of;  // metric id → target step
  Needs needs;
  for (auto i : metric_ids) {
    const MetricConfig& m = cfg.metrics[i];
    layers[i].resize(m.components.size());
    for (std::size_t j = 0; j < m.components.size(); ++j) {
      const ComponentSpec& c = m.components[j];
      layers[i][j] = resolve_layers(c.layers, shape, str("metrics[", i, "].components[", j, "].layers"));
      for (auto l : layers[i][j])
        for (auto kind : {DataType::kWeights, DataType::kGradients, DataType::kActivations})
          for (auto& mod : c.modules_needed(l, kind)) needs.ld[m.data_split][kind].insert(mod);
    }
    if (m.info().comparative) {
      const std::int64_t t = m.target_checkpoint.value_or(steps.back());
      resolve_steps({t}, contributor, str("metrics[", i, "].target_checkpoint"));
      target_of[i] = t;
      if (m.data_split == "train") {
        const std::string note =
            str(m.metric_name,
                " on the train split compares activations of different batches (each checkpoint records "
                "the batch of its own step); data_split: val uses one fixed batch for every checkpoint");
        if (std::find(result.notes.begin(), result.notes.end(), note) == result.notes.end()) {
          log_warn(note);
          result.notes.push_back(note);
        }
      }
    }
  }
  // Jobs: target steps first (so that every later step can be compared), then the rest.
  // With one target its file is analyzed in the same pass; with several (e.g. cka against
  // step 40 and pwcca against step 20) a target file is read once for the targets and again
  // when its step is analyzed, since every target must be built before any step is compared.
  std::set<std::int64_t> targets;
  for (auto& [i, t] : target_of) targets.insert(t);
  const bool one_target = targets.size() == 1;
  std::vector<StepJob> jobs;
  for (auto t : targets)
    jobs.push_back({t, contributor.files.at(t), one_target && std::binary_search(steps.begin(), steps.end(), t), true});
  for (auto s : steps)
    if (!one_target || !targets.count(s)) jobs.push_back({s, contributor.files.at(s), true, false});
  std::vector<std::string> paths;
  for (const auto& j : jobs) paths.push_back(j.path);
  Prefetcher prefetch(paths, needs);

  // Target components: key (component key | layer) + target step → tensors.
  std::map<std::string, std::vector<ComponentTensor>> target_tensors;
  const std::string who = multi ? std::to_string(contributor.index) : "";

  for (const auto& job : jobs) {
    Loaded loaded = prefetch.next(prof);
    const std::optional<std::int64_t> round = attr_int(loaded.data, "/train_state", "round");
    const bool show_round = shape.outer_inner_steps > 0 || (round && *round > 0);
    std::optional<CheckpointView> train_view, val_view;
    if (needs.ld.count("train")) train_view.emplace(loaded.data, "train");
    if (needs.ld.count("val")) val_view.emplace(loaded.data, "val");
    StepComponents sc(train_view ? &*train_view : nullptr, val_view ? &*val_view : nullptr, shape, prof);

    if (job.target)
      for (auto& [i, t] : target_of) {
        if (t != job.step) continue;
        const MetricConfig& m = cfg.metrics[i];
        for (std::size_t j = 0; j < m.components.size(); ++j)
          for (auto l : layers[i][j]) {
            const std::string key = str(component_key(m.components[j], m.data_split), "|", l, "@", t);
            if (!target_tensors.count(key)) target_tensors[key] = sc.get(m.components[j], m.data_split, l).tensors;
          }
      }

    if (job.analyze) {
      for (auto i : metric_ids) {
        const MetricConfig& m = cfg.metrics[i];
        const bool comparative = m.info().comparative;
        for (std::size_t j = 0; j < m.components.size(); ++j) {
          const ComponentSpec& c = m.components[j];
          for (auto l : layers[i][j]) {
            CacheEntry& e = sc.get(c, m.data_split, l);
            const std::vector<ComponentTensor>* target = nullptr;
            if (comparative) {
              const std::string key = str(component_key(c, m.data_split), "|", l, "@", target_of.at(i));
              target = &target_tensors.at(key);
              PICO_CHECK_EQ(target->size(), e.tensors.size(), "target component count");
            }
            for (std::size_t h = 0; h < e.tensors.size(); ++h) {
              const ComponentTensor& ct = e.tensors[h];
              double v = 0;
              if (comparative) {
                const std::string what = str(c.label(), " ", data_type_name(c.data_type), " of layer ", l,
                                             ct.head >= 0 ? str(" head ", ct.head) : std::string(), " (", m.data_split,
                                             " split, step ", job.step, " vs ", target_of.at(i), ")");
                v = compute_comparative(m, ct.value, (*target)[h].value, what, prof);
              } else {
                v = compute_single(m, sc, e, h, prof);
              }
              Keyed k;
              k.key = {static_cast<std::int64_t>(i), 0, static_cast<std::int64_t>(j), l, ct.head};
              k.contributor = who;
              Row& r = k.row;
              r.metric = m.output_name();
              r.component = c.label();
              r.data_type = data_type_name(c.data_type);
              r.data_split = m.data_split;
              r.layer = std::to_string(l);
              r.step = job.step;
              r.value = v;
              r.head = ct.head >= 0 ? std::to_string(ct.head) : "";
              r.contributor = who;
              if (show_round) r.round = round;
              if (comparative) r.target_step = target_of.at(i);
              out.push_back(std::move(k));
            }
          }
        }
      }
    }
    ++files_done;
    if (progress) {
      const double el = since(t_start);
      // Target files read besides the analyzed steps can take files_done past files_total.
      const double left = files_total > files_done ? static_cast<double>(files_total - files_done) : 0.0;
      const double eta = el / static_cast<double>(files_done) * left;
      progress->update(str("analyze: ", files_done, "/", files_total, " checkpoints (step ", job.step,
                           multi ? str(", contributor ", contributor.index) : std::string(), ") · ", out.size(),
                           " values · ", format_duration(el), " elapsed, ~", format_duration(eta), " left"));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Decentralized metrics

// "layers.3.attention.q_proj.weight" → ("3", 3); "embedding_proj.weight" → ("embedding_proj", -1)
std::pair<std::string, std::int64_t> layer_group(const std::string& param) {
  if (starts_with(param, "layers.")) {
    const auto dot = param.find('.', 7);
    const std::string num = param.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
    if (!num.empty() && num.find_first_not_of("0123456789") == std::string::npos) return {num, std::stoll(num)};
  }
  std::string name = param;
  if (ends_with(name, ".weight")) name = name.substr(0, name.size() - 7);
  if (name == "embedding_proj") return {name, kLayerEmbedding};
  if (name == "output_norm") return {name, kLayerOutputNorm};
  if (name == "de_embedding_proj") return {name, kLayerDeEmbedding};
  return {name, kLayerDeEmbedding + 1};
}

double sq_norm(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kDouble);
  return (d * d).sum().item<double>();
}

struct GroupSums {
  std::map<std::string, double> v;  // group → sum
  std::map<std::string, std::int64_t> order;
  void add(const std::string& g, std::int64_t ord, double x) {
    v[g] += x;
    order[g] = ord;
    v["all"] += x;
    order["all"] = kLayerAll;
  }
};

bool layer_selected(const std::vector<std::int64_t>& layers, std::int64_t order) {
  if (layers.empty()) return true;
  return std::find(layers.begin(), layers.end(), order) != layers.end();
}

void run_decentralized(const AnalysisConfig& cfg, const RunLayout& layout, const std::vector<std::int64_t>& who,
                       const ModelShape& shape, const std::vector<std::size_t>& metric_ids, std::vector<Keyed>& out,
                       AnalysisResult& result, ProgressLine* progress, std::size_t& files_done, std::size_t files_total,
                       Clock::time_point t_start) {
  Profile& prof = result.profile;
  std::optional<std::size_t> drift_id, cosine_id;
  for (auto i : metric_ids) {
    if (cfg.metrics[i].info().kind == MetricKind::kDrift)
      drift_id = i;
    else
      cosine_id = i;
  }
  if (cosine_id && who.size() < 2)
    throw Error(str("pseudo_gradient_cosine compares contributors' pseudo-gradients, but ", layout.run_path, " has ",
                    who.size() == 1 && !layout.multi_contributor ? "one contributor" : str(who.size(), " selected"),
                    " (", layout.describe(), ")"),
                "a run with N local contributors writes checkpoints/contributor_<w>/step_*.h5 (select at least two "
                "with contributors: all); for one contributor use drift");
  // Steps every selected contributor saved.
  std::vector<std::int64_t> steps;
  {
    std::vector<std::int64_t> common;
    bool first = true;
    for (auto w : who) {
      const auto mine = resolve_steps(cfg.steps, *layout.contributor(w), "step");
      if (first)
        common = mine;
      else {
        std::vector<std::int64_t> both;
        std::set_intersection(common.begin(), common.end(), mine.begin(), mine.end(), std::back_inserter(both));
        common = std::move(both);
      }
      first = false;
    }
    steps = common;
    if (steps.empty())
      throw Error(
          str("the contributors of ", layout.run_path, " have no saved step in common (", layout.describe(), ")"),
          "decentralized metrics compare contributors at the same step; analyze a run whose contributors save "
          "at the same steps");
  }
  const std::int64_t H = shape.outer_inner_steps;
  Needs needs;
  needs.model = drift_id.has_value();
  needs.theta_g = true;
  needs.pseudo_gradient = cosine_id.has_value();
  std::vector<std::string> paths;
  for (auto s : steps)
    for (auto w : who) paths.push_back(layout.contributor(w)->files.at(s));
  Prefetcher prefetch(paths, needs);
  std::set<std::int64_t> rounds_done;  // cosine once per round
  std::int64_t cosine_steps = 0;
  std::vector<std::int64_t> steps_without_pg;

  const auto add_row = [&](std::size_t id, std::int64_t sub, const std::string& metric, const std::string& component,
                           const std::string& data_type, const std::string& layer, std::int64_t order,
                           const std::string& contributor, std::int64_t step, std::optional<std::int64_t> round,
                           double value) {
    Keyed k;
    k.key = {static_cast<std::int64_t>(id), sub, 0, order, -1};
    k.contributor = contributor;
    k.row.metric = metric;
    k.row.component = component;
    k.row.data_type = data_type;
    k.row.layer = layer;
    k.row.step = step;
    k.row.value = value;
    k.row.contributor = contributor;
    k.row.round = round;
    out.push_back(std::move(k));
  };

  for (auto step : steps) {
    std::map<std::int64_t, std::map<std::string, torch::Tensor>> deltas;  // w → param → Δ_w (float64)
    std::map<std::string, torch::Tensor> theta_g0;                        // the first contributor's θ_g
    std::optional<std::int64_t> round;
    bool all_have_pg = true;
    for (auto w : who) {
      Loaded l = prefetch.next(prof);
      const auto t0 = Clock::now();
      const auto& d = l.data;
      round = attr_int(d, "/train_state", "round");
      const auto theta = d.in_group("/optim/outer/theta_g");
      if (theta.empty())
        throw MissingData(str("checkpoint ", l.path,
                              " has no /optim/outer/theta_g (θ_g, the global model): it was not "
                              "written by a DiLoCo run"),
                          "drift and pseudo_gradient_cosine need a run with the DiLoCo outer optimizer (the outer "
                          "section of the run config); its checkpoints store θ_g and the pseudo-gradients");
      std::map<std::string, const torch::Tensor*> theta_by;
      for (const auto* e : theta) theta_by[e->name] = &e->tensor;
      // θ_g is bit-identical on every contributor (they all apply the same outer step).
      if (theta_g0.empty()) {
        for (const auto* e : theta) theta_g0[e->name] = e->tensor;
      } else {
        for (const auto* e : theta) {
          auto it = theta_g0.find(e->name);
          if (it == theta_g0.end() || !torch::equal(it->second, e->tensor)) {
            const std::string note = str("θ_g of contributor ", w, " differs from contributor ", who.front(),
                                         "'s at step ", step, " (", e->name,
                                         "): contributors should hold identical θ_g; drift is measured against each "
                                         "contributor's own");
            log_warn(note);
            result.notes.push_back(note);
            break;
          }
        }
      }
      const std::string wname = std::to_string(w);
      if (drift_id) {
        GroupSums diff, base;
        for (const auto* e : d.in_group("/model")) {
          auto it = theta_by.find(e->name);
          if (it == theta_by.end())
            throw MissingData(
                str("checkpoint ", l.path, " has /model/", e->name, " but no /optim/outer/theta_g/", e->name),
                "the file is incomplete; re-save it with pico train");
          if (!it->second->sizes().equals(e->tensor.sizes()))
            throw Error(str("checkpoint ", l.path, ": /model/", e->name, " has shape ", e->tensor.sizes(),
                            " but θ_g has ", it->second->sizes()),
                        "the file is damaged");
          const auto [g, ord] = layer_group(e->name);
          diff.add(g, ord, sq_norm(e->tensor.to(torch::kDouble) - it->second->to(torch::kDouble)));
          base.add(g, ord, sq_norm(*it->second));
        }
        const auto& dm = cfg.metrics[*drift_id];
        for (const auto& [g, v] : diff.v) {
          const std::int64_t ord = diff.order[g];
          if (!dm.layers.empty() && (g == "all" || !layer_selected(dm.layers, ord))) continue;
          const double drift = std::sqrt(v), norm_g = std::sqrt(base.v[g]);
          add_row(*drift_id, 0, "drift", "model", "weights", g, ord, wname, step, round, drift);
          add_row(*drift_id, 1, "drift_relative", "model", "weights", g, ord, wname, step, round,
                  norm_g > 0 ? drift / norm_g : std::numeric_limits<double>::quiet_NaN());
        }
      }
      if (cosine_id) {
        const auto pg = d.in_group("/pseudo_gradient");
        if (pg.empty())
          all_have_pg = false;
        else
          for (const auto* e : pg) deltas[w][e->name] = e->tensor.to(torch::kDouble);
      }
      prof.decentralized_seconds += since(t0);
      ++files_done;
      if (progress) {
        const double el = since(t_start);
        const double eta = el / static_cast<double>(files_done) * static_cast<double>(files_total - files_done);
        progress->update(str("analyze (decentralized): ", files_done, "/", files_total, " checkpoints (step ", step,
                             ", contributor ", w, ") · ", format_duration(el), " elapsed, ~", format_duration(eta),
                             " left"));
      }
    }
    if (!cosine_id) continue;
    // A round ends at this step: step % H == 0 (H = outer.inner_steps); without H in the
    // config, every step whose files carry pseudo-gradients, once per round.
    const bool round_end = H > 0 ? (step > 0 && step % H == 0) : all_have_pg && round && !rounds_done.count(*round);
    if (!round_end) continue;
    if (!all_have_pg) {
      steps_without_pg.push_back(step);
      continue;
    }
    if (round) rounds_done.insert(*round);
    ++cosine_steps;
    const auto t0 = Clock::now();
    const auto& cm = cfg.metrics[*cosine_id];
    // Per contributor: ‖Δ_w‖² per group; per pair: Δ_a·Δ_b per group.
    std::map<std::int64_t, GroupSums> sq;
    for (auto& [w, params] : deltas)
      for (auto& [name, t] : params) {
        const auto [g, ord] = layer_group(name);
        sq[w].add(g, ord, (t * t).sum().item<double>());
      }
    for (std::size_t a = 0; a < who.size(); ++a)
      for (std::size_t b = a + 1; b < who.size(); ++b) {
        const auto wa = who[a], wb = who[b];
        GroupSums dot;
        for (auto& [name, ta] : deltas[wa]) {
          auto it = deltas[wb].find(name);
          if (it == deltas[wb].end() || !it->second.sizes().equals(ta.sizes()))
            throw Error(str("at step ", step, " contributor ", wb,
                            "'s /pseudo_gradient has no tensor like contributor ", wa, "'s ", name),
                        "the contributors' checkpoints do not belong to one run");
          const auto [g, ord] = layer_group(name);
          dot.add(g, ord, (ta * it->second).sum().item<double>());
        }
        for (const auto& [g, v] : dot.v) {
          const std::int64_t ord = dot.order[g];
          if (!cm.layers.empty() && (g == "all" || !layer_selected(cm.layers, ord))) continue;
          const double na = std::sqrt(sq[wa].v[g]), nb = std::sqrt(sq[wb].v[g]);
          const double cosv = na > 0 && nb > 0 ? v / (na * nb) : std::numeric_limits<double>::quiet_NaN();
          add_row(*cosine_id, 0, "pseudo_gradient_cosine", "pseudo_gradient", "pseudo_gradients", g, ord,
                  str(wa, "-", wb), step, round, cosv);
        }
      }
    for (auto w : who)
      for (const auto& [g, v] : sq[w].v) {
        const std::int64_t ord = sq[w].order[g];
        if (!cm.layers.empty() && (g == "all" || !layer_selected(cm.layers, ord))) continue;
        add_row(*cosine_id, 1, "pseudo_gradient_norm", "pseudo_gradient", "pseudo_gradients", g, ord, std::to_string(w),
                step, round, std::sqrt(v));
      }
    prof.decentralized_seconds += since(t0);
  }
  if (cosine_id && !steps_without_pg.empty()) {
    const std::string note = str("steps ", steps_text(steps_without_pg),
                                 " end an outer round but some contributors' "
                                 "checkpoints there have no /pseudo_gradient: no cosine for them");
    log_warn(note);
    result.notes.push_back(note);
  }
  if (cosine_id && cosine_steps == 0)
    throw MissingData(str("no analyzed step of ", layout.run_path, " has every contributor's pseudo-gradient (steps ",
                          steps_text(steps),
                          H > 0 ? str("; outer.inner_steps = ", H, ", so rounds end at multiples of ", H)
                                : std::string("; the run's config has no outer.inner_steps"),
                          ")"),
                      "pseudo-gradients (/pseudo_gradient) are saved at steps that end an outer round: set "
                      "checkpointing.save_every_n_steps to a multiple of outer.inner_steps and analyze those steps");
}

}  // namespace

RunInfo inspect_run(const std::string& run_path) {
  RunInfo info;
  info.layout = discover_run(run_path);
  const auto& first = info.layout.contributors.front();
  const std::string path = first.files.begin()->second;
  const auto fi = checkpoints::inspect_checkpoint(path, /*verify=*/false);
  auto cfg = fi.attrs.find("/config");
  if (cfg == fi.attrs.end() || !cfg->second.count("yaml") ||
      !std::holds_alternative<std::string>(cfg->second.at("yaml")))
    throw checkpoints::CorruptCheckpoint(str("checkpoint ", path, " has no /config@yaml attribute (the run config)"),
                                         "the file was not written by pico train; analyze a pico run");
  const std::string& yaml = std::get<std::string>(cfg->second.at("yaml"));
  info.shape = parse_model_shape(yaml, "checkpoint " + path);
  info.run_name = run_name_from_config(yaml);
  if (auto ld = fi.attrs.find("/learning_dynamics"); ld != fi.attrs.end())
    if (auto s = ld->second.find("layer_suffixes");
        s != ld->second.end() && std::holds_alternative<std::string>(s->second))
      for (const auto& p : split(std::get<std::string>(s->second), ','))
        if (!trim(p).empty()) info.recorded_suffixes.push_back(trim(p));
  return info;
}

AnalysisResult run_analysis(const AnalysisConfig& cfg, const RunnerOptions& options) {
  cfg.validate();
  const auto t_start = Clock::now();
  AnalysisResult result;
  const RunInfo info = inspect_run(cfg.run_path);
  result.layout = info.layout;
  result.shape = info.shape;
  result.run_path = cfg.run_path;
  result.analysis_name = cfg.analysis_name.empty() ? (info.run_name.empty() ? "analysis" : info.run_name + "_analysis")
                                                   : cfg.analysis_name;
  const RunLayout& layout = result.layout;

  // Contributors.
  std::vector<std::int64_t> who;
  if (!cfg.contributors) {
    for (const auto& c : layout.contributors) who.push_back(c.index);
  } else {
    for (auto w : *cfg.contributors) {
      if (layout.contributor(w) == nullptr) {
        std::vector<std::string> have;
        for (const auto& c : layout.contributors) have.push_back(std::to_string(c.index));
        throw Error(str("run ", cfg.run_path, " has no contributor ", w, " (it has ", join(have, ", "), "; ",
                        layout.describe(), ")"),
                    "select contributors that exist, or contributors: all");
      }
      who.push_back(w);
    }
  }
  std::vector<std::size_t> model_ids, dec_ids;
  for (std::size_t i = 0; i < cfg.metrics.size(); ++i)
    (cfg.metrics[i].info().decentralized ? dec_ids : model_ids).push_back(i);
  for (auto i : dec_ids)
    for (auto l : cfg.metrics[i].layers) resolve_layers({l}, info.shape, str("metrics[", i, "].layers"));

  // Steps per contributor (validated up front, so that a bad step fails before any work).
  std::map<std::int64_t, std::vector<std::int64_t>> steps_of;
  std::size_t files_total = 0;
  std::set<std::int64_t> all_steps;
  if (!model_ids.empty())
    for (auto w : who) {
      steps_of[w] = resolve_steps(cfg.steps, *layout.contributor(w), "step");
      files_total += steps_of[w].size();
      all_steps.insert(steps_of[w].begin(), steps_of[w].end());
    }
  if (!dec_ids.empty()) {
    for (auto w : who) {
      const auto s = resolve_steps(cfg.steps, *layout.contributor(w), "step");
      all_steps.insert(s.begin(), s.end());
    }
    files_total += all_steps.size() * who.size();
  }
  result.steps.assign(all_steps.begin(), all_steps.end());
  log_info("analyze: ", layout.describe(), "; model ", info.shape.n_layers, " layers, d_model ", info.shape.d_model,
           ", ", info.shape.n_heads, " heads (", info.shape.n_kv_heads, " kv)");

  std::optional<ProgressLine> progress;
  if (options.progress) progress.emplace(std::chrono::seconds(10));
  std::vector<Keyed> keyed;
  std::size_t files_done = 0;
  if (!model_ids.empty())
    for (auto w : who)
      run_model_metrics(cfg, *layout.contributor(w), layout.multi_contributor, info.shape, model_ids, steps_of[w],
                        keyed, result, progress ? &*progress : nullptr, files_done, files_total, t_start);
  if (!dec_ids.empty())
    run_decentralized(cfg, layout, who, info.shape, dec_ids, keyed, result, progress ? &*progress : nullptr, files_done,
                      files_total, t_start);
  progress.reset();
  sort_rows(keyed);
  result.rows.reserve(keyed.size());
  for (auto& k : keyed) result.rows.push_back(std::move(k.row));
  result.profile.total_seconds = since(t_start);
  return result;
}

}  // namespace pico::analysis
