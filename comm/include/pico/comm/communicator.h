// pico/comm/communicator.h — the collectives contributors use, independent of transport.
//
// Implementations: InProcessCommunicator (threads in one process: tests, --local-workers)
// and the ZeroMQ one (processes over the network). The trainer sees only this interface.
//
// Every collective is called by every rank of the group with the same arguments (same
// `tag`, same element count for all_reduce), blocks until it completes on this rank or
// fails, and returns what it moved. Network failures are values (CollectiveResult with
// status != kOk), never crashes or hangs: a collective that cannot complete within
// `timeout` returns kTimeout or kPeerFailed on every surviving rank, and the caller may
// retry with a new group.
//
// Arithmetic (normative, so that every implementation gives bit-identical results):
// see ring.h. All accumulation is fp32; with a compressed wire dtype the owner of each
// chunk re-quantizes the reduced chunk, so every rank ends with identical bytes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pico/common/codec.h"

namespace pico::comm {

enum class Status {
  kOk,
  kTimeout,     // a peer did not answer within the timeout
  kPeerFailed,  // a peer disconnected, died, or reported failure
  kAborted,     // this communicator was shut down
  kInvalid,     // arguments disagree between ranks, or a malformed message
};
const char* to_string(Status s);

struct CollectiveResult {
  Status status = Status::kOk;
  std::string error;                 // why, when status != kOk
  std::uint64_t bytes_sent = 0;      // bytes this rank put on the wire (headers included)
  std::uint64_t bytes_received = 0;  // bytes this rank took off the wire
  double seconds = 0;                // wall time of the collective on this rank
  int world_size = 0;
  bool ok() const { return status == Status::kOk; }
};

struct AllreduceOptions {
  WireDtype wire = WireDtype::kFloat32;  // values on the wire; accumulation is always fp32
  std::chrono::milliseconds timeout{60'000};
  std::uint64_t tag = 0;  // identifies the collective (e.g. the outer round); ranks must agree
};

struct AllgatherOptions {
  std::chrono::milliseconds timeout{60'000};
  std::uint64_t tag = 0;
};

struct BroadcastOptions {
  int root = 0;
  std::chrono::milliseconds timeout{60'000};
  std::uint64_t tag = 0;
};

struct BarrierOptions {
  std::chrono::milliseconds timeout{60'000};
  std::uint64_t tag = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Sums data[0, n) over all ranks, in place (fp32). Every rank passes the same n.
  virtual CollectiveResult all_reduce(float* data, std::size_t n, const AllreduceOptions& options) = 0;
  // Gathers every rank's byte payload (sizes may differ): out[r] = rank r's `mine`.
  virtual CollectiveResult all_gather(const std::vector<std::uint8_t>& mine,
                                      std::vector<std::vector<std::uint8_t>>& out, const AllgatherOptions& options) = 0;
  // Copies root's `data` (any size) to every rank; non-roots' `data` is replaced.
  virtual CollectiveResult broadcast(std::vector<std::uint8_t>& data, const BroadcastOptions& options) = 0;
  // Returns once every rank has entered the barrier.
  virtual CollectiveResult barrier(const BarrierOptions& options) = 0;
};

}  // namespace pico::comm
