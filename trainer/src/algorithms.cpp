#include "algorithms.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "pico/common/codec.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/optim/compress.h"
#include "pico/optim/demo.h"
#include "pico/optim/diloco.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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
    throw Error(str("the checkpoint holds a pseudo-gradient ('", delta.front().first, "', …) but this algorithm has none"),
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

// H local AdamW steps, then one outer round: Δ_i = θ_g − θ_i weighted by the tokens each
// contributor processed, all-reduced (compressed on the wire), an outer Nesterov step on
// θ_g, θ_g copied back into the model. Inner AdamW state carries over between rounds.
class DiLoCo final : public Algorithm {
 public:
  DiLoCo(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : cfg_(cfg),
        c_(c),
        comm_(comm),
        mu_(mu),
        outer_(c.model()->named_params(), {cfg.outer.lr, cfg.outer.momentum, cfg.outer.nesterov}),
        flat_(static_cast<std::size_t>(c.numel())) {
    opts_.wire = parse_wire_dtype(cfg.outer.compression);
    opts_.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
    if (cfg.outer.error_feedback)
      feedback_ = std::make_unique<optim::ErrorFeedback>("outer.error_feedback", flat_.size(), opts_.wire);
  }

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

  const optim::DiLoCo& outer() const { return outer_; }

  optim::NamedTensors outer_state() const override {
    optim::NamedTensors s = outer_.state();
    s.emplace_back("round_tokens", torch::tensor({round_tokens_}, torch::kLong));
    if (feedback_) {
      for (auto& e : feedback_->state()) s.push_back(std::move(e));
    }
    return s;
  }

  void load_outer_state(const optim::NamedTensors& state) override {
    // Validate everything before changing anything.
    const std::int64_t round_tokens = scalar_entry(state, "round_tokens");
    if (round_tokens < 0) throw Error(str("outer state 'round_tokens' is negative: ", round_tokens), "the checkpoint is damaged");
    std::unique_ptr<optim::ErrorFeedback> fb;  // a copy (the residual is a plain vector) takes the state first
    if (feedback_) {
      fb = std::make_unique<optim::ErrorFeedback>(*feedback_);
      fb->load_state(state);
    }
    outer_.load_state(without(state, {"round_tokens"}));  // validates everything before it changes anything
    if (feedback_) feedback_ = std::move(fb);
    round_tokens_ = round_tokens;
    round_ = outer_.step_count();
  }

  optim::NamedTensors pseudo_gradient() const override { return outer_.unflatten(last_delta_); }

  void load_pseudo_gradient(const optim::NamedTensors& delta) override { last_delta_ = outer_.flatten(delta); }

  std::int64_t rounds_done() const override { return round_; }

 private:
  void outer_round(std::int64_t step, StepReport& rep) {
    RoundReport& r = rep.round;
    r.round = ++round_;
    r.contributors = comm_.world_size();
    double compute_s = 0;
    auto t = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      outer_.pseudo_gradient(c_.model()->named_params(), flat_.data());
      last_delta_ = flat_;  // unweighted Δ, for checkpoints
    }
    compute_s += seconds_since(t);
    // Weights first (a tiny exact-enough fp32 sum, identical on every rank), so that each
    // contributor can scale its own Δ: the reduce then yields Σ w_i Δ_i / Σ w_i directly.
    float weight = static_cast<float>(round_tokens_);
    comm::AllreduceOptions wopts;
    wopts.timeout = opts_.timeout;
    wopts.tag = tag(step, 0);
    auto wr = comm_.all_reduce(&weight, 1, wopts);
    check(wr, "the round-weight all-reduce", step);
    account(wr, r);
    t = Clock::now();
    const float scale = static_cast<float>(round_tokens_) / weight;
    for (auto& v : flat_) v *= scale;
    if (feedback_) feedback_->compensate(flat_.data());
    compute_s += seconds_since(t);
    opts_.tag = tag(step, 1);
    auto dr = comm_.all_reduce(flat_.data(), flat_.size(), opts_);
    check(dr, "the pseudo-gradient all-reduce", step);
    account(dr, r);
    t = Clock::now();
    double norm2 = 0;
    for (float v : flat_) norm2 += static_cast<double>(v) * v;
    r.pseudo_grad_norm = std::sqrt(norm2);
    {
      std::lock_guard<std::mutex> lock(mu_);
      outer_.step(flat_.data());
      outer_.copy_to(c_.model()->named_params());
    }
    r.theta_hash = outer_.state_hash();
    compute_s += seconds_since(t);
    r.outer_step_s = compute_s;
    r.tokens = static_cast<std::int64_t>(weight);
    rep.round_done = true;
    rep.comm_s = r.comm_s;
    round_tokens_ = 0;
  }

  std::uint64_t tag(std::int64_t step, std::uint64_t part) const {
    return static_cast<std::uint64_t>(step) * 4 + part;
  }

  void account(const comm::CollectiveResult& res, RoundReport& r) {
    bytes_sent_ += res.bytes_sent;
    bytes_received_ += res.bytes_received;
    r.bytes_sent += res.bytes_sent;
    r.bytes_received += res.bytes_received;
    r.comm_s += res.seconds;
  }

  const RunConfig& cfg_;
  Contributor& c_;
  comm::Communicator& comm_;
  std::mutex& mu_;
  optim::DiLoCo outer_;
  std::unique_ptr<optim::ErrorFeedback> feedback_;
  std::vector<float> flat_;  // (numel) Δ, then the reduced Δ̄
  std::vector<float> last_delta_;  // (numel) this contributor's last unweighted Δ; empty before round 1
  comm::AllreduceOptions opts_;
  std::int64_t round_ = 0;
  std::int64_t round_tokens_ = 0;
};

// Every step: each contributor folds its gradient into its decoupled momentum δ, sends the
// top-k DCT coefficients of δ per chunk, and every contributor applies the same sign step
// from all contributors' coefficients. Replaces AdamW.
class DeMo final : public Algorithm {
 public:
  DeMo(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : c_(c), comm_(comm), mu_(mu), demo_(c.model()->named_params(), demo_config(cfg)) {
    opts_.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
  }

  StepReport step(std::int64_t step) override {
    StepReport rep;
    std::vector<std::uint8_t> payload;
    {
      std::lock_guard<std::mutex> lock(mu_);
      rep.inner.loss = c_.forward_backward(step);
      rep.inner.grad_norm = c_.grad_norm();
      rep.inner.lr = optim::lr_at(c_.schedule(), step);
      rep.inner.tokens = c_.tokens_per_step();
      payload = demo_.prepare(rep.inner.lr);
    }
    std::vector<std::vector<std::uint8_t>> gathered;
    opts_.tag = static_cast<std::uint64_t>(step);
    const auto r = comm_.all_gather(payload, gathered, opts_);
    check(r, "the DeMo all-gather", step);
    bytes_sent_ += r.bytes_sent;
    bytes_received_ += r.bytes_received;
    rep.comm_s = r.seconds;
    std::lock_guard<std::mutex> lock(mu_);
    demo_.apply(gathered, rep.inner.lr);
    return rep;
  }

  optim::NamedTensors outer_state() const override { return demo_.state(); }
  void load_outer_state(const optim::NamedTensors& state) override { demo_.load_state(state); }

 private:
  static optim::DeMoConfig demo_config(const RunConfig& cfg) {
    optim::DeMoConfig d;
    d.lr = cfg.training.optimization.lr;
    d.compression_decay = cfg.outer.demo_compression_decay;
    d.compression_topk = cfg.outer.demo_compression_topk;
    d.compression_chunk = cfg.outer.demo_compression_chunk;
    d.weight_decay = cfg.training.optimization.adamw.weight_decay;
    d.value_dtype = parse_wire_dtype(cfg.outer.demo_value_dtype);
    return d;
  }

  Contributor& c_;
  comm::Communicator& comm_;
  std::mutex& mu_;
  optim::DeMo demo_;
  comm::AllgatherOptions opts_;
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
