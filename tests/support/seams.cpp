// The pico command line with test seams (pico/trainer/test_seams.h) installed from the
// environment: a test-only executable, `pico_seams`, built from the same objects as `pico`.
//
//   PICO_SEAM_CORRUPT_THETA=RANK:ROUND   before round ROUND, the contributor of rank RANK adds
//                                        1e-3 to the first element of its θ_g (a damaged copy);
//                                        RANK `*` is whatever rank this process has (a joined
//                                        member's rank is its place in the ring, not known ahead)
#include <cstdlib>
#include <string>

#include "pico/trainer/test_seams.h"

namespace {

int g_rank = -1;  // -1: any rank
std::int64_t g_round = -1;

void corrupt_theta(int rank, std::int64_t round, pico::optim::DiLoCo& outer) {
  if ((g_rank >= 0 && rank != g_rank) || round != g_round) return;
  auto t = outer.global_params().front().second;
  t.data_ptr<float>()[0] += 1e-3f;
}

const bool kInstalled = [] {
  if (const char* v = std::getenv("PICO_SEAM_CORRUPT_THETA")) {
    const std::string s(v);
    const auto colon = s.find(':');
    const std::string rank = s.substr(0, colon);
    g_rank = rank == "*" ? -1 : std::stoi(rank);
    g_round = std::stoll(s.substr(colon + 1));
    pico::trainer::set_round_tamper_hook(corrupt_theta);
  }
  return true;
}();

}  // namespace
