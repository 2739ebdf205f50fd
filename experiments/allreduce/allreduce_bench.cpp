// experiments/allreduce/allreduce_bench.cpp — one rank of pico's ZeroMQ all-reduce benchmark.
//
// bench.py starts W of these (one per rank), side by side with the Gloo peer (gloo_bench.py),
// and turns their JSON lines into RESULTS.md. Each rank: ZmqNode + file rendezvous, then for
// every size a few warm-up all-reduces and `iters` timed ones, each started right after a
// barrier. The inputs are rank + 1 everywhere, so the sum W(W+1)/2 is exact and checked.
// Not a test: it measures, and fails loudly only when the result is wrong.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pico/comm/rendezvous.h"
#include "pico/comm/zmq_communicator.h"
#include "pico/common/error.h"

using namespace pico;
using namespace pico::comm;

namespace {

struct Args {
  int rank = 0, world = 4;
  std::string dir, out, bind_host = "127.0.0.1", wire = "fp32", ipc_dir, trace;
  std::vector<double> sizes_mb = {1, 4, 16, 64, 256};
  int iters = 10, warmup = 2, connections = 4, io_threads = 2, heartbeat_ms = 1000, sndbuf = -1;
  std::size_t segment_bytes = 1 << 20;
  bool curve = true;
  std::uint64_t run_id = 1;
  int timeout_ms = 120'000;
};

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> v;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto comma = s.find(',', pos);
    v.push_back(std::stod(s.substr(pos, comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--rank")
      a.rank = std::stoi(v);
    else if (k == "--world")
      a.world = std::stoi(v);
    else if (k == "--dir")
      a.dir = v;
    else if (k == "--out")
      a.out = v;
    else if (k == "--bind-host")
      a.bind_host = v;
    else if (k == "--ipc-dir")
      a.ipc_dir = v;
    else if (k == "--sizes-mb")
      a.sizes_mb = parse_list(v);
    else if (k == "--iters")
      a.iters = std::stoi(v);
    else if (k == "--warmup")
      a.warmup = std::stoi(v);
    else if (k == "--connections")
      a.connections = std::stoi(v);
    else if (k == "--segment-bytes")
      a.segment_bytes = std::stoull(v);
    else if (k == "--io-threads")
      a.io_threads = std::stoi(v);
    else if (k == "--heartbeat-ms")
      a.heartbeat_ms = std::stoi(v);
    else if (k == "--tcp-send-buffer")
      a.sndbuf = std::stoi(v);
    else if (k == "--curve")
      a.curve = v == "on";
    else if (k == "--wire")
      a.wire = v;
    else if (k == "--run-id")
      a.run_id = std::stoull(v);
    else if (k == "--timeout-ms")
      a.timeout_ms = std::stoi(v);
    else if (k == "--trace")
      a.trace = v;
    else
      throw Error("unknown flag " + k);
  }
  if (a.dir.empty() || a.out.empty()) throw Error("--dir and --out are required");
  return a;
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    ZmqOptions o;
    o.security = a.curve ? ZmqSecurity::kCurve : ZmqSecurity::kPlaintextBenchmarkOnly;
    o.bind_host = a.bind_host;
    o.ipc_dir = a.ipc_dir;
    o.key_dir = a.dir + "/keys";
    o.key_name = "worker-" + std::to_string(a.rank);
    o.connections_per_peer = a.connections;
    o.segment_bytes = a.segment_bytes;
    o.io_threads = a.io_threads;
    o.heartbeat_interval = std::chrono::milliseconds(a.heartbeat_ms);
    o.tcp_send_buffer_bytes = a.sndbuf;
    // --trace FILE: one line per message processed (wall-clock seconds, round, kind, count),
    // to see where a shaped link goes idle.
    FILE* trace = a.trace.empty() ? nullptr : std::fopen(a.trace.c_str(), "w");
    if (trace)
      o.on_message = [trace](std::uint64_t round, MessageKind kind, std::uint64_t processed) {
        std::fprintf(trace, "%.6f %llu %s %llu\n", unix_seconds(), static_cast<unsigned long long>(round),
                     to_string(kind), static_cast<unsigned long long>(processed));
      };
    auto node = ZmqNode::create(o);
    FileRendezvousOptions ro;
    ro.dir = a.dir + "/rendezvous";
    ro.world_size = a.world;
    ro.rank = a.rank;
    ro.run_id = a.run_id;
    auto comm = make_zmq_communicator(node, rendezvous_files(*node, ro));
    FILE* out = std::fopen(a.out.c_str(), "w");
    if (!out) throw Error("cannot write " + a.out);
    const float expected = static_cast<float>(a.world * (a.world + 1) / 2);
    BarrierOptions bo;
    bo.timeout = std::chrono::milliseconds(a.timeout_ms);
    AllreduceOptions ao;
    ao.timeout = std::chrono::milliseconds(a.timeout_ms);
    ao.wire = parse_wire_dtype(a.wire);
    for (double mb : a.sizes_mb) {
      const std::size_t n = static_cast<std::size_t>(mb * (1 << 20)) / sizeof(float);
      std::vector<float> data(n);
      for (int it = -a.warmup; it < a.iters; ++it) {
        std::fill(data.begin(), data.end(), static_cast<float>(a.rank + 1));
        if (!comm->barrier(bo).ok()) throw Error("barrier failed");
        const double start_unix = unix_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        const CollectiveResult r = comm->all_reduce(data.data(), n, ao);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!r.ok()) throw Error(str("all_reduce of ", mb, " MB failed: ", r.error));
        if (ao.wire == WireDtype::kFloat32)
          for (std::size_t i = 0; i < n; i += 4097)
            if (data[i] != expected) throw Error(str("wrong sum at ", i, ": ", data[i], " != ", expected));
        if (it >= 0)
          std::fprintf(
              out,
              "{\"impl\": \"pico\", \"curve\": %s, \"ipc\": %s, \"wire\": \"%s\", \"rank\": %d, \"world\": %d, "
              "\"bytes\": %zu, \"iter\": %d, \"seconds\": %.6f, \"start_unix\": %.6f, \"tx\": %llu, \"rx\": %llu}\n",
              a.curve ? "true" : "false", a.ipc_dir.empty() ? "false" : "true", a.wire.c_str(), a.rank, a.world,
              n * sizeof(float), it, s, start_unix, static_cast<unsigned long long>(r.bytes_sent),
              static_cast<unsigned long long>(r.bytes_received));
      }
    }
    std::fclose(out);
    if (trace) std::fclose(trace);

    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 1;
  }
}
