// trainer/src/outer_round.h — the DiLoCo outer round: the one implementation every path calls.
//
// Local contributors (threads of one process, or the processes of --comm zmq; both through
// algorithms.cpp) and the members of a joined run (distributed.cpp) end each round here,
// with whatever communicator their group has. For contributor i of n, top to bottom:
//
//   Δ_i  = θ_g − θ_i                        (numel) fp32, optim::DiLoCo::pseudo_gradient
//   w_i  = tokens_i · m_i                    m_i = 1, or 0 for an update the broker rejected
//   W    = Σ_j w_j                           all-reduce of 1 fp32               (tag 4r)
//   u_i  = fl((w_i / W) · Δ_i)               fp32, the weight rounded to fp32 once
//   u_i ← u_i + e_i;  e_i ← u_i − Q(u_i)     error feedback (outer.error_feedback): what the
//                                            wire's quantizer Q loses is sent next round
//   ū    = Σ_j u_j                           all-reduce of numel values, Q = outer.compression
//                                            on the wire, fp32 accumulation  (tag 4r+1)
//   θ_g ← Nesterov(θ_g, ū);  θ_i ← θ_g      optim::DiLoCo::step, copy_to
//   h_i  = SHA-256(θ_g, b, step)             all-gathered and compared       (tag 4r+2)
//
// A round is a value, not an exception: it fails with the collective's status and reason
// (a peer died or timed out) and then leaves θ_g, the model and the error-feedback residual
// as they were, so a joined run retries it with other members; a local run stops. When the
// hashes disagree the round has happened (every θ_g stepped) and the outcome names the
// contributors whose θ_g is not the majority's: a local run stops, a joined member that is
// in the minority is resynced by its broker.
//
// What this is not: when a round ends (the caller's schedule), who takes part (the broker),
// DeMo (it exchanges every step: demo_round.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "algorithms.h"
#include "pico/comm/communicator.h"
#include "pico/optim/compress.h"
#include "pico/optim/diloco.h"
#include "pico/trainer/run_config.h"
#include "pico/trainer/test_seams.h"

namespace pico::trainer {

// The θ hashes of a round's ranks, compared: what every rank ends a round with.
struct HashVote {
  std::vector<std::string> hashes;  // every rank's hash, by rank
  std::string majority;             // the hash most ranks hold
  std::vector<int> disagreeing;     // ranks whose hash is not the majority's (empty: all agree)
};
// All-gathers this rank's `hash` over `comm` (tag `tag`) and fills `vote` when it succeeds.
comm::CollectiveResult vote_on_hash(comm::Communicator& comm, const std::string& hash, std::uint64_t tag,
                                    std::chrono::milliseconds timeout, HashVote& vote);

struct RoundPlan {
  std::int64_t round = 0;        // 1-based: the round this call completes
  double tokens = 0;             // this contributor's tokens in the round
  double weight_multiplier = 1;  // 0: take part (and end in sync) but add nothing
  std::chrono::milliseconds timeout{60'000};
};

struct RoundOutcome {
  bool ok = false;     // every collective completed and θ_g stepped
  std::string error;   // which collective failed and why (when !ok)
  RoundReport report;  // round, contributors, ‖ū‖, bytes, seconds, tokens, θ_g hash
  HashVote vote;       // the ranks' θ_g hashes after the step (when ok)
};

class OuterRound {
 public:
  // θ_g ← the model's parameters now (fp32 copies); outer.lr/momentum/nesterov,
  // outer.compression and outer.error_feedback from `cfg`.
  OuterRound(const RunConfig& cfg, const optim::NamedTensors& params);

  // One round (see the top of this file). `params` are the model's (θ_i in, θ_g out).
  // `compute_mu` is held while the model's memory is read or written. Every member of
  // `comm` calls it together with the same plan.round.
  RoundOutcome run(comm::Communicator& comm, const RoundPlan& plan, const optim::NamedTensors& params,
                   std::mutex& compute_mu);

  const optim::DiLoCo& outer() const { return outer_; }
  optim::DiLoCo& outer() { return outer_; }
  std::int64_t rounds_done() const { return outer_.step_count(); }
  std::string theta_hash() const { return outer_.state_hash(); }

  // Checkpoint state: optim::DiLoCo's entries, then "outer.error_feedback.residual" with
  // error feedback. load_state validates everything before it changes anything.
  optim::NamedTensors state() const;
  void load_state(const optim::NamedTensors& state);
  // The last round's unweighted Δ_i (empty before the first round).
  optim::NamedTensors pseudo_gradient() const { return outer_.unflatten(last_delta_); }
  void load_pseudo_gradient(const optim::NamedTensors& delta) { last_delta_ = outer_.flatten(delta); }
  // ‖Δ_i‖₂ of the model's current parameters against θ_g, and whether Δ_i is finite.
  std::pair<double, bool> delta_norm(const optim::NamedTensors& params);

 private:
  optim::DiLoCo outer_;
  WireDtype wire_;
  std::unique_ptr<optim::ErrorFeedback> feedback_;
  std::vector<float> flat_;        // (numel) Δ_i, then u_i, then ū
  std::vector<float> last_delta_;  // (numel) the last round's unweighted Δ_i
};

}  // namespace pico::trainer
