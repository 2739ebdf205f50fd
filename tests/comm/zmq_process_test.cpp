// Real processes on 127.0.0.1 (zmq_test_peer, started with posix_spawn): a rank SIGKILLed in
// the middle of an all-reduce makes the others fail within the timeout, and the survivors'
// retry gives the right sum; a rank that is stopped (SIGSTOP) makes them time out; ranks that
// run many rounds back to back and exit the moment the last returns lose nothing in flight.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "pico/comm/rendezvous.h"
#include "pico/comm/ring.h"
#include "zmq_test_inputs.h"
#include "zmq_test_util.h"

extern char** environ;

namespace pico::comm::test {
namespace {

using namespace std::chrono_literals;

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn failed: ") + std::strerror(rc));
  return pid;
}

// Exit status of pid, waiting at most `limit` (then kills it and returns -1).
int reap(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

bool wait_file(const std::string& path, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

long long unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Outcome {
  std::string status;
  long long at_ms = 0;
  std::string error;
};
Outcome read_outcome(const std::string& path) {
  Outcome o;
  std::ifstream f(path);
  f >> o.status;
  if (o.status == "peer" || o.status == "timeout" || o.status == "ok" || o.status == "invalid" ||
      o.status == "aborted") {
    if (o.status == "peer") {
      std::string failed;
      f >> failed;  // "peer failed"
      o.status += " " + failed;
    }
    f >> o.at_ms;
    std::getline(f, o.error);
  }
  return o;
}

std::vector<float> read_floats(const std::string& path, std::size_t n) {
  std::vector<float> v(n);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  if (!f) v.clear();
  return v;
}

std::vector<std::string> peer_args(const std::string& dir, int rank, int world, std::size_t n) {
  return {PICO_ZMQ_TEST_PEER, "--dir", dir, "--rank", std::to_string(rank), "--world", std::to_string(world), "--n",
          std::to_string(n)};
}

TEST(ZmqProcesses, SigkillOfOneRankMidAllReduceFailsTheOthersAndTheSurvivorsRetry) {
  ScratchDir dir;
  const int world = 4, victim = 2;
  const std::size_t n = 1'000'003;
  const auto timeout = 10s;
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    auto args = peer_args(dir.path(), r, world, n);
    args.insert(args.end(), {"--timeout-ms", std::to_string(timeout.count() * 1000), "--retry", "1"});
    if (r == victim) args.insert(args.end(), {"--pause-after", "2"});
    pids.push_back(spawn(args));
  }
  // The victim has processed two messages of the all-reduce and stopped there: kill it.
  ASSERT_TRUE(wait_file(dir.path() + "/rank-2.paused", 30s)) << "the victim never got into the all-reduce";
  std::this_thread::sleep_for(100ms);
  const long long killed_at = unix_ms();
  ASSERT_EQ(::kill(pids[victim], SIGKILL), 0);
  EXPECT_EQ(reap(pids[victim], 10s), 128 + SIGKILL);
  // The supervisor (this test) tells the survivors who is left: the group of epoch 1.
  publish_survivors(dir.path() + "/rendezvous", 1, {0, 1, 3});
  for (int r : {0, 1, 3}) EXPECT_EQ(reap(pids[r], 60s), 0) << "survivor " << r;

  for (int r : {0, 1, 3}) {
    const Outcome first = read_outcome(dir.path() + "/rank-" + std::to_string(r) + ".first");
    EXPECT_TRUE(first.status == "peer failed" || first.status == "timeout") << "rank " << r << ": " << first.status;
    const long long after_kill = first.at_ms - killed_at;
    EXPECT_LT(after_kill, std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())
        << "rank " << r << " reported the failure " << after_kill << " ms after the kill";
    std::printf("rank %d: %s %lld ms after the SIGKILL:%s\n", r, first.status.c_str(), after_kill, first.error.c_str());
  }
  // The retry among the survivors (old ranks 0, 1, 3 → new ranks 0, 1, 2) is the reference sum.
  std::vector<std::vector<float>> inputs;
  for (int r : {0, 1, 3}) inputs.push_back(rank_input(r, n));
  std::vector<const float*> ptrs;
  for (auto& v : inputs) ptrs.push_back(v.data());
  std::vector<float> expected(n);
  for (int c = 0; c < 3; ++c) {
    const auto [b, e] = ring_chunk(n, 3, c);
    ring_reduce_reference(WireDtype::kFloat32, ptrs, c, b, e, expected.data() + b);
  }
  for (int r : {0, 1, 3}) {
    const std::string prefix = dir.path() + "/rank-" + std::to_string(r) + ".retry";
    EXPECT_EQ(read_outcome(prefix).status, "ok") << "rank " << r;
    const auto got = read_floats(prefix + ".bin", n);
    ASSERT_EQ(got.size(), n) << "rank " << r;
    EXPECT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
  }
}

TEST(ZmqProcesses, AStoppedRankMakesTheOthersTimeOut) {
  ScratchDir dir;
  const int world = 3, victim = 1;
  const std::size_t n = 300'007;
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    auto args = peer_args(dir.path(), r, world, n);
    args.insert(args.end(), {"--timeout-ms", "1500"});
    if (r == victim) args.insert(args.end(), {"--pause-after", "1"});
    pids.push_back(spawn(args));
  }
  ASSERT_TRUE(wait_file(dir.path() + "/rank-1.paused", 30s));
  ASSERT_EQ(::kill(pids[victim], SIGSTOP), 0);  // alive, connections open, silent
  for (int r : {0, 2}) EXPECT_EQ(reap(pids[r], 20s), 1) << "rank " << r << " should report failure";
  ::kill(pids[victim], SIGKILL);
  reap(pids[victim], 10s);
  for (int r : {0, 2}) {
    const Outcome o = read_outcome(dir.path() + "/rank-" + std::to_string(r) + ".first");
    EXPECT_TRUE(o.status == "timeout" || o.status == "peer failed") << o.status;
    std::printf("rank %d: %s:%s\n", r, o.status.c_str(), o.error.c_str());
  }
}

// The normative result of an all-reduce of rank_input(r, n, seed) over ranks 0..world-1.
std::vector<float> reference_sum(WireDtype wire, int world, std::size_t n, std::uint32_t seed) {
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n, seed));
  std::vector<const float*> ptrs;
  for (auto& v : inputs) ptrs.push_back(v.data());
  std::vector<float> out(n);
  for (int c = 0; c < world; ++c) {
    const auto [b, e] = ring_chunk(n, world, c);
    ring_reduce_reference(wire, ptrs, c, b, e, out.data() + b);
  }
  return out;
}

// Rounds follow each other without a barrier (a fast rank starts round k + 1 while its
// neighbours finish round k), every wire dtype in turn, and each process returns from main
// (closing its communicator and node) as soon as its last all-reduce succeeded. A round
// succeeds on a rank only once its right neighbour confirmed receipt ('done'), so no rank
// may be left waiting for a message that died with a closed socket: all succeed, every rank
// holds the normative bits of every round.
TEST(ZmqProcesses, RoundsBackToBackThenAnImmediateExitLoseNothing) {
  ScratchDir dir;
  const int world = 4, rounds = 8;
  const std::size_t n = 280'001;  // chunks of ~70k values: more than one uint8 block each
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    auto args = peer_args(dir.path(), r, world, n);
    args.insert(args.end(), {"--timeout-ms", "30000", "--rounds", std::to_string(rounds)});
    pids.push_back(spawn(args));
  }
  for (int r = 0; r < world; ++r) EXPECT_EQ(reap(pids[r], 120s), 0) << "rank " << r;
  for (int k = 0; k < rounds; ++k) {
    const WireDtype wire = kRoundWires[k % 4];
    const auto expected = reference_sum(wire, world, n, static_cast<std::uint32_t>(k + 1));
    for (int r = 0; r < world; ++r) {
      const std::string prefix = dir.path() + "/rank-" + std::to_string(r) + ".round-" + std::to_string(k);
      const Outcome o = read_outcome(prefix);
      EXPECT_EQ(o.status, "ok") << "rank " << r << " round " << k << " (" << to_string(wire) << "):" << o.error;
      const auto got = read_floats(prefix + ".bin", n);
      ASSERT_EQ(got.size(), n) << "rank " << r << " round " << k;
      EXPECT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0)
          << "rank " << r << " round " << k << " (" << to_string(wire) << ")";
    }
  }
}

}  // namespace
}  // namespace pico::comm::test
