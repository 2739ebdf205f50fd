// Collectives of the in-process communicator: threads in one process, parameterized over
// world sizes and sizes; every thread's failure is collected and reported.
#include "pico/comm/in_process.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "pico/comm/ring.h"

namespace pico::comm {
namespace {

// Runs fn(rank, comm) on `world` threads and returns their results.
template <typename Fn>
void run_ranks(int world, Fn fn) {
  InProcessGroup group(world);
  std::vector<std::thread> threads;
  std::vector<std::string> failures(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto comm = group.communicator(r);
        fn(r, *comm);
      } catch (const std::exception& e) {
        failures[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
}

std::vector<float> rank_input(int rank, std::size_t n) {
  std::mt19937 rng(static_cast<unsigned>(rank * 7919 + 1));
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

class AllReduce : public ::testing::TestWithParam<std::tuple<int, std::size_t>> {};

TEST_P(AllReduce, EqualsTheLocalSumOnEveryRankBitForBit) {
  const auto [world, n] = GetParam();
  std::vector<std::vector<float>> results(static_cast<std::size_t>(world));
  std::vector<CollectiveResult> stats(static_cast<std::size_t>(world));
  run_ranks(world, [&, world = world, n = n](int r, Communicator& c) {
    auto data = rank_input(r, n);
    stats[r] = c.all_reduce(data.data(), n, {});
    results[r] = std::move(data);
  });
  // The ring's order for chunk c: in_c + in_{c+1} + … (left to right), exactly.
  std::vector<float> expected(n);
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n));
  for (int c = 0; c < world; ++c) {
    const auto [b, e] = ring_chunk(n, world, c);
    for (std::size_t i = b; i < e; ++i) {
      float a = inputs[c][i];
      for (int k = 1; k < world; ++k) a = inputs[(c + k) % world][i] + a;
      expected[i] = a;
    }
  }
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(stats[r].ok()) << stats[r].error;
    ASSERT_EQ(std::memcmp(results[r].data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
    EXPECT_EQ(stats[r].bytes_sent, world == 1 ? 0u : ring_allreduce_payload_bytes(WireDtype::kFloat32, n, world, r));
  }
  // and it is the sum: within fp32 rounding of the exact (double) sum
  for (std::size_t i = 0; i < n; i += std::max<std::size_t>(1, n / 1000)) {
    double s = 0;
    for (int r = 0; r < world; ++r) s += inputs[r][i];
    ASSERT_NEAR(expected[i], s, 1e-5 * world * 4);
  }
}

INSTANTIATE_TEST_SUITE_P(RanksBySizes, AllReduce,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 8),
                                            ::testing::Values(std::size_t{0}, std::size_t{1}, std::size_t{7},
                                                              std::size_t{1000}, std::size_t{1} << 20)));

TEST(AllReduceCompressed, EveryRankEndsWithIdenticalBytesCloseToTheSum) {
  for (auto wire : {WireDtype::kFloat16, WireDtype::kBFloat16, WireDtype::kUInt8}) {
    const int world = 4;
    const std::size_t n = 150000;
    std::vector<std::vector<float>> results(world);
    run_ranks(world, [&](int r, Communicator& c) {
      auto data = rank_input(r, n);
      AllreduceOptions o;
      o.wire = wire;
      const auto res = c.all_reduce(data.data(), n, o);
      if (!res.ok()) throw std::runtime_error(res.error);
      if (res.bytes_sent != ring_allreduce_payload_bytes(wire, n, world, r)) throw std::runtime_error("bytes");
      results[r] = std::move(data);
    });
    for (int r = 1; r < world; ++r)
      ASSERT_EQ(std::memcmp(results[r].data(), results[0].data(), n * 4), 0) << to_string(wire) << " rank " << r;
    double err = 0, norm = 0;
    std::vector<std::vector<float>> inputs;
    for (int r = 0; r < world; ++r) inputs.push_back(rank_input(r, n));
    for (std::size_t i = 0; i < n; ++i) {
      double s = 0;
      for (int r = 0; r < world; ++r) s += inputs[r][i];
      err += (results[0][i] - s) * (results[0][i] - s);
      norm += s * s;
    }
    const double rel = std::sqrt(err / norm);
    // fp16/bf16 carry 11/8 mantissa bits; uint8 over ±3σ bins ~ 1/40 relative error per hop
    const double bound = wire == WireDtype::kFloat16 ? 1e-3 : wire == WireDtype::kBFloat16 ? 1e-2 : 0.1;
    EXPECT_LT(rel, bound) << to_string(wire);
  }
}

TEST(AllGather, VariableSizes) {
  const int world = 5;
  run_ranks(world, [&](int r, Communicator& c) {
    std::vector<std::uint8_t> mine(static_cast<std::size_t>(r * 3), static_cast<std::uint8_t>(r));
    std::vector<std::vector<std::uint8_t>> out;
    const auto res = c.all_gather(mine, out, {});
    if (!res.ok() || out.size() != world) throw std::runtime_error("all_gather failed");
    for (int i = 0; i < world; ++i)
      if (out[i] != std::vector<std::uint8_t>(static_cast<std::size_t>(i * 3), static_cast<std::uint8_t>(i)))
        throw std::runtime_error("wrong payload");
  });
}

TEST(Broadcast, FromAnyRoot) {
  for (int root : {0, 2}) {
    run_ranks(3, [&](int r, Communicator& c) {
      std::vector<std::uint8_t> data;
      if (r == root) data = {1, 2, 3, 4};
      BroadcastOptions o;
      o.root = root;
      const auto res = c.broadcast(data, o);
      if (!res.ok() || data != std::vector<std::uint8_t>{1, 2, 3, 4}) throw std::runtime_error("broadcast failed");
    });
  }
}

TEST(Failure, AMissingRankMakesTheOthersTimeOutNotHang) {
  InProcessGroup group(3);
  std::vector<CollectiveResult> res(2);
  std::vector<std::thread> t;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 2; ++r) {
    t.emplace_back([&, r] {
      auto c = group.communicator(r);
      std::vector<float> d(10, 1.0f);
      AllreduceOptions o;
      o.timeout = std::chrono::milliseconds(300);
      res[r] = c->all_reduce(d.data(), d.size(), o);
    });
  }
  for (auto& x : t) x.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& r : res) {
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.status == Status::kTimeout || r.status == Status::kPeerFailed) << to_string(r.status);
    EXPECT_FALSE(r.error.empty());
  }
  EXPECT_LT(secs, 2.0);
  // The group stays broken: a late rank fails at once rather than waiting for nobody.
  auto late = group.communicator(2);
  std::vector<float> d(10, 1.0f);
  EXPECT_FALSE(late->all_reduce(d.data(), d.size(), {}).ok());
}

TEST(Failure, RanksThatDisagreeGetInvalid) {
  run_ranks(2, [&](int r, Communicator& c) {
    std::vector<float> d(static_cast<std::size_t>(10 + r), 1.0f);
    const auto res = c.all_reduce(d.data(), d.size(), {});
    if (res.status != Status::kInvalid) throw std::runtime_error("expected kInvalid");
  });
}

TEST(Failure, AbortWakesEveryone) {
  InProcessGroup group(2);
  CollectiveResult res;
  std::thread t([&] { res = group.communicator(0)->barrier({}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  group.abort("shutting down");
  t.join();
  EXPECT_EQ(res.status, Status::kAborted);
  EXPECT_EQ(res.error, "shutting down");
}

}  // namespace
}  // namespace pico::comm
