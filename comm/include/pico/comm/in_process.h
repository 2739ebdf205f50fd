// pico/comm/in_process.h — a Communicator for ranks that are threads of one process.
//
// Used by tests and `pico train --local-workers N`. Ranks meet at a shared rendezvous; each
// rank reduces the chunk it would own in a ring (ring_reduce_reference, reading every rank's
// buffer directly) and writes the result into every rank's buffer, so results are
// bit-identical to the networked ring. Reported bytes are the ring's payload bytes: what
// this rank would send and receive over a network.
//
// A rank that does not arrive within the timeout breaks the group: every waiting and every
// later call returns kTimeout/kPeerFailed, and the survivors must form a new group.
#pragma once

#include <memory>

#include "pico/comm/communicator.h"

namespace pico::comm {

class InProcessGroup {
 public:
  explicit InProcessGroup(int world_size);
  ~InProcessGroup();
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;

  int world_size() const;
  // The communicator of `rank`; the group must outlive it. Each rank's is used by one thread.
  std::unique_ptr<Communicator> communicator(int rank);
  // Wakes every waiting rank with kAborted and fails all later calls.
  void abort(const std::string& reason);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace pico::comm
