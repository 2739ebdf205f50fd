// Components: simple and ov_circuit tensors from one checkpoint (see components.h).
#include "pico/analysis/components.h"

#include <variant>

#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

std::string ld_group(const std::string& split, DataType kind) {
  return str("/learning_dynamics/", split, "/", data_type_name(kind));
}

std::string module_name(std::int64_t l, const std::string& suffix) {
  return str("layers.", l, ".", suffix);
}

std::string attr_text(const checkpoints::CheckpointData& d, const std::string& group, const std::string& name) {
  const auto* v = d.attr(group, name);
  return v ? checkpoints::format_attr(*v) : "";
}

}  // namespace

const char* data_type_name(DataType t) {
  switch (t) {
    case DataType::kWeights:
      return "weights";
    case DataType::kGradients:
      return "gradients";
    case DataType::kActivations:
      return "activations";
  }
  return "?";
}

std::optional<DataType> parse_data_type(std::string_view name) {
  if (name == "weights") return DataType::kWeights;
  if (name == "gradients") return DataType::kGradients;
  if (name == "activations") return DataType::kActivations;
  return std::nullopt;
}

std::vector<std::string> ComponentSpec::modules_needed(std::int64_t l, DataType kind) const {
  if (name == "simple") {
    if (kind == data_type) return {module_name(l, layer_suffix)};
    return {};
  }
  // ov_circuit
  const std::string v = module_name(l, value_layer), o = module_name(l, output_layer);
  switch (data_type) {
    case DataType::kWeights:
      if (kind == DataType::kWeights) return {v, o};
      return {};
    case DataType::kActivations:
      if (kind == DataType::kActivations) return {v};
      if (kind == DataType::kWeights) return {o};
      return {};
    case DataType::kGradients:
      if (kind == DataType::kWeights || kind == DataType::kGradients) return {v, o};
      return {};
  }
  return {};
}

CheckpointView::CheckpointView(const checkpoints::CheckpointData& data, std::string split)
    : data_(data), split_(std::move(split)) {
  index_.reserve(data.tensors.size());
  for (const auto& e : data.tensors) index_.emplace(e.path(), &e.tensor);
}

bool CheckpointView::has(DataType kind, const std::string& module) const {
  if (index_.count(ld_group(split_, kind) + "/" + module)) return true;
  return kind == DataType::kWeights && index_.count("/model/" + module + ".weight");
}

const torch::Tensor& CheckpointView::get(DataType kind, const std::string& module) const {
  if (auto it = index_.find(ld_group(split_, kind) + "/" + module); it != index_.end()) return *it->second;
  if (kind == DataType::kWeights)
    if (auto it = index_.find("/model/" + module + ".weight"); it != index_.end()) return *it->second;
  missing(kind, module);
}

void CheckpointView::missing(DataType kind, const std::string& module) const {
  const std::string path = ld_group(split_, kind) + "/" + module;
  const std::string& src = data_.source;
  if (kind == DataType::kWeights)
    throw MissingData(str("checkpoint ", src, " has no weight for module ", module, " (neither ", path, " nor /model/",
                          module, ".weight)"),
                      "check the layer suffix: pico-decoder's linear modules are attention.{q,k,v,o}_proj and "
                      "swiglu.w_{0,1,2}");
  if (!data_.has_group("/learning_dynamics"))
    throw MissingData(str("checkpoint ", src, " has no /learning_dynamics group, so it has no ", data_type_name(kind),
                          " (", path, ")"),
                      "gradients and activations are recorded by pico train at every checkpoint "
                      "(checkpointing.learning_dynamics); weights-only metrics work on any checkpoint");
  const std::string split_group = "/learning_dynamics/" + split_;
  const std::string samples = attr_text(data_, split_group, "num_samples");
  if (!data_.has_group(split_group) || samples == "0") {
    if (split_ == "val")
      throw MissingData(str("checkpoint ", src, " has no val learning dynamics (", split_group, "@num_samples = ",
                            samples.empty() ? "absent" : samples, "): the run's dataset has no validation split"),
                        "use data_split: train, or prepare the dataset with a validation split "
                        "(pico data prepare --val-fraction) and train again");
    throw MissingData(str("checkpoint ", src, " has no ", split_group, " data"),
                      "learning dynamics are recorded at every save by pico train (checkpointing.learning_dynamics)");
  }
  std::string recorded = attr_text(data_, "/learning_dynamics", "layer_suffixes");
  std::string suffix = module;
  if (starts_with(module, "layers.")) {
    const auto dot = module.find('.', 7);
    if (dot != std::string::npos) suffix = module.substr(dot + 1);
  }
  throw MissingData(str("checkpoint ", src, " has no ", path,
                        " (recorded modules end in: ", recorded.empty() ? "none" : recorded, ")"),
                    str("add \"", suffix,
                        "\" to checkpointing.learning_dynamics.layer_suffixes in the run config "
                        "so that pico train records it"));
}

std::vector<ComponentTensor> build_component(const CheckpointView& view, const ComponentSpec& spec,
                                             const ModelShape& shape, std::int64_t l) {
  std::vector<ComponentTensor> out;
  if (spec.name == "simple") {
    const torch::Tensor& t = view.get(spec.data_type, module_name(l, spec.layer_suffix));
    if (t.dim() != 2)
      throw Error(str("checkpoint ", view.source(), ": ", module_name(l, spec.layer_suffix), " ",
                      data_type_name(spec.data_type), " has shape ", t.sizes(), ", expected a matrix"),
                  "simple components are linear layers (out, in) or their activations (B, out)");
    out.push_back({l, -1, t});
    return out;
  }
  PICO_CHECK(spec.name == "ov_circuit", "unknown component ", spec.name);
  const std::int64_t H = shape.n_heads, KV = shape.n_kv_heads, hd = shape.head_dim(), C = shape.d_model;
  PICO_CHECK(H > 0 && KV > 0 && H % KV == 0 && hd * H == C, "bad model shape: heads ", H, ", kv heads ", KV,
             ", d_model ", C);
  const std::string vname = module_name(l, spec.value_layer), oname = module_name(l, spec.output_layer);
  auto check_shape = [&](const torch::Tensor& t, const std::string& what, std::vector<std::int64_t> want) {
    if (t.sizes().vec() != want)
      throw Error(str("checkpoint ", view.source(), ": ", what, " has shape ", t.sizes(), ", expected ",
                      torch::IntArrayRef(want), " for d_model ", C, ", ", H, " heads, ", KV, " kv heads"),
                  "ov_circuit needs value_layer = the value projection (attention.v_proj) and output_layer = the "
                  "output projection (attention.o_proj)");
  };
  // Products in float64, so that they carry no float32 rounding into the metrics.
  auto f64 = [](const torch::Tensor& t) { return t.to(torch::kDouble); };
  const torch::Tensor& wo_stored = view.get(DataType::kWeights, oname);  // (C, H·hd)
  check_shape(wo_stored, oname + " weight", {C, H * hd});
  const torch::Tensor wo = f64(wo_stored);
  const std::int64_t group = H / KV;  // query heads per kv head
  std::vector<torch::Tensor> heads;
  heads.reserve(static_cast<std::size_t>(H));
  if (spec.data_type == DataType::kActivations) {
    const torch::Tensor av = f64(view.get(DataType::kActivations, vname));  // (B, KV·hd)
    if (av.dim() != 2 || av.size(1) != KV * hd)
      throw Error(str("checkpoint ", view.source(), ": ", vname, " activations have shape ", av.sizes(),
                      ", expected (B, ", KV * hd, ")"),
                  "ov_circuit's value_layer must be the value projection (attention.v_proj)");
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t kv = h / group;
      heads.push_back(av.narrow(1, kv * hd, hd).mm(wo.narrow(1, h * hd, hd).t()));  // (B, C)
    }
  } else {
    const torch::Tensor wv = f64(view.get(DataType::kWeights, vname));  // (KV·hd, C)
    check_shape(wv, vname + " weight", {KV * hd, C});
    if (spec.data_type == DataType::kWeights) {
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t kv = h / group;
        heads.push_back(wv.narrow(0, kv * hd, hd).mm(wo.narrow(1, h * hd, hd)));  // (hd, hd)
      }
    } else {
      const torch::Tensor gv = f64(view.get(DataType::kGradients, vname));
      const torch::Tensor go = f64(view.get(DataType::kGradients, oname));
      check_shape(gv, vname + " gradient", {KV * hd, C});
      check_shape(go, oname + " gradient", {C, H * hd});
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t kv = h / group;
        const torch::Tensor o_h = wo.narrow(1, h * hd, hd), go_h = go.narrow(1, h * hd, hd);    // (C, hd)
        const torch::Tensor v_h = wv.narrow(0, kv * hd, hd), gv_h = gv.narrow(0, kv * hd, hd);  // (hd, C)
        heads.push_back(o_h.mm(gv_h) + go_h.mm(v_h));                                           // (C, C)
      }
    }
  }
  for (std::int64_t h = 0; h < H; ++h) out.push_back({l, h, heads[static_cast<std::size_t>(h)]});
  out.push_back({l, -1, torch::cat(heads, 1)});
  return out;
}

}  // namespace pico::analysis
