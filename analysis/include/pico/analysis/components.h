// pico/analysis/components.h — what a metric is computed on: one matrix per layer
// ("simple") or per attention head ("ov_circuit"), taken from one checkpoint.
//
// A checkpoint's learning-dynamics data (docs/CHECKPOINT_FORMAT.md) is read through a
// CheckpointView for one split:
//   weights      /learning_dynamics/<split>/weights/<module>  (else /model/<module>.weight) (out, in)
//   gradients    /learning_dynamics/<split>/gradients/<module>                              (out, in)
//   activations  /learning_dynamics/<split>/activations/<module>                            (B, out)
// Anything missing throws MissingData naming the dataset and the config key that records it.
//
// ov_circuit follows pico-analyze's src/components/ov_circuit.py exactly (see
// docs/ANALYSIS.md): for layer l and query head h, kv = h / (n_heads / n_kv_heads), hd =
// d_model / n_heads, V_h = v_proj.weight[kv·hd : (kv+1)·hd, :] (hd, C) and
// O_h = o_proj.weight[:, h·hd : (h+1)·hd] (C, hd):
//   weights      V_h · O_h                                  (hd, hd)
//   activations  v_act[:, kv·hd : (kv+1)·hd] · O_hᵀ         (B, C)   the head's write to the residual
//   gradients    O_h · ∂V_h + ∂O_h · V_h                    (C, C)   product rule of d(O_h V_h)
// and, per layer, the heads concatenated along dim 1 (head = -1).
//
// What this is not: no metric math (metrics.h), no file discovery (run_layout.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pico/checkpoints/checkpoint.h"
#include "pico/common/error.h"

namespace pico::analysis {

// A checkpoint lacks data the analysis asked for; the HINT says which config key records it.
class MissingData : public Error {
 public:
  using Error::Error;
};

enum class DataType { kWeights, kGradients, kActivations };
const char* data_type_name(DataType t);  // "weights", "gradients", "activations"
std::optional<DataType> parse_data_type(std::string_view name);

// The model's shape, from the checkpoint's /config YAML (model.* keys), plus the outer
// round length of a DiLoCo run.
struct ModelShape {
  std::int64_t n_layers = 0;
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;            // model.attention_n_heads
  std::int64_t n_kv_heads = 0;         // model.attention_n_kv_heads
  std::int64_t outer_inner_steps = 0;  // outer.inner_steps (H); 0 when the run has no outer optimizer
  std::int64_t head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
};

struct ComponentSpec {
  std::string name = "simple";  // "simple" | "ov_circuit"
  DataType data_type = DataType::kWeights;
  std::string layer_suffix;                       // simple: e.g. "swiglu.w_2"
  std::string value_layer = "attention.v_proj";   // ov_circuit
  std::string output_layer = "attention.o_proj";  // ov_circuit
  std::vector<std::int64_t> layers;               // empty = every layer
  // The `component` column of the output: the module suffix for simple, else the name.
  std::string label() const { return name == "simple" ? layer_suffix : name; }
  // Modules ("layers.3.swiglu.w_2") whose data of each kind building layer `l` reads.
  std::vector<std::string> modules_needed(std::int64_t l, DataType kind) const;
};

// One checkpoint's learning-dynamics data for one split, indexed for lookups.
class CheckpointView {
 public:
  CheckpointView(const checkpoints::CheckpointData& data, std::string split);
  const std::string& split() const { return split_; }
  const std::string& source() const { return data_.source; }
  // The tensors named in the header comment; MissingData when absent.
  const torch::Tensor& get(DataType kind, const std::string& module) const;
  bool has(DataType kind, const std::string& module) const;

 private:
  [[noreturn]] void missing(DataType kind, const std::string& module) const;
  const checkpoints::CheckpointData& data_;
  std::string split_;
  std::unordered_map<std::string, const torch::Tensor*> index_;  // full dataset path → tensor
};

struct ComponentTensor {
  std::int64_t layer = 0;
  std::int64_t head = -1;  // ov_circuit: the query head; -1 = the whole layer
  torch::Tensor value;     // 2-D: simple = as stored (float32); ov_circuit = float64 products
};

// The component's tensors at layer `l`: one for simple; n_heads + 1 for ov_circuit (each
// head, then the concatenation). Throws MissingData (data absent) or pico::Error (shapes
// that do not match `shape`, naming the dataset).
std::vector<ComponentTensor> build_component(const CheckpointView& view, const ComponentSpec& spec,
                                             const ModelShape& shape, std::int64_t l);

}  // namespace pico::analysis
