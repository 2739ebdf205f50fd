// trainer/src/demo_round.h — DeMo's exchange: one step for local contributors, a round of H
// steps for the members of a joined run (internal).
//
// A DeMo step for contributor i of n (optim/demo.h has the arithmetic):
//
//   g_i  = ∇ loss(θ; batch of step s)        forward_backward (the same θ on every rank)
//   p_i  = top-k DCT of δ_i (after δ_i ← β·δ_i + g_i, error feedback)     prepare
//   P    = [p_0 … p_{n−1}]                    all-gather, rank order        (tag: below)
//   θ   ← θ − lr_s · sign(IDCT(mean P)) (decoupled weight decay first)     apply
//
// θ is identical on every rank after every step (every rank applies the same P); δ_i is
// each rank's own. Local contributors (algorithms.cpp) run step() with tag s. A joined run
// (distributed.cpp) runs rounds of outer.inner_steps steps with the members its broker named
// for the round: run() keeps θ and δ as they were at the round's start, so an attempt that
// fails (a member died) leaves nothing half done and the broker retries the round with the
// others; at the end the θ hashes are compared as in the DiLoCo round (outer_round.h). Tags
// of a joined round: s for step s, kHashTagBase + round for the hash all-gather.
//
// The θ hash of a DeMo run is SHA-256 of θ (fp32) and the step count — δ is not in it,
// since it differs between ranks by design. A late joiner receives θ and the step count
// (snapshot()) and starts with δ = 0, as a rank that had sent nothing yet.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "algorithms.h"
#include "outer_round.h"
#include "pico/comm/communicator.h"
#include "pico/optim/demo.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/run_config.h"

namespace pico::trainer {

inline constexpr std::uint64_t kDeMoHashTagBase = std::uint64_t{1} << 40;

optim::DeMoConfig demo_config(const RunConfig& cfg);
// The θ hash of a DeMo run at `step` steps: SHA-256 of θ (fp32, CPU) and the step count.
std::string demo_theta_hash(const optim::NamedTensors& params, std::int64_t step);

struct DeMoStepOutcome {
  StepResult inner;               // loss, grad norm, lr, tokens of the step
  comm::CollectiveResult gather;  // the all-gather's status, bytes and seconds
};

// outer_round.h's RoundOutcome (ok, error, report: bytes, comm seconds, θ hash; the hash vote)
// and the round's steps. report.theta_hash is empty when θ did not step (it is back where
// the round started).
struct DeMoRoundOutcome : RoundOutcome {
  std::vector<StepResult> steps;  // the round's steps (when θ stepped)
  double compute_s = 0;
};

class DeMoRound {
 public:
  DeMoRound(const RunConfig& cfg, Contributor& c);

  // One step (above) with the members of `comm`. `mu` is held while the model is used.
  DeMoStepOutcome step(comm::Communicator& comm, std::int64_t step, std::uint64_t tag,
                       std::chrono::milliseconds timeout, std::mutex& mu);

  // Steps [first_step, first_step + steps) of round `round` with the members of `comm`, then
  // the θ hash check. `on_step(i, result)` is called after each step (progress). When a
  // step fails, θ and δ go back to where they were and the outcome says why.
  DeMoRoundOutcome run(comm::Communicator& comm, std::int64_t round, std::int64_t first_step, std::int64_t steps,
                       std::chrono::milliseconds timeout, std::mutex& mu,
                       const std::function<void(std::int64_t, const StepResult&)>& on_step);

  std::string theta_hash() const;
  std::int64_t step_count() const { return demo_.step_count(); }
  std::size_t payload_bytes() const { return demo_.payload_bytes(); }

  // A checkpoint's outer state: "<param>.delta" and "step" (optim::DeMo::state()).
  optim::NamedTensors state() const { return demo_.state(); }
  void load_state(const optim::NamedTensors& state) { demo_.load_state(state); }
  // What a late joiner needs: θ ("<param>") and "step". load_snapshot validates every entry
  // before it changes anything, sets θ and the step count and keeps δ.
  optim::NamedTensors snapshot() const;
  void load_snapshot(const optim::NamedTensors& snapshot);

 private:
  Contributor& c_;
  optim::DeMo demo_;
};

}  // namespace pico::trainer
