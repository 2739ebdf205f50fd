// trainer/src/algorithms.h — how one contributor's steps combine with the others' (internal).
//
// One Algorithm per contributor, driven by its worker loop: step() runs one inner step and
// whatever communication the algorithm needs after it. Collectives run outside the compute
// lock, so contributors that share a process (--local-workers) take turns computing, each
// with every core, and meet in the collective.
//   ddp    — all-reduce the gradient every step, then the same AdamW update everywhere.
//   diloco — H local AdamW steps, then all-reduce the token-weighted pseudo-gradient and an
//            outer Nesterov step on θ_g (fp32, CPU), copied back into the model.
//   demo   — every step, all-gather each contributor's top-k DCT momentum coefficients and
//            take the same sign-SGD step everywhere (replaces AdamW).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "pico/comm/communicator.h"
#include "pico/trainer/checkpointing.h"
#include "pico/trainer/contributor.h"

namespace pico::trainer {

struct RoundReport {
  std::int64_t round = 0;  // 1-based index of the outer round that just ended
  int contributors = 0;
  double pseudo_grad_norm = 0;   // ‖averaged Δ‖₂
  double outer_step_s = 0;       // pseudo-gradient + outer update + copy-back, excluding communication
  double comm_s = 0;             // time in collectives this round
  std::uint64_t bytes_sent = 0;  // this round, this contributor
  std::uint64_t bytes_received = 0;
  std::int64_t tokens = 0;  // tokens all contributors processed this round
  std::string theta_hash;   // SHA-256 of θ_g and the outer state after the round
};

struct StepReport {
  StepResult inner;
  bool round_done = false;
  RoundReport round;
  double comm_s = 0;  // time in collectives during this step
};

// Also the outer state a checkpoint holds (checkpointing.h's OuterStateIO):
//   ddp    — none (/optim/outer stays empty).
//   diloco — "<param>.theta_g", "<param>.momentum", "step" (outer steps), "round_tokens"
//            (tokens of the round in progress), "outer.error_feedback.residual" with
//            outer.error_feedback; the pseudo-gradient is the last unweighted Δ.
//   demo   — "<param>.delta", "step".
class Algorithm : public OuterStateIO {
 public:
  ~Algorithm() override = default;
  // One inner step (`step` completed steps so far) and the communication that follows it.
  // Throws pico::Error when a collective fails (the message says which and why).
  virtual StepReport step(std::int64_t step) = 0;
  // Bytes this contributor has sent / received so far.
  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }

  // OuterStateIO, for algorithms without outer state (ddp).
  optim::NamedTensors outer_state() const override { return {}; }
  void load_outer_state(const optim::NamedTensors& state) override;
  optim::NamedTensors pseudo_gradient() const override { return {}; }
  void load_pseudo_gradient(const optim::NamedTensors& delta) override;
  std::int64_t rounds_done() const override { return 0; }

 protected:
  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0;
};

std::unique_ptr<Algorithm> make_algorithm(const RunConfig& cfg, Contributor& contributor, comm::Communicator& comm,
                                          std::mutex& compute_mu);

}  // namespace pico::trainer
