// DeMo's exchange (demo_round.h).
#include "demo_round.h"

#include <map>

#include "pico/common/error.h"
#include "pico/common/strings.h"
#include "pico/optim/schedule.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// θ (fp32 CPU copies) and "step": a snapshot, and what the θ hash covers.
optim::NamedTensors theta_and_step(const optim::NamedTensors& params, std::int64_t step) {
  optim::NamedTensors s;
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params)
    s.emplace_back(name, p.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone());
  s.emplace_back("step", torch::tensor({step}, torch::kInt64));
  return s;
}

}  // namespace

std::string demo_theta_hash(const optim::NamedTensors& params, std::int64_t step) {
  return optim::hash_tensors(theta_and_step(params, step));
}

optim::DeMoConfig demo_config(const RunConfig& cfg) {
  optim::DeMoConfig d;
  d.lr = cfg.training.optimization.lr;
  d.compression_decay = cfg.outer.demo_compression_decay;
  d.compression_topk = cfg.outer.demo_compression_topk;
  d.compression_chunk = cfg.outer.demo_compression_chunk;
  d.weight_decay = cfg.training.optimization.adamw.weight_decay;
  d.value_dtype = parse_wire_dtype(cfg.outer.demo_value_dtype);
  return d;
}

DeMoRound::DeMoRound(const RunConfig& cfg, Contributor& c)
    : c_(c), demo_(c.model()->named_params(), demo_config(cfg)) {}

DeMoStepOutcome DeMoRound::step(comm::Communicator& comm, std::int64_t step, std::uint64_t tag,
                                std::chrono::milliseconds timeout, std::mutex& mu) {
  DeMoStepOutcome out;
  std::vector<std::uint8_t> payload;
  {
    std::lock_guard<std::mutex> lock(mu);
    out.inner.loss = c_.forward_backward(step);
    out.inner.grad_norm = c_.grad_norm();
    out.inner.lr = optim::lr_at(c_.schedule(), step);
    out.inner.tokens = c_.tokens_per_step();
    payload = demo_.prepare(out.inner.lr);
  }
  comm::AllgatherOptions o;
  o.timeout = timeout;
  o.tag = tag;
  std::vector<std::vector<std::uint8_t>> gathered;
  out.gather = comm.all_gather(payload, gathered, o);
  if (!out.gather.ok()) return out;  // prepare() is pending: the caller retries the gather or restores
  std::lock_guard<std::mutex> lock(mu);
  demo_.apply(gathered, out.inner.lr);
  return out;
}

DeMoRoundOutcome DeMoRound::run(comm::Communicator& comm, std::int64_t round, std::int64_t first_step,
                                std::int64_t steps, std::chrono::milliseconds timeout, std::mutex& mu,
                                const std::function<void(std::int64_t, const StepResult&)>& on_step) {
  DeMoRoundOutcome out;
  RoundReport& r = out.report;
  r.round = round;
  r.contributors = comm.world_size();
  // θ and δ at the round's start, to go back to if an attempt fails part-way.
  optim::NamedTensors theta0, state0;
  {
    std::lock_guard<std::mutex> lock(mu);
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : c_.model()->named_params()) theta0.emplace_back(name, p.detach().clone());
    state0 = demo_.state();
  }
  auto restore = [&] {
    std::lock_guard<std::mutex> lock(mu);
    torch::NoGradGuard no_grad;
    const auto params = c_.model()->named_params();
    for (std::size_t i = 0; i < params.size(); ++i) params[i].second.copy_(theta0[i].second);
    demo_.load_state(state0);  // also clears a pending prepare()
  };
  for (std::int64_t i = 0; i < steps; ++i) {
    const std::int64_t s = first_step + i;
    const auto t = Clock::now();
    DeMoStepOutcome st;
    try {
      st = step(comm, s, static_cast<std::uint64_t>(s), timeout, mu);
    } catch (const Error& e) {  // a peer's payload that does not decode (apply() changed nothing)
      restore();
      out.error = str("step ", s + 1, ": ", e.what());
      return out;
    }
    r.bytes_sent += st.gather.bytes_sent;
    r.bytes_received += st.gather.bytes_received;
    r.comm_s += st.gather.seconds;
    out.compute_s += seconds_since(t) - st.gather.seconds;
    if (!st.gather.ok()) {
      restore();
      out.error = str("the DeMo all-gather of step ", s + 1, " failed: ", comm::to_string(st.gather.status), " — ",
                      st.gather.error);
      return out;
    }
    out.steps.push_back(st.inner);
    if (on_step) on_step(i, st.inner);
  }
  r.theta_hash = theta_hash();
  const auto hr =
      vote_on_hash(comm, r.theta_hash, kDeMoHashTagBase + static_cast<std::uint64_t>(round), timeout, out.vote);
  r.bytes_sent += hr.bytes_sent;
  r.bytes_received += hr.bytes_received;
  r.comm_s += hr.seconds;
  if (!hr.ok()) {
    // θ has stepped; only the check is missing (the caller reports it, the broker compares).
    out.error = str("the θ agreement all-gather failed: ", comm::to_string(hr.status), " — ", hr.error);
    return out;
  }
  out.ok = true;
  return out;
}

std::string DeMoRound::theta_hash() const {
  return optim::hash_tensors(snapshot());
}

optim::NamedTensors DeMoRound::snapshot() const {
  return theta_and_step(demo_.params(), demo_.step_count());
}

void DeMoRound::load_snapshot(const optim::NamedTensors& snapshot) {
  const std::map<std::string, torch::Tensor> by_name(snapshot.begin(), snapshot.end());
  const auto& params = demo_.params();
  if (by_name.size() != params.size() + 1)
    throw Error(str("a DeMo snapshot holds ", by_name.size(), " entries, this model needs ", params.size() + 1),
                "the run's model and this member's differ: is this pico build different?");
  for (const auto& [name, p] : params) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) throw Error(str("the DeMo snapshot lacks parameter ", name));
    if (!it->second.sizes().equals(p.sizes()) || it->second.scalar_type() != torch::kFloat32)
      throw Error(str("parameter ", name, " of the DeMo snapshot has the wrong shape or type"));
  }
  const auto step = by_name.find("step");
  if (step == by_name.end() || step->second.numel() != 1 || step->second.scalar_type() != torch::kInt64 ||
      step->second.item<std::int64_t>() < 0)
    throw Error("the DeMo snapshot lacks a valid step count");
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) p.copy_(by_name.at(name));
  optim::NamedTensors st = demo_.state();  // δ stays; the step count is the run's
  for (auto& [name, t] : st)
    if (name == "step") t = step->second.clone();
  demo_.load_state(st);
}

}  // namespace pico::trainer
