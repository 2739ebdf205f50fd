// The DiLoCo outer round (outer_round.h).
#include "outer_round.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>

#include "pico/common/error.h"
#include "pico/common/strings.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::atomic<RoundTamperHook> g_tamper{nullptr};

// Collective tags of round r: four per round, so rounds never share one.
std::uint64_t round_tag(std::int64_t round, std::uint64_t part) {
  return static_cast<std::uint64_t>(round) * 4 + part;
}

void account(const comm::CollectiveResult& res, RoundReport& r) {
  r.bytes_sent += res.bytes_sent;
  r.bytes_received += res.bytes_received;
  r.comm_s += res.seconds;
}

std::string failure(const char* what, const comm::CollectiveResult& res) {
  return str(what, " failed: ", comm::to_string(res.status), " — ", res.error);
}

}  // namespace

comm::CollectiveResult vote_on_hash(comm::Communicator& comm, const std::string& hash, std::uint64_t tag,
                                    std::chrono::milliseconds timeout, HashVote& vote) {
  comm::AllgatherOptions o;
  o.timeout = timeout;
  o.tag = tag;
  std::vector<std::vector<std::uint8_t>> all;
  const auto res = comm.all_gather(std::vector<std::uint8_t>(hash.begin(), hash.end()), all, o);
  if (!res.ok()) return res;
  vote = {};
  std::map<std::string, int> votes;
  for (const auto& h : all) {
    vote.hashes.emplace_back(h.begin(), h.end());
    ++votes[vote.hashes.back()];
  }
  vote.majority = std::max_element(votes.begin(), votes.end(), [](const auto& a, const auto& b) {
                    return a.second < b.second;
                  })->first;
  for (int rank = 0; rank < static_cast<int>(vote.hashes.size()); ++rank)
    if (vote.hashes[static_cast<std::size_t>(rank)] != vote.majority) vote.disagreeing.push_back(rank);
  return res;
}

void set_round_tamper_hook(RoundTamperHook hook) {
  g_tamper.store(hook);
}

OuterRound::OuterRound(const RunConfig& cfg, const optim::NamedTensors& params)
    : outer_(params, {cfg.outer.lr, cfg.outer.momentum, cfg.outer.nesterov}),
      wire_(parse_wire_dtype(cfg.outer.compression)),
      flat_(static_cast<std::size_t>(outer_.numel())) {
  if (cfg.outer.error_feedback)
    feedback_ = std::make_unique<optim::ErrorFeedback>("outer.error_feedback", flat_.size(), wire_);
}

std::pair<double, bool> OuterRound::delta_norm(const optim::NamedTensors& params) {
  outer_.pseudo_gradient(params, flat_.data());
  double n2 = 0;
  bool finite = true;
  for (float v : flat_) {
    finite = finite && std::isfinite(v);
    n2 += static_cast<double>(v) * v;
  }
  return {std::sqrt(n2), finite};
}

RoundOutcome OuterRound::run(comm::Communicator& comm, const RoundPlan& plan, const optim::NamedTensors& params,
                             std::mutex& compute_mu) {
  RoundOutcome out;
  RoundReport& r = out.report;
  r.round = plan.round;
  r.contributors = comm.world_size();
  double compute_s = 0;
  auto t = Clock::now();
  {
    std::lock_guard<std::mutex> lock(compute_mu);
    if (auto hook = g_tamper.load()) hook(comm.rank(), plan.round, outer_);
    outer_.pseudo_gradient(params, flat_.data());  // Δ_i afresh: a retry must not reuse a scaled buffer
  }
  std::vector<float> delta = flat_;  // unweighted; becomes last_delta_ when the round succeeds
  compute_s += seconds_since(t);

  // W = Σ w_j: a tiny fp32 sum, identical on every rank, so each scales its own Δ_i and the
  // reduce yields Σ w_j Δ_j / W directly.
  float weight = static_cast<float>(plan.tokens * plan.weight_multiplier);
  const float mine = weight;
  comm::AllreduceOptions wo;
  wo.timeout = plan.timeout;
  wo.tag = round_tag(plan.round, 0);
  const auto wr = comm.all_reduce(&weight, 1, wo);
  account(wr, r);
  if (!wr.ok()) {
    out.error = failure("the round-weight all-reduce", wr);
    return out;
  }
  if (!(weight > 0)) {
    out.error = "every update of the round was rejected (the weights sum to 0)";
    return out;
  }
  t = Clock::now();
  const float scale = mine / weight;
  for (auto& v : flat_) v *= scale;
  std::unique_ptr<optim::ErrorFeedback> before;  // the residual to restore if the reduce fails
  if (feedback_) {
    before = std::make_unique<optim::ErrorFeedback>(*feedback_);
    feedback_->compensate(flat_.data());
  }
  compute_s += seconds_since(t);

  comm::AllreduceOptions o;
  o.wire = wire_;
  o.timeout = plan.timeout;
  o.tag = round_tag(plan.round, 1);
  const auto dr = comm.all_reduce(flat_.data(), flat_.size(), o);
  account(dr, r);
  if (!dr.ok()) {
    if (before) feedback_ = std::move(before);
    out.error = failure("the pseudo-gradient all-reduce", dr);
    return out;
  }

  t = Clock::now();
  double n2 = 0;
  for (float v : flat_) n2 += static_cast<double>(v) * v;
  r.pseudo_grad_norm = std::sqrt(n2);
  {
    std::lock_guard<std::mutex> lock(compute_mu);
    outer_.step(flat_.data());
    outer_.copy_to(params);
  }
  last_delta_ = std::move(delta);
  r.theta_hash = outer_.state_hash();
  r.tokens = static_cast<std::int64_t>(weight);
  compute_s += seconds_since(t);
  r.outer_step_s = compute_s;
  out.ok = true;

  // Every contributor must now hold the same θ_g: compare the hashes, in the round.
  const auto hr = vote_on_hash(comm, r.theta_hash, round_tag(plan.round, 2), plan.timeout, out.vote);
  account(hr, r);
  if (!hr.ok()) {
    // θ_g has stepped; only the check is missing. The caller treats it like a failed
    // collective after the fact (a joined member reports it; a local run stops).
    out.ok = false;
    out.error = failure("the θ_g agreement all-gather", hr);
    return out;
  }
  return out;
}

optim::NamedTensors OuterRound::state() const {
  optim::NamedTensors s = outer_.state();
  if (feedback_)
    for (auto& e : feedback_->state()) s.push_back(std::move(e));
  return s;
}

void OuterRound::load_state(const optim::NamedTensors& state) {
  // Validate everything before changing anything: the residual into a copy first.
  std::unique_ptr<optim::ErrorFeedback> fb;
  optim::NamedTensors outer_entries;
  for (const auto& e : state)
    if (e.first.rfind("outer.error_feedback.", 0) != 0) outer_entries.push_back(e);
  if (feedback_) {
    fb = std::make_unique<optim::ErrorFeedback>(*feedback_);
    fb->load_state(state);
  } else if (outer_entries.size() != state.size()) {
    throw Error("the checkpoint holds an error-feedback residual but outer.error_feedback is off",
                "resume with the outer.error_feedback the run was started with");
  }
  outer_.load_state(outer_entries);
  if (feedback_) feedback_ = std::move(fb);
}

}  // namespace pico::trainer
