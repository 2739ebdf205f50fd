// pico/comm/rendezvous.h — forming a group of processes on one machine through a shared directory.
//
// Each process creates its ZmqNode (which binds 127.0.0.1 on an ephemeral port), then calls
// rendezvous_files with the same directory, world size, run id and epoch and its own rank.
// Phase 1: every rank publishes `<dir>/epoch-<E>/rank-<R>.member` (endpoint and CURVE public
// key, written atomically) and waits for all W. Phase 2: it admits all W keys on its node and
// publishes `rank-<R>.ready`, then waits for all W ready files, so no rank dials a peer that
// has not yet admitted its key. The result is the Membership to pass to make_zmq_communicator.
//
// The broker (later) hands out the same Membership over the network instead; nothing else
// changes. After a failure, survivors do not rendezvous again: they compute the next group
// with membership_of_survivors (zmq_communicator.h) from a survivor list given to them
// (publish_survivors / wait_for_survivors below, or the broker).
// Use a fresh directory per run (or per run id); files of other runs or epochs are ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "pico/comm/zmq_communicator.h"

namespace pico::comm {

struct FileRendezvousOptions {
  std::string dir;                              // shared directory (created if missing)
  int world_size = 1;                           // how many ranks to wait for
  int rank = 0;                                 // this process's rank, 0 ≤ rank < world_size
  std::uint64_t run_id = 0;                     // every rank passes the same (e.g. a hash of the run name)
  std::uint32_t epoch = 0;                      // every rank passes the same
  std::chrono::milliseconds timeout{60'000};    // for each of the two phases
  std::chrono::milliseconds poll_interval{10};  // how often the directory is re-read

  void validate() const;  // throws pico::Error naming the bad field
};

// Blocks until all world_size ranks have published and are ready (see above). Every rank of
// the group calls it together. Throws pico::Error naming the directory and the ranks that did
// not appear within the timeout, or a file that is malformed or disagrees (run id, world size).
Membership rendezvous_files(ZmqNode& node, const FileRendezvousOptions& options);

// After a failure, whoever supervises the local workers (it knows which one it reaped) names
// the survivors of epoch E − 1 by their old ranks in `<dir>/epoch-<E>/survivors` (atomic
// write; does not block). Each survivor blocks in wait_for_survivors until the file is there
// (or throws pico::Error after the timeout), then builds the next group without meeting again:
//
//   auto next = membership_of_survivors(old, wait_for_survivors(dir, old.epoch + 1, timeout));
//   comm.reset();                                   // the broken group's communicator
//   comm = make_zmq_communicator(node, next);       // same node: same endpoint and key
void publish_survivors(const std::string& dir, std::uint32_t epoch, const std::vector<int>& old_ranks);
std::vector<int> wait_for_survivors(const std::string& dir, std::uint32_t epoch, std::chrono::milliseconds timeout);

}  // namespace pico::comm
