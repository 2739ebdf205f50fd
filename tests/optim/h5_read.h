// tests/optim/h5_read.h — just enough of the HDF5 C API to read reference vectors in tests:
// whole datasets (float32, int64, int8) and numeric attributes, by path. Header-only; the
// test executable links pico_hdf5.
#pragma once

#include <hdf5.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace pico::test {

template <typename T>
struct H5Array {
  std::vector<std::int64_t> shape;
  std::vector<T> data;
  std::int64_t numel() const { return static_cast<std::int64_t>(data.size()); }
};

template <typename T>
hid_t h5_native_type() {
  if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
  if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
  if constexpr (std::is_same_v<T, std::int64_t>) return H5T_NATIVE_INT64;
  if constexpr (std::is_same_v<T, std::int8_t>) return H5T_NATIVE_INT8;
}

class H5File {
 public:
  explicit H5File(const std::string& path) : path_(path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // report through exceptions, not stderr
    id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id_ < 0) throw std::runtime_error("cannot open HDF5 file " + path);
  }
  ~H5File() { H5Fclose(id_); }
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  template <typename T>
  H5Array<T> read(const std::string& name) const {
    const hid_t ds = H5Dopen2(id_, name.c_str(), H5P_DEFAULT);
    if (ds < 0) throw std::runtime_error(path_ + ": no dataset " + name);
    const hid_t space = H5Dget_space(ds);
    H5Array<T> out;
    const int nd = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(nd, 0)));
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    std::size_t n = 1;
    for (auto d : dims) {
      out.shape.push_back(static_cast<std::int64_t>(d));
      n *= d;
    }
    out.data.resize(n);
    const herr_t rc = H5Dread(ds, h5_native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data.data());
    H5Sclose(space);
    H5Dclose(ds);
    if (rc < 0) throw std::runtime_error(path_ + ": cannot read " + name);
    return out;
  }

  // A numeric attribute of a group (or the root "/") as T values.
  template <typename T>
  std::vector<T> attr(const std::string& object, const std::string& name) const {
    const hid_t a = H5Aopen_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) throw std::runtime_error(path_ + ": no attribute " + object + "@" + name);
    const hid_t space = H5Aget_space(a);
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    std::vector<T> out(static_cast<std::size_t>(n));
    const herr_t rc = H5Aread(a, h5_native_type<T>(), out.data());
    H5Sclose(space);
    H5Aclose(a);
    if (rc < 0) throw std::runtime_error(path_ + ": cannot read attribute " + object + "@" + name);
    return out;
  }

 private:
  std::string path_;
  hid_t id_ = -1;
};

}  // namespace pico::test
