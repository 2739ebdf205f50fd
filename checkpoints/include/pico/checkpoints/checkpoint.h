// pico/checkpoints/checkpoint.h — one rich checkpoint as an HDF5 file: named tensors in
// groups, scalar attributes, the resolved config. Layout: docs/CHECKPOINT_FORMAT.md.
//
// The checkpointer knows no component types. A component (the trainer, an outer
// optimizer) describes its state as CheckpointData — an ordered list of (group, name,
// tensor) plus attributes per group — and reads it back by the same names. Adding
// /optim/outer/<param>/momentum or /pseudo_gradient/<param> later changes nothing here.
//
// What this is not: it does not know which groups a training run needs (trainer/
// checkpointing.cpp decides), nor where files live in a run (store.h does).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "pico/common/error.h"

namespace pico::checkpoints {

// The root attributes `format` and `format_version` identify a pico checkpoint. Bump the
// version when a reader of the old version would misread the new layout.
inline constexpr const char* kFormatName = "pico-checkpoint";
inline constexpr std::int64_t kFormatVersion = 1;

// A checkpoint file that cannot be used as such: missing, truncated, not HDF5, a failed
// checksum, a wrong format or version. Resume skips such files and falls back to an older
// one (a config mismatch is a plain pico::Error: the file is fine, the run is not).
class CorruptCheckpoint : public Error {
 public:
  using Error::Error;
};

using AttrValue = std::variant<std::int64_t, double, std::string>;

struct TensorEntry {
  std::string group;     // absolute group path: "/model", "/optim/inner/layers.0.attention.q_proj.weight"
  std::string name;      // dataset name inside the group: "layers.0.attention.q_proj.weight", "exp_avg"
  torch::Tensor tensor;  // CPU; float32/64, float16, bfloat16 (stored as float32), int64/32, uint8, bool
  std::string path() const { return group == "/" ? "/" + name : group + "/" + name; }
};

struct CheckpointData {
  std::string config_yaml;                                        // → attribute /config@yaml
  std::map<std::string, std::map<std::string, AttrValue>> attrs;  // group path → name → value
  std::vector<std::string> groups;   // created even when empty ("/optim/outer", "/pseudo_gradient")
  std::vector<TensorEntry> tensors;  // written in this order; read back in it
  std::string source;                // file it was read from ("" when built in memory), for errors

  void set_attr(const std::string& group, const std::string& name, AttrValue value);
  void add_group(const std::string& group);  // also implied by attrs and tensors
  void add(const std::string& group, const std::string& name, torch::Tensor tensor);

  const AttrValue* attr(const std::string& group, const std::string& name) const;
  // Typed attribute lookups; a missing or mistyped one throws CorruptCheckpoint naming source.
  std::int64_t attr_int(const std::string& group, const std::string& name) const;
  double attr_double(const std::string& group, const std::string& name) const;
  std::string attr_string(const std::string& group, const std::string& name) const;

  const TensorEntry* find(const std::string& group, const std::string& name) const;
  // Like find, but a missing tensor throws CorruptCheckpoint naming the path and source.
  const torch::Tensor& tensor(const std::string& group, const std::string& name) const;
  // Tensors directly in `group`, in file order.
  std::vector<const TensorEntry*> in_group(const std::string& group) const;
  bool has_group(const std::string& group) const;
  std::uint64_t tensor_bytes() const;  // payload bytes of every tensor
};

struct WriteOptions {
  std::size_t chunk_bytes = 1 << 20;  // target size of one HDF5 chunk (each carries a Fletcher32)
  bool fletcher32 = true;             // checksum every chunk of every chunked dataset
};

struct WriteResult {
  std::string path;
  std::uint64_t bytes = 0;   // file size
  std::string sha256;        // of the whole file, computed from the written bytes
  double write_seconds = 0;  // HDF5 create + write + close
  double sync_seconds = 0;   // fsync of the file, rename, fsync of the directory
  double hash_seconds = 0;   // SHA-256 of the file (read back from the page cache)
};

// Writes `data` to `path` crash-safely: to ".NAME.tmp.PID" in the same directory, fsync,
// rename over `path`, fsync the directory. A crash at any point leaves either no file or
// the complete one at `path` (and possibly a stale temporary, removed by the store).
// Blocks the calling thread for the whole write. Throws pico::Error (disk full, no
// permission, unsupported dtype) naming the path and removes the temporary.
//
// Fault injection for tests: PICO_FAULT_CHECKPOINT_PAUSE="NAME:SECONDS" (e.g.
// "step_000010.h5:60") sleeps SECONDS after half of the tensors of NAME have been written
// to its temporary file — a window in which a test kills the process mid-save.
WriteResult write_checkpoint(const std::string& path, const CheckpointData& data, const WriteOptions& options = {});

struct ReadOptions {
  // Groups (and everything below them) not loaded, e.g. {"/learning_dynamics"} on resume.
  std::vector<std::string> skip_groups;
};

// Reads a whole checkpoint (every tensor is checked against its Fletcher32 checksums).
// Throws CorruptCheckpoint — naming the file, the dataset and a HINT — for a missing,
// truncated or corrupt file, a failed checksum, or a wrong format name/version.
CheckpointData read_checkpoint(const std::string& path, const ReadOptions& options = {});

// One dataset as `pico checkpoint inspect` shows it.
struct DatasetInfo {
  std::string path;   // "/model/embedding_proj.weight"
  std::string dtype;  // "float32", ...
  std::vector<std::int64_t> shape;
  std::uint64_t bytes = 0;  // payload (elements × element size)
  bool chunked = false;
  bool fletcher32 = false;
  bool verified = false;  // read back in full, every checksum passed
  std::string error;      // why reading failed ("" when it did not)
};

struct FileInfo {
  std::string path;
  std::uint64_t file_bytes = 0;
  std::int64_t format_version = 0;
  std::map<std::string, std::map<std::string, AttrValue>> attrs;  // every group's attributes
  std::vector<std::string> groups;                                // every group, file order
  std::vector<DatasetInfo> datasets;
  bool all_verified() const;
};

// Lists every group, attribute and dataset; with `verify`, reads every dataset in full
// (one at a time) so that each chunk's Fletcher32 is checked. A dataset that fails is
// reported in its DatasetInfo::error rather than thrown; a file that cannot be opened,
// or has the wrong format/version, throws CorruptCheckpoint.
FileInfo inspect_checkpoint(const std::string& path, bool verify = true);

std::string dtype_name(torch::ScalarType t);
std::string format_attr(const AttrValue& v);

}  // namespace pico::checkpoints
