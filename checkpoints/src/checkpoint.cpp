// HDF5 reading and writing of CheckpointData (layout: docs/CHECKPOINT_FORMAT.md).
#include "pico/checkpoints/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "h5.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"

#ifndef PICO_VERSION_STRING
#define PICO_VERSION_STRING "0.1.0"
#endif

namespace pico::checkpoints {

// ---------------------------------------------------------------------------------------
// h5 helpers

namespace h5 {

void quiet() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

std::string last_error() {
  std::vector<std::string> parts;  // outermost (the API call) first, innermost (the cause) last
  auto walk = [](unsigned, const H5E_error2_t* e, void* client) -> herr_t {
    char minor[160] = {0};
    H5Eget_msg(e->min_num, nullptr, minor, sizeof minor);
    std::string part = e->desc != nullptr && *e->desc ? std::string(e->desc) : std::string();
    if (minor[0] != 0) part += part.empty() ? std::string(minor) : str(" (", minor, ")");
    auto* v = static_cast<std::vector<std::string>*>(client);
    if (!part.empty() && (v->empty() || v->back() != part)) v->push_back(part);
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &parts);
  H5Eclear2(H5E_DEFAULT);
  if (parts.empty()) return "unknown HDF5 error";
  // The call that failed and the two innermost reasons say what happened.
  if (parts.size() <= 3) return join(parts, "; ");
  return str(parts.front(), "; …; ", parts[parts.size() - 2], "; ", parts.back());
}

}  // namespace h5

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Thread-safe HDF5 still serializes every call internally; one lock around each whole
// operation keeps a background save and a reader from interleaving their error stacks.
std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw CorruptCheckpoint(str("checkpoint ", path, ": ", what),
                          "the file is truncated or damaged; resume falls back to an older checkpoint "
                          "automatically, or pick an older step_*.h5 (pico checkpoint inspect PATH verifies one)");
}

// The float16 file/memory type (IEEE half), built the way h5py builds it so that h5py
// reads it back as numpy.float16.
hid_t half_type() {
  static hid_t t = [] {
    hid_t h = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(h, 15, 10, 5, 0, 10);
    H5Tset_size(h, 2);
    H5Tset_ebias(h, 15);
    return h;
  }();
  return t;
}

struct TypePair {
  hid_t file;
  hid_t mem;
};

TypePair types_for(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT};
    case torch::kFloat64:
      return {H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE};
    case torch::kFloat16:
      return {half_type(), half_type()};
    case torch::kInt64:
      return {H5T_STD_I64LE, H5T_NATIVE_INT64};
    case torch::kInt32:
      return {H5T_STD_I32LE, H5T_NATIVE_INT32};
    case torch::kUInt8:
      return {H5T_STD_U8LE, H5T_NATIVE_UINT8};
    default:
      break;
  }
  throw Error(str("tensor dtype ", t, " cannot be stored in a checkpoint"),
              "store float32/float64/float16/bfloat16/int64/int32/uint8/bool tensors");
}

std::vector<std::string> split_path(const std::string& group) {
  std::vector<std::string> parts;
  for (auto& p : split(group, '/'))
    if (!p.empty()) parts.push_back(p);
  return parts;
}

std::string normalize_group(const std::string& group) {
  const auto parts = split_path(group);
  return parts.empty() ? "/" : "/" + join(parts, "/");
}

// ---- writing ----

class Writer {
 public:
  Writer(hid_t file, const std::string& path, const WriteOptions& o) : file_(file), path_(path), opts_(o) {
    gcpl_ = h5::Id(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    // Track and index creation order so readers list tensors in the order they were written.
    H5Pset_link_creation_order(gcpl_.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  }

  hid_t group(const std::string& raw) {
    const std::string g = normalize_group(raw);
    if (g == "/") return file_;
    if (auto it = groups_.find(g); it != groups_.end()) return it->second.get();
    const auto parts = split_path(g);
    std::string parent_path = "/";
    hid_t parent = file_;
    for (const auto& part : parts) {
      const std::string p = parent_path == "/" ? "/" + part : parent_path + "/" + part;
      auto it = groups_.find(p);
      if (it == groups_.end()) {
        h5::Id id(H5Gcreate2(parent, part.c_str(), H5P_DEFAULT, gcpl_.get(), H5P_DEFAULT), H5Gclose);
        if (!id.valid()) fail(str("cannot create group ", p));
        it = groups_.emplace(p, std::move(id)).first;
      }
      parent = it->second.get();
      parent_path = p;
    }
    return parent;
  }

  void attr(hid_t obj, const std::string& name, const AttrValue& v) {
    h5::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    herr_t rc = -1;
    if (const auto* i = std::get_if<std::int64_t>(&v)) {
      h5::Id a(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      rc = a.valid() ? H5Awrite(a.get(), H5T_NATIVE_INT64, i) : -1;
    } else if (const auto* d = std::get_if<double>(&v)) {
      h5::Id a(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      rc = a.valid() ? H5Awrite(a.get(), H5T_NATIVE_DOUBLE, d) : -1;
    } else {
      // Variable-length UTF-8: h5py reads it as str, h5dump prints it as text.
      h5::Id type(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(type.get(), H5T_VARIABLE);
      H5Tset_cset(type.get(), H5T_CSET_UTF8);
      h5::Id a(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const char* s = std::get<std::string>(v).c_str();
      rc = a.valid() ? H5Awrite(a.get(), type.get(), &s) : -1;
    }
    if (rc < 0) fail(str("cannot write attribute ", name));
  }

  void dataset(const TensorEntry& e) {
    if (e.name.empty() || e.name.find('/') != std::string::npos)
      throw Error(str("bad tensor name '", e.name, "' in group ", e.group, " for ", path_),
                  "tensor names are non-empty and contain no '/'");
    torch::Tensor t = e.tensor.detach();
    if (!t.device().is_cpu()) t = t.to(torch::kCPU);
    std::string torch_dtype;
    if (t.scalar_type() == torch::kBFloat16) {
      torch_dtype = "bfloat16";  // no HDF5/numpy type: stored exactly as float32
      t = t.to(torch::kFloat32);
    } else if (t.scalar_type() == torch::kBool) {
      torch_dtype = "bool";
      t = t.to(torch::kUInt8);
    }
    t = t.contiguous();
    const TypePair types = types_for(t.scalar_type());
    const int rank = static_cast<int>(t.dim());
    std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
    h5::Id space(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr), H5Sclose);
    h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
    if (rank > 0 && t.numel() > 0) {
      // Chunks of about chunk_bytes: whole trailing dimensions while they fit, then a slice of
      // the next one. Every chunk carries its own Fletcher32.
      // The cut dimension is split evenly: HDF5 stores edge chunks at full size, so (1536, 384)
      // in chunks of 682 rows would waste a third of the space; 3 chunks of 512 rows waste none.
      std::vector<hsize_t> chunk(rank, 1);
      std::size_t elems = std::max<std::size_t>(1, opts_.chunk_bytes / static_cast<std::size_t>(t.element_size()));
      for (int d = rank - 1; d >= 0; --d) {
        hsize_t take = std::min<hsize_t>(dims[d], std::max<hsize_t>(1, elems));
        if (take < dims[d]) {
          const hsize_t n = (dims[d] + take - 1) / take;  // chunks along d
          take = (dims[d] + n - 1) / n;
        }
        chunk[d] = take;
        elems = take == dims[d] ? elems / take : 0;
      }
      H5Pset_chunk(dcpl.get(), rank, chunk.data());
      if (opts_.fletcher32) H5Pset_fletcher32(dcpl.get());
    }
    h5::Id ds(H5Dcreate2(group(e.group), e.name.c_str(), types.file, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
              H5Dclose);
    if (!ds.valid()) fail(str("cannot create dataset ", e.path()));
    if (t.numel() > 0 && H5Dwrite(ds.get(), types.mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
      fail(str("cannot write dataset ", e.path(), " (", t.numel() * t.element_size(), " bytes)"));
    if (!torch_dtype.empty()) attr(ds.get(), "torch_dtype", torch_dtype);
  }

  [[noreturn]] void fail(const std::string& what) {
    throw Error(str("writing checkpoint ", path_, ": ", what, ": ", h5::last_error()),
                "check free disk space and permissions of the checkpoint directory");
  }

  void close_groups() { groups_.clear(); }

 private:
  hid_t file_;
  std::string path_;
  WriteOptions opts_;
  h5::Id gcpl_;
  std::map<std::string, h5::Id> groups_;
};

// PICO_FAULT_CHECKPOINT_PAUSE="NAME:SECONDS" → seconds to pause while writing NAME, else 0.
double fault_pause_seconds(const std::string& path) {
  const char* env = std::getenv("PICO_FAULT_CHECKPOINT_PAUSE");
  if (env == nullptr || *env == 0) return 0;
  const std::string spec = env;
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos) return 0;
  if (spec.substr(0, colon) != std::filesystem::path(path).filename().string()) return 0;
  return std::atof(spec.c_str() + colon + 1);
}

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str("cannot open ", path, " to fsync it: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    throw Error(str("fsync ", path, " failed: ", std::strerror(err)), "check the disk (dmesg) and free space");
}

// ---- reading ----

h5::Id open_for_reading(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw CorruptCheckpoint(str("checkpoint ", path, " does not exist or is not a file"),
                            "pass a step_*.h5 file or a run directory (its checkpoints/latest is used)");
  const htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0) {
    h5::last_error();
    corrupt(path,
            str("not an HDF5 file (", std::filesystem::file_size(path, ec), " bytes; the HDF5 signature is missing)"));
  }
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  h5::Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!f.valid()) corrupt(path, str("HDF5 cannot open it: ", h5::last_error()));
  return f;
}

bool read_attr(hid_t attr, AttrValue& out) {
  h5::Id type(H5Aget_type(attr), H5Tclose);
  h5::Id space(H5Aget_space(attr), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER: {
      std::int64_t v = 0;
      if (H5Aread(attr, H5T_NATIVE_INT64, &v) < 0) return false;
      out = v;
      return true;
    }
    case H5T_FLOAT: {
      double v = 0;
      if (H5Aread(attr, H5T_NATIVE_DOUBLE, &v) < 0) return false;
      out = v;
      return true;
    }
    case H5T_STRING: {
      if (H5Tis_variable_str(type.get()) > 0) {
        h5::Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mem.get(), H5T_VARIABLE);
        H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
        char* s = nullptr;
        if (H5Aread(attr, mem.get(), &s) < 0) return false;
        out = std::string(s != nullptr ? s : "");
        H5free_memory(s);
        return true;
      }
      const std::size_t n = H5Tget_size(type.get());
      std::string s(n, '\0');
      if (H5Aread(attr, type.get(), s.data()) < 0) return false;
      s.resize(std::strlen(s.c_str()));
      out = s;
      return true;
    }
    default:
      return false;
  }
}

std::map<std::string, AttrValue> read_attrs(hid_t obj) {
  std::map<std::string, AttrValue> out;
  auto visit = [](hid_t loc, const char* name, const H5A_info_t*, void* data) -> herr_t {
    h5::Id a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
    AttrValue v;
    if (a.valid() && read_attr(a.get(), v)) (*static_cast<std::map<std::string, AttrValue>*>(data))[name] = v;
    return 0;
  };
  H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, nullptr, visit, &out);
  H5Eclear2(H5E_DEFAULT);
  return out;
}

// Visits the links of `group` in creation order (or name order for files that do not
// track it): on_group(path, id) before descending, on_dataset(group path, name, id).
void walk(hid_t group, const std::string& path, const std::function<bool(const std::string&, hid_t)>& on_group,
          const std::function<void(const std::string&, const std::string&, hid_t)>& on_dataset) {
  H5_index_t index = H5_INDEX_NAME;
  {
    h5::Id gcpl(H5Gget_create_plist(group), H5Pclose);
    unsigned flags = 0;
    if (gcpl.valid() && H5Pget_link_creation_order(gcpl.get(), &flags) >= 0 && (flags & H5P_CRT_ORDER_INDEXED))
      index = H5_INDEX_CRT_ORDER;
  }
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0) throw Error(str("cannot list group ", path, ": ", h5::last_error()));
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(group, ".", index, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) throw Error(str("cannot list group ", path, ": ", h5::last_error()));
    std::string name(static_cast<std::size_t>(len), '\0');
    H5Lget_name_by_idx(group, ".", index, H5_ITER_INC, i, name.data(), name.size() + 1, H5P_DEFAULT);
    h5::Id obj(H5Oopen(group, name.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.valid()) throw Error(str("cannot open ", path, "/", name, ": ", h5::last_error()));
    const std::string child = path == "/" ? "/" + name : path + "/" + name;
    switch (H5Iget_type(obj.get())) {
      case H5I_GROUP:
        if (on_group(child, obj.get())) walk(obj.get(), child, on_group, on_dataset);
        break;
      case H5I_DATASET:
        on_dataset(path, name, obj.get());
        break;
      default:
        break;
    }
  }
}

struct StoredType {
  torch::ScalarType dtype;
  hid_t mem;
};

StoredType stored_type(hid_t ds) {
  h5::Id type(H5Dget_type(ds), H5Tclose);
  const std::size_t size = H5Tget_size(type.get());
  switch (H5Tget_class(type.get())) {
    case H5T_FLOAT:
      if (size == 2) return {torch::kFloat16, half_type()};
      if (size == 4) return {torch::kFloat32, H5T_NATIVE_FLOAT};
      return {torch::kFloat64, H5T_NATIVE_DOUBLE};
    case H5T_INTEGER:
      if (size == 1 && H5Tget_sign(type.get()) == H5T_SGN_NONE) return {torch::kUInt8, H5T_NATIVE_UINT8};
      if (size <= 4 && H5Tget_sign(type.get()) != H5T_SGN_NONE) return {torch::kInt32, H5T_NATIVE_INT32};
      return {torch::kInt64, H5T_NATIVE_INT64};
    default:
      break;
  }
  throw Error("unsupported HDF5 datatype class");
}

std::vector<std::int64_t> dataset_shape(hid_t ds) {
  h5::Id space(H5Dget_space(ds), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return {dims.begin(), dims.end()};
}

// Reads a dataset into a tensor (Fletcher32 is checked by HDF5 on every chunk read).
// Returns "" on success, else the reason.
// `max_bytes` bounds the allocation (a damaged header must not ask for terabytes).
std::string read_dataset(hid_t ds, torch::Tensor& out, std::uint64_t max_bytes) {
  StoredType st;
  try {
    st = stored_type(ds);
  } catch (const Error& e) {
    return e.what();
  }
  const auto shape = dataset_shape(ds);
  std::uint64_t bytes = static_cast<std::uint64_t>(c10::elementSize(st.dtype));
  for (auto s : shape) {
    if (s < 0 || (s > 0 && bytes > max_bytes / static_cast<std::uint64_t>(s)))
      return str("its shape claims more bytes than the file holds (", max_bytes, ")");
    bytes *= static_cast<std::uint64_t>(s);
  }
  if (bytes > max_bytes) return str("its shape claims ", bytes, " bytes, more than the file holds (", max_bytes, ")");
  out = torch::empty(shape, torch::TensorOptions().dtype(st.dtype));
  if (out.numel() > 0 && H5Dread(ds, st.mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr()) < 0) {
    const std::string why = h5::last_error();
    // HDF5 reports a failed Fletcher32 as a failed filter in the read pipeline.
    const bool checksum = why.find("letcher") != std::string::npos || why.find("ilter") != std::string::npos ||
                          why.find("checksum") != std::string::npos;
    return checksum ? str("Fletcher32 checksum mismatch (", why, ")") : why;
  }
  AttrValue torch_dtype;
  h5::Id a(H5Aexists(ds, "torch_dtype") > 0 ? H5Aopen(ds, "torch_dtype", H5P_DEFAULT) : -1, H5Aclose);
  if (a.valid() && read_attr(a.get(), torch_dtype)) {
    const auto* s = std::get_if<std::string>(&torch_dtype);
    if (s != nullptr && *s == "bfloat16") out = out.to(torch::kBFloat16);
    if (s != nullptr && *s == "bool") out = out.to(torch::kBool);
  }
  return "";
}

void check_format(const std::string& path, const std::map<std::string, AttrValue>& root) {
  auto it = root.find("format");
  if (it == root.end() || !std::holds_alternative<std::string>(it->second) ||
      std::get<std::string>(it->second) != kFormatName)
    throw CorruptCheckpoint(
        str(path, " is an HDF5 file but not a pico checkpoint (no root attribute format=\"", kFormatName, "\")"),
        "pass a step_*.h5 file written by pico train");
  auto c = root.find("complete");
  if (c == root.end() || !std::holds_alternative<std::int64_t>(c->second) || std::get<std::int64_t>(c->second) != 1)
    throw CorruptCheckpoint(str("checkpoint ", path,
                                " is incomplete (no root attribute complete=1): its save was "
                                "interrupted"),
                            "use an older checkpoint of the run; resume falls back to one automatically");
  auto v = root.find("format_version");
  const std::int64_t version =
      v != root.end() && std::holds_alternative<std::int64_t>(v->second) ? std::get<std::int64_t>(v->second) : -1;
  if (version != kFormatVersion)
    throw CorruptCheckpoint(
        str("checkpoint ", path, " has format version ", version, ", this pico reads version ", kFormatVersion),
        "read it with the pico version that wrote it (its root attribute pico_version), or "
        "resume from a checkpoint written by this version");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// CheckpointData

void CheckpointData::set_attr(const std::string& group, const std::string& name, AttrValue value) {
  attrs[normalize_group(group)][name] = std::move(value);
}

void CheckpointData::add_group(const std::string& group) {
  const std::string g = normalize_group(group);
  if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
}

void CheckpointData::add(const std::string& group, const std::string& name, torch::Tensor tensor) {
  tensors.push_back({normalize_group(group), name, std::move(tensor)});
}

const AttrValue* CheckpointData::attr(const std::string& group, const std::string& name) const {
  auto g = attrs.find(normalize_group(group));
  if (g == attrs.end()) return nullptr;
  auto a = g->second.find(name);
  return a == g->second.end() ? nullptr : &a->second;
}

namespace {
template <typename T>
const T& typed_attr(const CheckpointData& d, const std::string& group, const std::string& name, const char* type) {
  const AttrValue* v = d.attr(group, name);
  if (v == nullptr || !std::holds_alternative<T>(*v))
    throw CorruptCheckpoint(str("checkpoint ", d.source.empty() ? "(in memory)" : d.source, " has no ", type,
                                " attribute ", normalize_group(group), "@", name),
                            "the file was not written by this version of pico train, or is damaged");
  return std::get<T>(*v);
}
}  // namespace

std::int64_t CheckpointData::attr_int(const std::string& group, const std::string& name) const {
  return typed_attr<std::int64_t>(*this, group, name, "integer");
}
double CheckpointData::attr_double(const std::string& group, const std::string& name) const {
  const AttrValue* v = attr(group, name);
  if (v != nullptr && std::holds_alternative<std::int64_t>(*v)) return static_cast<double>(std::get<std::int64_t>(*v));
  return typed_attr<double>(*this, group, name, "float");
}
std::string CheckpointData::attr_string(const std::string& group, const std::string& name) const {
  return typed_attr<std::string>(*this, group, name, "string");
}

const TensorEntry* CheckpointData::find(const std::string& group, const std::string& name) const {
  const std::string g = normalize_group(group);
  for (const auto& e : tensors)
    if (e.group == g && e.name == name) return &e;
  return nullptr;
}

const torch::Tensor& CheckpointData::tensor(const std::string& group, const std::string& name) const {
  const TensorEntry* e = find(group, name);
  if (e == nullptr)
    throw CorruptCheckpoint(str("checkpoint ", source.empty() ? "(in memory)" : source, " has no dataset ",
                                TensorEntry{normalize_group(group), name, {}}.path()),
                            "the checkpoint does not match this model, or was not written by pico train");
  return e->tensor;
}

std::vector<const TensorEntry*> CheckpointData::in_group(const std::string& group) const {
  const std::string g = normalize_group(group);
  std::vector<const TensorEntry*> out;
  for (const auto& e : tensors)
    if (e.group == g) out.push_back(&e);
  return out;
}

bool CheckpointData::has_group(const std::string& group) const {
  const std::string g = normalize_group(group);
  if (std::find(groups.begin(), groups.end(), g) != groups.end() || attrs.count(g)) return true;
  for (const auto& e : tensors)
    if (e.group == g || starts_with(e.group, g + "/")) return true;
  return false;
}

std::uint64_t CheckpointData::tensor_bytes() const {
  std::uint64_t n = 0;
  for (const auto& e : tensors) n += static_cast<std::uint64_t>(e.tensor.numel() * e.tensor.element_size());
  return n;
}

bool FileInfo::all_verified() const {
  for (const auto& d : datasets)
    if (!d.verified) return false;
  return true;
}

std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return "float32";
    case torch::kFloat64:
      return "float64";
    case torch::kFloat16:
      return "float16";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kInt64:
      return "int64";
    case torch::kInt32:
      return "int32";
    case torch::kUInt8:
      return "uint8";
    case torch::kBool:
      return "bool";
    default:
      return str(t);
  }
}

std::string format_attr(const AttrValue& v) {
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    // The shortest text that reads back as the same double (a Unix time keeps its seconds).
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, *d);
    return std::string(buf, r.ptr);
  }
  return std::get<std::string>(v);
}

// ---------------------------------------------------------------------------------------
// write / read / inspect

WriteResult write_checkpoint(const std::string& path, const CheckpointData& data, const WriteOptions& options) {
  WriteResult r;
  r.path = path;
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const std::string tmp = dir + "/." + target.filename().string() + ".tmp." + std::to_string(::getpid());
  const double pause = fault_pause_seconds(path);
  auto t0 = Clock::now();
  {
    std::lock_guard<std::mutex> lock(h5_mutex());
    h5::quiet();
    h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
    h5::Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    ::unlink(tmp.c_str());  // a leftover of this pid from an earlier failed attempt
    h5::Id file(H5Fcreate(tmp.c_str(), H5F_ACC_EXCL, fcpl.get(), fapl.get()), H5Fclose);
    if (!file.valid())
      throw Error(str("cannot create checkpoint ", tmp, ": ", h5::last_error()),
                  "check that the checkpoint directory exists and is writable, and free disk space");
    try {
      Writer w(file.get(), path, options);
      w.attr(file.get(), "format", std::string(kFormatName));
      w.attr(file.get(), "format_version", kFormatVersion);
      w.attr(file.get(), "pico_version", std::string(PICO_VERSION_STRING));
      w.attr(file.get(), "created_unix", static_cast<double>(std::time(nullptr)));
      w.attr(w.group("/config"), "yaml", data.config_yaml);
      // Groups in the order of their first tensor (then the empty ones), so that file
      // order follows the data's order rather than the alphabet.
      for (const auto& e : data.tensors) w.group(e.group);
      for (const auto& g : data.groups) w.group(g);
      for (const auto& [g, attrs] : data.attrs)
        for (const auto& [name, v] : attrs) w.attr(w.group(g), name, v);
      for (std::size_t i = 0; i < data.tensors.size(); ++i) {
        w.dataset(data.tensors[i]);
        if (pause > 0 && i + 1 == data.tensors.size() / 2) {
          H5Fflush(file.get(), H5F_SCOPE_GLOBAL);
          log_warn("PICO_FAULT_CHECKPOINT_PAUSE: pausing ", pause, " s while writing ", tmp);
          std::this_thread::sleep_for(std::chrono::duration<double>(pause));
        }
      }
      // Last: a file without it (a partial temporary, however it got its name) is refused.
      w.attr(file.get(), "complete", std::int64_t{1});
      w.close_groups();
      if (!file.close()) w.fail("closing the file failed");
    } catch (...) {
      file.close();
      ::unlink(tmp.c_str());
      throw;
    }
  }
  r.write_seconds = seconds_since(t0);
  auto t1 = Clock::now();
  try {
    fsync_file(tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(str("rename ", tmp, " -> ", path, " failed: ", std::strerror(err)), "check the checkpoint directory");
  }
  fsync_path(dir);
  r.sync_seconds = seconds_since(t1);
  auto t2 = Clock::now();
  r.sha256 = sha256_file(path);
  r.hash_seconds = seconds_since(t2);
  std::error_code ec;
  r.bytes = std::filesystem::file_size(path, ec);
  return r;
}

CheckpointData read_checkpoint(const std::string& path, const ReadOptions& options) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::quiet();
  h5::Id file = open_for_reading(path);
  CheckpointData d;
  d.source = path;
  std::error_code ec;
  const std::uint64_t file_bytes = std::filesystem::file_size(path, ec);
  const auto root = read_attrs(file.get());
  check_format(path, root);
  std::set<std::string> skip;
  for (const auto& g : options.skip_groups) skip.insert(normalize_group(g));
  try {
    h5::Id root_group(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);  // (its creation order is on the group)
    walk(
        root_group.get(), "/",
        [&](const std::string& g, hid_t id) {
          if (skip.count(g)) return false;
          d.add_group(g);
          for (auto& [k, v] : read_attrs(id)) d.attrs[g][k] = v;
          return true;
        },
        [&](const std::string& g, const std::string& name, hid_t ds) {
          torch::Tensor t;
          const std::string why = read_dataset(ds, t, file_bytes);
          if (!why.empty()) corrupt(path, str("reading dataset ", g == "/" ? "" : g, "/", name, " failed: ", why));
          d.tensors.push_back({g, name, std::move(t)});
        });
  } catch (const CorruptCheckpoint&) {
    throw;
  } catch (const Error& e) {
    corrupt(path, e.what());
  }
  auto cfg = d.attrs.find("/config");
  if (cfg == d.attrs.end() || !cfg->second.count("yaml") || !std::holds_alternative<std::string>(cfg->second["yaml"]))
    corrupt(path, "it has no /config@yaml attribute (the resolved run config)");
  d.config_yaml = std::get<std::string>(cfg->second["yaml"]);
  d.attrs.erase("/config");
  for (const auto& [k, v] : root) d.attrs["/"][k] = v;
  return d;
}

FileInfo inspect_checkpoint(const std::string& path, bool verify) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  h5::quiet();
  h5::Id file = open_for_reading(path);
  FileInfo info;
  info.path = path;
  std::error_code ec;
  info.file_bytes = std::filesystem::file_size(path, ec);
  info.attrs["/"] = read_attrs(file.get());
  check_format(path, info.attrs["/"]);
  info.format_version = std::get<std::int64_t>(info.attrs["/"]["format_version"]);
  try {
    h5::Id root_group(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
    walk(
        root_group.get(), "/",
        [&](const std::string& g, hid_t id) {
          info.groups.push_back(g);
          auto a = read_attrs(id);
          if (!a.empty()) info.attrs[g] = std::move(a);
          return true;
        },
        [&](const std::string& g, const std::string& name, hid_t ds) {
          DatasetInfo di;
          di.path = g == "/" ? "/" + name : g + "/" + name;
          di.shape = dataset_shape(ds);
          try {
            di.dtype = dtype_name(stored_type(ds).dtype);
          } catch (const Error&) {
            di.dtype = "unsupported";
          }
          {
            h5::Id dcpl(H5Dget_create_plist(ds), H5Pclose);
            di.chunked = H5Pget_layout(dcpl.get()) == H5D_CHUNKED;
            const int nf = H5Pget_nfilters(dcpl.get());
            for (int i = 0; i < nf; ++i) {
              unsigned flags = 0;
              std::size_t n = 0;
              unsigned cd[8];
              unsigned config = 0;
              char name_buf[64];
              if (H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n, cd, sizeof name_buf, name_buf,
                                 &config) == H5Z_FILTER_FLETCHER32)
                di.fletcher32 = true;
            }
          }
          h5::Id type(H5Dget_type(ds), H5Tclose);
          std::uint64_t n = 1;
          for (auto s : di.shape) n *= static_cast<std::uint64_t>(s);
          di.bytes = n * H5Tget_size(type.get());
          if (verify) {
            torch::Tensor t;
            di.error = read_dataset(ds, t, info.file_bytes);
            di.verified = di.error.empty();
            if (di.verified && di.path != "/config") {
              auto a = read_attrs(ds);
              if (auto it = a.find("torch_dtype"); it != a.end()) di.dtype = format_attr(it->second);
            }
          }
          info.datasets.push_back(std::move(di));
        });
  } catch (const Error& e) {
    corrupt(path, e.what());
  }
  return info;
}

}  // namespace pico::checkpoints
