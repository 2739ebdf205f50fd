// checkpoints/src/h5.h — RAII handles and error capture for the HDF5 C API (internal).
//
// Every HDF5 call in pico goes through these: handles close themselves, HDF5's own error
// printing is off, and a failed call becomes a pico::Error (or CorruptCheckpoint) whose
// message carries HDF5's innermost reasons ("truncated file: eof = ...").
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>

namespace pico::checkpoints::h5 {

// An owned hid_t with its close function.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports whether the close succeeded (a file's close flushes it).
  bool close() {
    if (id_ < 0 || close_ == nullptr) return true;
    const herr_t rc = close_(std::exchange(id_, -1));
    return rc >= 0;
  }

 private:
  void reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// Turns off HDF5's printing of error stacks for the calling thread (the stacks are
// per-thread in a thread-safe HDF5). Call before any other HDF5 call of an operation.
void quiet();
// The current thread's HDF5 error stack as one line (innermost reasons), then cleared.
std::string last_error();

}  // namespace pico::checkpoints::h5
