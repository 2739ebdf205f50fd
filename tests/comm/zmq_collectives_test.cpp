// The ZeroMQ communicator's collectives, with ranks as threads on 127.0.0.1 ephemeral ports
// (CURVE on): all-reduce against the local sum and bit for bit against InProcessGroup for
// every wire dtype, all-gather / broadcast / barrier, rounds in sequence with skew, and what
// happens when ranks disagree or stall.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "pico/comm/in_process.h"
#include "pico/comm/ring.h"
#include "zmq_test_util.h"

namespace pico::comm::test {
namespace {

using namespace std::chrono_literals;

// The normative result (ring.h) computed from all inputs at once.
std::vector<float> reference(WireDtype wire, const std::vector<std::vector<float>>& inputs, std::size_t n) {
  const int w = static_cast<int>(inputs.size());
  std::vector<const float*> ptrs;
  for (const auto& v : inputs) ptrs.push_back(v.data());
  std::vector<float> out(n);
  for (int c = 0; c < w; ++c) {
    const auto [b, e] = ring_chunk(n, w, c);
    if (e > b) ring_reduce_reference(wire, ptrs, c, b, e, out.data() + b);
  }
  return out;
}

// Messages a rank sends in one all-reduce: the segments of the W−1 chunks it forwards in each phase.
std::size_t allreduce_messages(WireDtype wire, std::size_t n, int w, int rank, const ZmqOptions& o) {
  const std::size_t segment_bytes = zmq_message_payload_bytes(o);
  if (w == 1) return 0;
  std::size_t per = wire == WireDtype::kUInt8
                        ? std::max<std::size_t>(1, segment_bytes / encoded_size(wire, kUInt8Block)) * kUInt8Block
                        : segment_bytes / encoded_size(wire, 1);
  std::size_t msgs = 0;
  for (int s = 0; s < w - 1; ++s)
    for (int c : {((rank - s) % w + w) % w, ((rank + 1 - s) % w + w) % w}) {
      const auto [b, e] = ring_chunk(n, w, c);
      msgs += (e - b + per - 1) / per;
    }
  return msgs;
}

struct Sizes {
  int world;
  std::size_t n;
};

class ZmqAllReduce : public ::testing::TestWithParam<Sizes> {};

TEST_P(ZmqAllReduce, EqualsTheLocalSumAndEveryRankHoldsIdenticalBytes) {
  const auto [world, n] = GetParam();
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.segment_bytes = 64 << 10;  // several segments per chunk: exercises the pipeline
  ThreadGroup g(world, o, keys.path());
  std::vector<std::vector<float>> inputs, results(world);
  for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n));
  std::vector<CollectiveResult> stats(world);
  g.run([&](int r, ZmqCommunicator& c) {
    auto data = inputs[r];
    stats[r] = c.all_reduce(data.data(), n, {});
    results[r] = std::move(data);
  });
  const auto expected = reference(WireDtype::kFloat32, inputs, n);
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(stats[r].ok()) << "rank " << r << ": " << stats[r].error;
    ASSERT_EQ(std::memcmp(results[r].data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
    // … plus one "done" to the left neighbour per collective.
    const std::size_t msgs = allreduce_messages(WireDtype::kFloat32, n, world, r, o) + (world > 1);
    EXPECT_EQ(stats[r].bytes_sent,
              ring_allreduce_payload_bytes(WireDtype::kFloat32, n, world, r) + kWireHeaderBytes * msgs);
    EXPECT_EQ(stats[r].world_size, world);
    EXPECT_GT(stats[r].seconds, 0.0);
  }
  // … and the ring's order of summation is still the sum: within fp32 rounding of a double sum.
  for (std::size_t i = 0; i < n; i += std::max<std::size_t>(1, n / 997)) {
    double s = 0;
    for (int r = 0; r < world; ++r) s += inputs[r][i];
    ASSERT_NEAR(expected[i], s, 4e-6 * world * (1 + std::abs(s))) << "element " << i;
  }
}

std::vector<Sizes> all_reduce_cases() {
  std::vector<Sizes> v;
  for (int w = 1; w <= 8; ++w)
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{1000}, std::size_t{262147}})
      v.push_back({w, n});
  for (int w : {2, 3, 4, 8}) v.push_back({w, 3'000'017});  // millions
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ranks, ZmqAllReduce, ::testing::ValuesIn(all_reduce_cases()), [](const auto& info) {
  return "w" + std::to_string(info.param.world) + "_n" + std::to_string(info.param.n);
});

// Compressed wires: the same bits as InProcessGroup (and ring_reduce_reference) on every rank.
struct WireCase {
  int world;
  std::size_t n;
  WireDtype wire;
};
class ZmqAllReduceWire : public ::testing::TestWithParam<WireCase> {};

TEST_P(ZmqAllReduceWire, IsBitIdenticalToInProcessGroup) {
  const auto [world, n, wire] = GetParam();
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n, 3));
  // InProcessGroup, run independently on threads.
  std::vector<std::vector<float>> in_process(world);
  {
    InProcessGroup group(world);
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        auto c = group.communicator(r);
        auto data = inputs[r];
        AllreduceOptions o;
        o.wire = wire;
        EXPECT_TRUE(c->all_reduce(data.data(), n, o).ok());
        in_process[r] = std::move(data);
      });
    for (auto& t : threads) t.join();
  }
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.segment_bytes = 32 << 10;  // 16 KiB messages: one uint8 block, 4096 fp32 values
  ThreadGroup g(world, o, keys.path());
  std::vector<std::vector<float>> results(world);
  std::vector<CollectiveResult> stats(world);
  g.run([&](int r, ZmqCommunicator& c) {
    auto data = inputs[r];
    AllreduceOptions ao;
    ao.wire = wire;
    ao.tag = 42;
    stats[r] = c.all_reduce(data.data(), n, ao);
    results[r] = std::move(data);
  });
  const auto expected = reference(wire, inputs, n);
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(stats[r].ok()) << stats[r].error;
    ASSERT_EQ(std::memcmp(results[r].data(), in_process[r].data(), n * sizeof(float)), 0)
        << "rank " << r << " differs from InProcessGroup";
    ASSERT_EQ(std::memcmp(results[r].data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
    EXPECT_EQ(stats[r].bytes_sent, ring_allreduce_payload_bytes(wire, n, world, r) +
                                       kWireHeaderBytes * (allreduce_messages(wire, n, world, r, o) + (world > 1)));
  }
  // Compression changed the values (the test is not vacuous), by about the codec's error:
  // relative RMS error of the sum ~0.4% for fp16/bf16 steps, ~1% per uint8 hop.
  if (n > 1000 && wire != WireDtype::kFloat32) {
    const auto exact = reference(WireDtype::kFloat32, inputs, n);
    EXPECT_NE(std::memcmp(results[0].data(), exact.data(), n * sizeof(float)), 0);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < n; ++i) {
      err += (results[0][i] - exact[i]) * (results[0][i] - exact[i]);
      norm += exact[i] * exact[i];
    }
    EXPECT_LT(std::sqrt(err / norm), wire == WireDtype::kUInt8 ? 0.03 : 0.01);
  }
}

std::vector<WireCase> wire_cases() {
  std::vector<WireCase> v;
  for (WireDtype wire : {WireDtype::kFloat32, WireDtype::kFloat16, WireDtype::kBFloat16, WireDtype::kUInt8})
    for (int w : {1, 2, 3, 5})
      for (std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{300'007}}) v.push_back({w, n, wire});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Wires, ZmqAllReduceWire, ::testing::ValuesIn(wire_cases()), [](const auto& info) {
  return to_string(info.param.wire) + "_w" + std::to_string(info.param.world) + "_n" + std::to_string(info.param.n);
});

TEST(ZmqCollectives, AllGatherBroadcastAndBarrierMoveEveryPayload) {
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.segment_bytes = 4096;
  const int world = 4;
  ThreadGroup g(world, o, keys.path());
  // Rank r's payload: r·3000 bytes (rank 0 sends nothing; others span several segments).
  auto payload = [](int r) {
    std::vector<std::uint8_t> v(static_cast<std::size_t>(r) * 3000);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(i * 31 + r);
    return v;
  };
  g.run([&](int r, ZmqCommunicator& c) {
    std::vector<std::vector<std::uint8_t>> out;
    const auto res = c.all_gather(payload(r), out, {});
    ASSERT_TRUE(res.ok()) << res.error;
    ASSERT_EQ(out.size(), static_cast<std::size_t>(world));
    std::uint64_t others = 0;
    for (int i = 0; i < world; ++i) {
      EXPECT_EQ(out[i], payload(i)) << "rank " << r << " origin " << i;
      if (i != r) others += payload(i).size();
    }
    EXPECT_GE(res.bytes_received, others);
    for (int root = 0; root < world; ++root) {
      std::vector<std::uint8_t> data = r == root ? payload(root + 1) : std::vector<std::uint8_t>{1, 2, 3};
      BroadcastOptions bo;
      bo.root = root;
      bo.tag = 100 + root;
      const auto b = c.broadcast(data, bo);
      ASSERT_TRUE(b.ok()) << b.error;
      EXPECT_EQ(data, payload(root + 1)) << "rank " << r << " root " << root;
    }
    std::vector<std::uint8_t> empty;
    BroadcastOptions bo;
    bo.root = 2;
    std::vector<std::uint8_t> data = r == 2 ? empty : std::vector<std::uint8_t>{9};
    ASSERT_TRUE(c.broadcast(data, bo).ok());
    EXPECT_TRUE(data.empty());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.barrier({}).ok());
  });
}

TEST(ZmqCollectives, UnixSocketsGiveTheSameBitsAsTcp) {
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.ipc_dir = keys.path() + "/ipc";
  o.segment_bytes = 64 << 10;
  const int world = 3;
  const std::size_t n = 200'003;
  ThreadGroup g(world, o, keys.path());
  EXPECT_EQ(g.base.members[0].endpoint.rfind("ipc://", 0), 0u) << g.base.members[0].endpoint;
  std::vector<std::vector<float>> inputs, results(world);
  for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n));
  g.run([&](int r, ZmqCommunicator& c) {
    auto data = inputs[r];
    AllreduceOptions ao;
    ao.wire = WireDtype::kBFloat16;
    const auto res = c.all_reduce(data.data(), n, ao);
    ASSERT_TRUE(res.ok()) << res.error;
    results[r] = std::move(data);
  });
  const auto expected = reference(WireDtype::kBFloat16, inputs, n);
  for (int r = 0; r < world; ++r)
    ASSERT_EQ(std::memcmp(results[r].data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
}

TEST(ZmqCollectives, ManyRoundsWithSkewedRanksStayInStep) {
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.segment_bytes = 8192;
  const int world = 5;
  ThreadGroup g(world, o, keys.path());
  const std::size_t n = 20'011;
  g.run([&](int r, ZmqCommunicator& c) {
    std::mt19937 rng(static_cast<unsigned>(r));
    for (int round = 0; round < 12; ++round) {
      // Random skew: some ranks arrive late, so fast ones run ahead into the next round.
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      auto data = rank_input(r, n, static_cast<std::uint32_t>(round));
      AllreduceOptions ao;
      ao.tag = static_cast<std::uint64_t>(round);
      ao.wire = round % 2 ? WireDtype::kBFloat16 : WireDtype::kFloat32;
      const auto res = c.all_reduce(data.data(), n, ao);
      ASSERT_TRUE(res.ok()) << res.error;
      std::vector<std::vector<float>> inputs;
      for (int i = 0; i < world; ++i) inputs.push_back(rank_input(i, n, static_cast<std::uint32_t>(round)));
      const auto expected = reference(ao.wire, inputs, n);
      ASSERT_EQ(std::memcmp(data.data(), expected.data(), n * sizeof(float)), 0) << "round " << round;
      std::vector<std::vector<std::uint8_t>> out;
      ASSERT_TRUE(c.all_gather(std::vector<std::uint8_t>(static_cast<std::size_t>(round + r), 7), out, {}).ok());
      for (int i = 0; i < world; ++i) ASSERT_EQ(out[i].size(), static_cast<std::size_t>(round + i));
      ASSERT_TRUE(c.barrier({}).ok());
    }
    EXPECT_EQ(c.stats().messages_rejected, 0u);
  });
}

TEST(ZmqCollectives, RanksThatDisagreeFailWithInvalidNotAHang) {
  ScratchDir keys;
  ThreadGroup g(3, test_options(keys.path()), keys.path());
  std::vector<CollectiveResult> res(3);
  const auto t0 = std::chrono::steady_clock::now();
  g.run([&](int r, ZmqCommunicator& c) {
    std::vector<float> data(1000, 1.0f);
    AllreduceOptions o;
    o.tag = r == 1 ? 5 : 0;  // rank 1 thinks this is another collective
    o.timeout = 10s;
    res[r] = c.all_reduce(data.data(), data.size(), o);
    // The group is broken now: later calls fail at once.
    const auto again = c.barrier({});
    EXPECT_EQ(again.status, Status::kPeerFailed);
    EXPECT_TRUE(c.broken());
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  int invalid = 0;
  for (int r = 0; r < 3; ++r) {
    EXPECT_FALSE(res[r].ok()) << "rank " << r;
    invalid += res[r].status == Status::kInvalid;
  }
  EXPECT_GE(invalid, 1);
}

TEST(ZmqCollectives, AStalledRankMakesTheOthersFailWithinTheTimeout) {
  ScratchDir keys;
  ThreadGroup g(4, test_options(keys.path()), keys.path());
  std::vector<CollectiveResult> res(4);
  std::vector<double> elapsed(4);
  g.run([&](int r, ZmqCommunicator& c) {
    std::vector<float> data(100'000, 1.0f);
    AllreduceOptions o;
    o.timeout = 1500ms;
    if (r == 2) {
      std::this_thread::sleep_for(3s);  // stalls past everyone's timeout
      res[r] = c.all_reduce(data.data(), data.size(), o);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    res[r] = c.all_reduce(data.data(), data.size(), o);
    elapsed[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  for (int r : {0, 1, 3}) {
    EXPECT_FALSE(res[r].ok());
    EXPECT_TRUE(res[r].status == Status::kTimeout || res[r].status == Status::kPeerFailed) << to_string(res[r].status);
    EXPECT_LT(elapsed[r], 1.5 + 0.5) << "rank " << r << " did not give up within the timeout: " << res[r].error;
  }
  // The latecomer learns from its neighbours' aborts that the group is gone.
  EXPECT_EQ(res[2].status, Status::kPeerFailed) << res[2].error;
  EXPECT_LT(res[2].seconds, 1.0);
}

// A member that advertises an address nobody can connect to (as one behind a NAT does): its
// neighbours give up within connect_timeout, not the collective's timeout, and name it.
TEST(ZmqCollectives, ANeighbourNobodyCanConnectToFailsTheCollectiveWithinTheConnectTimeout) {
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  o.connect_timeout = 2000ms;
  ThreadGroup g(3, o, keys.path());
  // Rank 2 says it is at 192.0.2.1 (TEST-NET-1: nothing answers there).
  g.nodes[2]->reached_through("tcp://192.0.2.1:9");
  g.base.members[2].endpoint = g.nodes[2]->endpoint();
  std::vector<CollectiveResult> res(3);
  std::vector<std::vector<int>> unreachable(3);
  g.run([&](int r, ZmqCommunicator& c) {
    std::vector<float> data(1000, 1.0f);
    AllreduceOptions ao;
    ao.timeout = 6s;
    res[r] = c.all_reduce(data.data(), data.size(), ao);
    unreachable[r] = c.unreachable();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(res[r].status, Status::kPeerFailed) << "rank " << r << ": " << res[r].error;
    EXPECT_LT(res[r].seconds, 2.0 + 3.0) << "rank " << r << ": " << res[r].error;
  }
  // Nobody can tell rank 2 that the group broke (no one can connect to it): it gives up at its
  // timeout. The broker does not wait for it (it hears from the others who could not reach it).
  EXPECT_EQ(res[2].status, Status::kTimeout) << res[2].error;
  // Rank 1 (data to its right) and rank 0 (control to its left) could not connect to rank 2.
  EXPECT_EQ(unreachable[0], std::vector<int>{2}) << res[0].error;
  EXPECT_EQ(unreachable[1], std::vector<int>{2}) << res[1].error;
  EXPECT_TRUE(unreachable[2].empty()) << res[2].error;
  EXPECT_NE(res[1].error.find("cannot reach rank 2 at tcp://192.0.2.1:9"), std::string::npos) << res[1].error;
}

}  // namespace
}  // namespace pico::comm::test
