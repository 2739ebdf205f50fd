// tests/comm/zmq_test_peer.cpp — one rank of the multi-process ZeroMQ tests (zmq_process_test).
//
//   zmq_test_peer --dir D --rank R --world W --n N [--timeout-ms T] [--pause-after M] [--retry 1]
//                 [--rounds K]
//
// Joins the group through the file rendezvous in D (keys in D/keys), all-reduces
// rank_input(R, N) and writes D/rank-R.first ("<status> <unix ms at return> <error>") and,
// when ok, the N floats to D/rank-R.first.bin. --pause-after M: after M messages of the
// all-reduce, write D/rank-R.paused and stop (the test then kills or stops this process).
// --retry 1: if the all-reduce failed, wait for the survivor list (publish_survivors, written by
// the test once it has reaped the dead rank), build the survivors' group on the same node,
// all-reduce again and write D/rank-R.retry[.bin] the same way. Exit code 0 when the
// last collective it ran succeeded.
// --rounds K (K > 1): K all-reduces back to back on one communicator, round k (0-based) of
// rank_input(R, N, k + 1) with the wire dtype kRoundWires[k % 4]; writes D/rank-R.round-k
// [.bin] for each, stops at the first failure, and returns from main (closing the
// communicator and the node) as soon as the last one succeeds.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "pico/comm/rendezvous.h"
#include "pico/comm/zmq_communicator.h"
#include "pico/common/error.h"
#include "zmq_test_inputs.h"

using namespace pico;
using namespace pico::comm;

namespace {

long long unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void write_result(const std::string& path, const CollectiveResult& r, const std::vector<float>& data) {
  std::ofstream(path) << to_string(r.status) << " " << unix_ms() << " " << r.error << "\n";
  if (r.ok()) {
    std::ofstream bin(path + ".bin", std::ios::binary);
    bin.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  bool retry = false;
  int rank = 0, world = 0, pause_after = -1, timeout_ms = 10'000;
  std::size_t n = 0;
  int rounds = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir")
      dir = v;
    else if (k == "--rank")
      rank = std::stoi(v);
    else if (k == "--world")
      world = std::stoi(v);
    else if (k == "--n")
      n = std::stoull(v);
    else if (k == "--timeout-ms")
      timeout_ms = std::stoi(v);
    else if (k == "--pause-after")
      pause_after = std::stoi(v);
    else if (k == "--retry")
      retry = v == "1";
    else if (k == "--rounds")
      rounds = std::stoi(v);
  }
  try {
    ZmqOptions o;
    o.key_dir = dir + "/keys";
    o.key_name = "worker-" + std::to_string(rank);
    o.io_threads = 1;
    o.segment_bytes = 256 << 10;
    const std::string prefix = dir + "/rank-" + std::to_string(rank);
    if (pause_after >= 0)
      o.on_message = [&](std::uint64_t, MessageKind, std::uint64_t processed) {
        if (static_cast<int>(processed) == pause_after) {
          std::ofstream(prefix + ".paused") << unix_ms() << "\n";
          while (true) ::pause();  // mid-collective, holding its connections open
        }
      };
    auto node = ZmqNode::create(o);
    FileRendezvousOptions ro;
    ro.dir = dir + "/rendezvous";
    ro.world_size = world;
    ro.rank = rank;
    ro.run_id = 2024;
    const Membership m = rendezvous_files(*node, ro);
    auto comm = make_zmq_communicator(node, m);
    AllreduceOptions ao;
    ao.timeout = std::chrono::milliseconds(timeout_ms);
    if (rounds > 1) {
      for (int k = 0; k < rounds; ++k) {
        std::vector<float> data = test::rank_input(rank, n, static_cast<std::uint32_t>(k + 1));
        ao.wire = test::kRoundWires[k % 4];
        ao.tag = static_cast<std::uint64_t>(k);
        const CollectiveResult r = comm->all_reduce(data.data(), n, ao);
        write_result(prefix + ".round-" + std::to_string(k), r, data);
        if (!r.ok()) return 1;
      }
      return 0;  // at once: the communicator and the node close here
    }
    std::vector<float> data = test::rank_input(rank, n);
    CollectiveResult r = comm->all_reduce(data.data(), n, ao);
    write_result(prefix + ".first", r, data);
    if (r.ok() || !retry) return r.ok() ? 0 : 1;

    // The group broke: wait for the list of survivors, then retry among them on the same node.
    const Membership next =
        membership_of_survivors(m, wait_for_survivors(ro.dir, m.epoch + 1, std::chrono::seconds(30)));
    comm.reset();
    comm = make_zmq_communicator(node, next);
    data = test::rank_input(rank, n);  // this rank's contribution, as before the failure
    r = comm->all_reduce(data.data(), n, ao);
    write_result(prefix + ".retry", r, data);
    return r.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zmq_test_peer rank %d: %s\n", rank, e.what());
    return 2;
  }
}
