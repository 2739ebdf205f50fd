#include "algorithms.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "demo_round.h"
#include "outer_round.h"
#include "pico/common/codec.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"
#include "pico/optim/compress.h"
#include "pico/optim/demo.h"
#include "pico/optim/diloco.h"

namespace pico::trainer {
namespace {

// The one-integer entry `name` of `state`; throws pico::Error when missing or malformed.
std::int64_t scalar_entry(const optim::NamedTensors& state, const std::string& name) {
  for (const auto& [n, t] : state) {
    if (n != name) continue;
    if (t.numel() != 1 || t.is_floating_point())
      throw Error(str("outer state '", name, "' is not one integer"), "the checkpoint is damaged; use an earlier one");
    return t.to(torch::kCPU).to(torch::kInt64).item<std::int64_t>();
  }
  throw Error(str("outer state has no '", name, "'"), "the checkpoint was written by another outer algorithm or pico");
}

// `state` without the entries named in `drop`.
optim::NamedTensors without(const optim::NamedTensors& state, const std::vector<std::string>& drop) {
  optim::NamedTensors out;
  for (const auto& e : state)
    if (std::find(drop.begin(), drop.end(), e.first) == drop.end()) out.push_back(e);
  return out;
}

// Throws a pico::Error that says which collective failed and why.
void check(const comm::CollectiveResult& r, const char* what, std::int64_t step) {
  if (r.ok()) return;
  throw Error(str(what, " failed at step ", step + 1, ": ", comm::to_string(r.status), " — ", r.error),
              "a contributor died, stalled or disagrees; restart the run with --resume (outer.timeout_s sets how long "
              "to wait)");
}

}  // namespace

void Algorithm::load_outer_state(const optim::NamedTensors& state) {
  if (!state.empty())
    throw Error(str("the checkpoint holds outer state ('", state.front().first, "', …) but this algorithm has none"),
                "resume with the outer.algorithm the run was started with");
}

void Algorithm::load_pseudo_gradient(const optim::NamedTensors& delta) {
  if (!delta.empty())
    throw Error(
        str("the checkpoint holds a pseudo-gradient ('", delta.front().first, "', …) but this algorithm has none"),
        "resume with the outer.algorithm the run was started with");
}

namespace {

class Ddp final : public Algorithm {
 public:
  Ddp(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : c_(c), comm_(comm), mu_(mu), flat_(static_cast<std::size_t>(c.numel())) {
    opts_.wire = parse_wire_dtype(cfg.outer.compression);
    opts_.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
  }

  StepReport step(std::int64_t step) override {
    StepReport rep;
    double loss;
    {
      std::lock_guard<std::mutex> lock(mu_);
      loss = c_.forward_backward(step);
      if (comm_.world_size() > 1) c_.grads_to(flat_.data());
    }
    if (comm_.world_size() > 1) {
      opts_.tag = static_cast<std::uint64_t>(step);
      const auto r = comm_.all_reduce(flat_.data(), flat_.size(), opts_);
      check(r, "the gradient all-reduce", step);
      bytes_sent_ += r.bytes_sent;
      bytes_received_ += r.bytes_received;
      rep.comm_s = r.seconds;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (comm_.world_size() > 1) c_.grads_from(flat_.data(), 1.0f / static_cast<float>(comm_.world_size()));
    rep.inner = c_.optimizer_step(step, loss);
    return rep;
  }

 private:
  Contributor& c_;
  comm::Communicator& comm_;
  std::mutex& mu_;
  std::vector<float> flat_;  // (numel) gradient, summed in place
  comm::AllreduceOptions opts_;
};

// H local AdamW steps, then one outer round (outer_round.h): Δ_i weighted by the tokens
// each contributor processed, all-reduced (compressed on the wire), an outer Nesterov step
// on θ_g copied back into the model, and the θ_g hashes compared. Inner AdamW state carries
// over between rounds.
class DiLoCo final : public Algorithm {
 public:
  DiLoCo(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : cfg_(cfg), c_(c), comm_(comm), mu_(mu), round_(cfg, c.model()->named_params()) {}

  StepReport step(std::int64_t step) override {
    StepReport rep;
    {
      std::lock_guard<std::mutex> lock(mu_);
      rep.inner = c_.train_step(step);
    }
    round_tokens_ += rep.inner.tokens;
    const bool round_end = (step + 1) % cfg_.outer.inner_steps == 0 || step + 1 == cfg_.training.max_steps;
    if (round_end) outer_round(step, rep);
    return rep;
  }

  optim::NamedTensors outer_state() const override {
    optim::NamedTensors s = round_.state();
    s.emplace_back("round_tokens", torch::tensor({round_tokens_}, torch::kLong));
    return s;
  }

  void load_outer_state(const optim::NamedTensors& state) override {
    // Validate everything before changing anything (OuterRound::load_state does the same).
    const std::int64_t round_tokens = scalar_entry(state, "round_tokens");
    if (round_tokens < 0)
      throw Error(str("outer state 'round_tokens' is negative: ", round_tokens), "the checkpoint is damaged");
    round_.load_state(without(state, {"round_tokens"}));
    round_tokens_ = round_tokens;
  }

  optim::NamedTensors pseudo_gradient() const override { return round_.pseudo_gradient(); }
  void load_pseudo_gradient(const optim::NamedTensors& delta) override { round_.load_pseudo_gradient(delta); }
  std::int64_t rounds_done() const override { return round_.rounds_done(); }

 private:
  void outer_round(std::int64_t step, StepReport& rep) {
    RoundPlan plan;
    plan.round = round_.rounds_done() + 1;
    plan.tokens = static_cast<double>(round_tokens_);
    plan.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg_.outer.timeout_s * 1000));
    RoundOutcome out = round_.run(comm_, plan, c_.model()->named_params(), mu_);
    bytes_sent_ += out.report.bytes_sent;
    bytes_received_ += out.report.bytes_received;
    if (!out.ok)
      throw Error(
          str("outer round ", plan.round, " (after step ", step + 1, "): ", out.error),
          "a contributor died, stalled or disagrees; restart the run with --resume (outer.timeout_s sets how long "
          "to wait)");
    if (!out.vote.disagreeing.empty()) {
      std::vector<std::string> who;
      for (int rank : out.vote.disagreeing)
        who.push_back(
            str("contributor ", rank, " (", out.vote.hashes[static_cast<std::size_t>(rank)].substr(0, 12), "…)"));
      throw Error(
          str("after outer round ", plan.round, " the θ_g of ", join(who, ", "), " differs from the others' (",
              out.vote.majority.substr(0, 12),
              "…): its state was damaged (memory, a bad checkpoint) or pico has a bug; the run stops rather than "
              "train on diverged copies"),
          "resume from the last checkpoint with --resume; if it happens again, report it with the run's config");
    }
    rep.round = out.report;
    rep.round_done = true;
    rep.comm_s = out.report.comm_s;
    round_tokens_ = 0;
  }

  const RunConfig& cfg_;
  Contributor& c_;
  comm::Communicator& comm_;
  std::mutex& mu_;
  OuterRound round_;
  std::int64_t round_tokens_ = 0;
};

// Every step: each contributor folds its gradient into its decoupled momentum δ, sends the
// top-k DCT coefficients of δ per chunk, and every contributor applies the same sign step
// from all contributors' coefficients (demo_round.h). Replaces AdamW.
class DeMo final : public Algorithm {
 public:
  DeMo(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : comm_(comm), mu_(mu), demo_(cfg, c) {
    timeout_ = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
  }

  StepReport step(std::int64_t step) override {
    StepReport rep;
    const auto r = demo_.step(comm_, step, static_cast<std::uint64_t>(step), timeout_, mu_);
    check(r.gather, "the DeMo all-gather", step);
    rep.inner = r.inner;
    bytes_sent_ += r.gather.bytes_sent;
    bytes_received_ += r.gather.bytes_received;
    rep.comm_s = r.gather.seconds;
    return rep;
  }

  optim::NamedTensors outer_state() const override { return demo_.state(); }
  void load_outer_state(const optim::NamedTensors& state) override { demo_.load_state(state); }

 private:
  comm::Communicator& comm_;
  std::mutex& mu_;
  DeMoRound demo_;
  std::chrono::milliseconds timeout_{60'000};
};

}  // namespace

std::unique_ptr<Algorithm> make_algorithm(const RunConfig& cfg, Contributor& contributor, comm::Communicator& comm,
                                          std::mutex& compute_mu) {
  if (cfg.outer.algorithm == "ddp") return std::make_unique<Ddp>(cfg, contributor, comm, compute_mu);
  if (cfg.outer.algorithm == "diloco") return std::make_unique<DiLoCo>(cfg, contributor, comm, compute_mu);
  if (cfg.outer.algorithm == "demo") return std::make_unique<DeMo>(cfg, contributor, comm, compute_mu);
  throw Error(str("unknown outer.algorithm '", cfg.outer.algorithm, "'"), "use ddp, diloco or demo");
}

}  // namespace pico::trainer
