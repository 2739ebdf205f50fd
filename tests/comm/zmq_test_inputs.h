// tests/comm/zmq_test_inputs.h — the inputs every multi-rank test gives rank r: reproducible
// from (rank, n, seed) alone, so that a test can recompute another process's contribution.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "pico/common/codec.h"

namespace pico::comm::test {

inline std::vector<float> rank_input(int rank, std::size_t n, std::uint32_t seed = 1) {
  std::mt19937 rng(seed * 104729u + static_cast<unsigned>(rank) * 7919u + 1u);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Wire dtypes of consecutive rounds in the multi-round process test (zmq_test_peer --rounds).
inline constexpr WireDtype kRoundWires[4] = {WireDtype::kFloat32, WireDtype::kUInt8, WireDtype::kBFloat16,
                                             WireDtype::kFloat16};

}  // namespace pico::comm::test
