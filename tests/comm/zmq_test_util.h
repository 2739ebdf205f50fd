// tests/comm/zmq_test_util.h — groups of ZeroMQ ranks as threads of one test process.
//
// Every rank gets its own ZmqNode (own libzmq context, key pair, 127.0.0.1 ephemeral port);
// the membership is assembled directly from the nodes (the file rendezvous has its own test).
// Independent of LibTorch and of the pico CLI, so the transport's tests build in seconds.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pico/comm/zmq_communicator.h"
#include "zmq_test_inputs.h"

namespace pico::comm::test {

class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/pico-zmq-XXXXXX";
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline ZmqOptions test_options(const std::string& key_dir) {
  ZmqOptions o;
  o.key_dir = key_dir;
  o.io_threads = 1;
  o.connections_per_peer = 2;
  return o;
}

struct ThreadGroup {
  std::vector<std::shared_ptr<ZmqNode>> nodes;
  Membership base;  // rank 0's view; rank r's is base with rank = r

  ThreadGroup(int world, ZmqOptions options, const std::string& key_dir, std::uint64_t run_id = 7) {
    base.run_id = run_id;
    for (int r = 0; r < world; ++r) {
      options.key_dir = key_dir;
      options.key_name = "rank-" + std::to_string(r);
      nodes.push_back(ZmqNode::create(options));
      base.members.push_back({r, nodes.back()->endpoint(), nodes.back()->public_key()});
    }
    // As the rendezvous does: every node admits every member before anyone connects.
    std::vector<std::string> keys;
    for (const auto& m : base.members) keys.push_back(m.public_key);
    for (auto& node : nodes) node->admit(keys);
  }
  Membership membership(int rank) const {
    Membership m = base;
    m.rank = rank;
    return m;
  }
  int world() const { return static_cast<int>(nodes.size()); }

  // Runs fn(rank, communicator) on one thread per rank; failures are collected and reported.
  void run(const std::function<void(int, ZmqCommunicator&)>& fn) {
    std::vector<std::thread> threads;
    std::vector<std::string> failures(nodes.size());
    for (int r = 0; r < world(); ++r) {
      threads.emplace_back([&, r] {
        try {
          auto comm = make_zmq_communicator(nodes[r], membership(r));
          fn(r, *comm);
        } catch (const std::exception& e) {
          failures[r] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < world(); ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
  }
};

}  // namespace pico::comm::test
