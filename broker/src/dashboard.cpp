// Renderings of a RunView (see pico/broker/dashboard.h): JSON and the Prometheus text format.
#include "pico/broker/dashboard.h"

#include <charconv>
#include <cmath>
#include <sstream>

namespace pico::broker {

const char* to_string(RunPhase p) {
  switch (p) {
    case RunPhase::kWaitingForMembers:
      return "waiting for members";
    case RunPhase::kTraining:
      return "training";
    case RunPhase::kRound:
      return "round in flight";
    case RunPhase::kPaused:
      return "paused";
    case RunPhase::kFinished:
      return "finished";
  }
  return "?";
}

namespace {

nlohmann::json ledger_json(const LedgerRow& r) {
  return {{"public_key", r.public_key},
          {"tokens", r.tokens},
          {"inner_steps", r.inner_steps},
          {"rounds_accepted", r.rounds_accepted},
          {"rounds_rejected", r.rounds_rejected},
          {"compute_seconds", r.compute_seconds},
          {"bytes_sent", r.bytes_sent}};
}

// NaN (unknown) becomes JSON null.
nlohmann::json number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json to_json(const RunView& v) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : v.members)
    members.push_back({{"member_id", m.member_id},
                       {"public_key", m.public_key},
                       {"device", m.device},
                       {"slot", m.slot},
                       {"status", to_string(m.status)},
                       {"joined_round", m.joined_round},
                       {"step", m.step},
                       {"base_round", m.base_round ? nlohmann::json(*m.base_round) : nlohmann::json(nullptr)},
                       {"ready", m.ready},
                       {"tokens_per_s", number(m.tokens_per_s)},
                       {"loss", number(m.loss)},
                       {"heartbeat_age_s", number(m.heartbeat_age_s)},
                       {"link", m.link},
                       {"tokens", m.ledger.tokens},
                       {"rounds_accepted", m.ledger.rounds_accepted},
                       {"rounds_rejected", m.ledger.rounds_rejected},
                       {"bytes_sent", m.ledger.bytes_sent}});
  nlohmann::json ledger = nlohmann::json::array();
  for (const auto& r : v.ledger) ledger.push_back(ledger_json(r));
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& r : v.rounds)
    rounds.push_back({{"round", r.round},
                      {"attempts", r.attempts},
                      {"participants", r.participants},
                      {"rejected", r.rejected},
                      {"tokens", r.tokens},
                      {"run_tokens", r.run_tokens},
                      {"loss", number(r.loss)},
                      {"val_loss", number(r.val_loss)},
                      {"val_reports", r.val_reports},
                      {"compute_s", number(r.compute_s)},
                      {"wait_s", number(r.wait_s)},
                      {"comm_s", number(r.comm_s)},
                      {"round_s", number(r.round_s)},
                      {"committed_at", r.committed_at},
                      {"bytes", r.bytes},
                      {"ddp_bytes", r.ddp_bytes}});
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : v.events)
    events.push_back({{"id", e.id}, {"time", e.time}, {"kind", e.kind}, {"detail", e.detail}});
  return {{"run_id", v.run_id},
          {"status", to_string(v.status)},
          {"phase", to_string(v.phase)},
          {"algorithm", v.algorithm},
          {"private", v.is_private},
          {"paused", v.paused},
          {"round", v.round},
          {"attempt", v.attempt},
          {"min_members", v.min_members},
          {"model_params", v.model_params},
          {"dataset_hash", v.dataset_hash},
          {"created_at", v.created_at},
          {"active_members", v.active_members},
          {"tokens_per_s", number(v.tokens_per_s)},
          {"tokens", v.tokens},
          {"bytes_sent", v.bytes_sent},
          {"rounds_rejected", v.rounds_rejected},
          {"members", members},
          {"ledger", ledger},
          {"rounds", rounds},
          {"events", events}};
}

namespace {

// A label value with \, " and newline escaped, as the text format requires.
std::string label_value(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string sample_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);  // the shortest text that reads back as v
  return std::string(buf, r.ptr);
}

// One metric family: HELP, TYPE, then its samples.
class Family {
 public:
  Family(std::ostringstream& out, const char* name, const char* type, const char* help) : out_(out), name_(name) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  void sample(const std::vector<std::pair<std::string, std::string>>& labels, double value) {
    out_ << name_;
    if (!labels.empty()) {
      out_ << "{";
      for (std::size_t i = 0; i < labels.size(); ++i)
        out_ << (i ? "," : "") << labels[i].first << "=\"" << label_value(labels[i].second) << "\"";
      out_ << "}";
    }
    out_ << " " << sample_value(value) << "\n";
  }

 private:
  std::ostringstream& out_;
  const char* name_;
};

}  // namespace

std::string prometheus_text(const std::vector<RunView>& runs) {
  std::ostringstream out;
  using Labels = std::vector<std::pair<std::string, std::string>>;
  auto last = [](const RunView& v) -> const RoundStats* { return v.rounds.empty() ? nullptr : &v.rounds.back(); };
  auto run_family = [&](const char* name, const char* type, const char* help, auto value_of) {
    Family f(out, name, type, help);
    for (const auto& v : runs) f.sample({{"run", v.run_id}}, value_of(v));
  };
  {
    Family f(out, "pico_run_info", "gauge",
             "A run on this broker; its labels say the algorithm, status and phase (always 1).");
    for (const auto& v : runs)
      f.sample({{"run", v.run_id},
                {"algorithm", v.algorithm},
                {"status", to_string(v.status)},
                {"phase", to_string(v.phase)}},
               1);
  }
  const double nan = std::nan("");
  run_family("pico_run_rounds_total", "counter", "Outer rounds committed.",
             [](const RunView& v) { return double(v.round); });
  run_family("pico_run_tokens_total", "counter", "Tokens credited to the run's members (the ledger).",
             [](const RunView& v) { return double(v.tokens); });
  run_family("pico_run_tokens_per_second", "gauge", "Training throughput: the sum of the active members' tokens/s.",
             [](const RunView& v) { return v.tokens_per_s; });
  run_family("pico_run_members", "gauge", "Active members.", [](const RunView& v) { return double(v.active_members); });
  run_family("pico_run_paused", "gauge", "1 while an operator has paused the run's rounds.",
             [](const RunView& v) { return v.paused ? 1.0 : 0.0; });
  run_family("pico_run_bytes_sent_total", "counter", "Bytes the members sent in the run's collectives (the ledger).",
             [](const RunView& v) { return double(v.bytes_sent); });
  run_family("pico_run_rejections_total", "counter", "Updates rejected by validation (weight 0 in their round).",
             [](const RunView& v) { return double(v.rounds_rejected); });
  run_family("pico_run_loss", "gauge", "Mean training loss of the last round's members at the end of its inner steps.",
             [&](const RunView& v) { return last(v) ? last(v)->loss : nan; });
  run_family("pico_run_val_loss", "gauge", "Mean validation loss on θ_g of the newest round that has one.",
             [&](const RunView& v) {
               for (auto it = v.rounds.rbegin(); it != v.rounds.rend(); ++it)
                 if (std::isfinite(it->val_loss)) return it->val_loss;
               return nan;
             });
  run_family("pico_run_round_bytes", "gauge", "Bytes all members sent in the last round.",
             [&](const RunView& v) { return last(v) ? double(last(v)->bytes) : nan; });
  run_family("pico_run_round_bytes_ratio_to_ddp", "gauge",
             "The last round's bytes over what ddp (an fp32 gradient all-reduce every step) would have sent for them.",
             [&](const RunView& v) {
               const RoundStats* r = last(v);
               return r && r->ddp_bytes > 0 ? double(r->bytes) / double(r->ddp_bytes) : nan;
             });
  {
    Family f(out, "pico_run_round_seconds", "gauge",
             "The last round's time: wall time between commits (part=total) and the members' mean compute, "
             "communication and waiting.");
    for (const auto& v : runs) {
      const RoundStats* r = last(v);
      f.sample({{"run", v.run_id}, {"part", "total"}}, r ? r->round_s : nan);
      f.sample({{"run", v.run_id}, {"part", "compute"}}, r ? r->compute_s : nan);
      f.sample({{"run", v.run_id}, {"part", "comm"}}, r ? r->comm_s : nan);
      f.sample({{"run", v.run_id}, {"part", "wait"}}, r ? r->wait_s : nan);
    }
  }
  // Per active member.
  auto member_family = [&](const char* name, const char* type, const char* help, auto value_of) {
    Family f(out, name, type, help);
    for (const auto& v : runs)
      for (const auto& m : v.members)
        if (m.status == MemberStatus::kActive)
          f.sample(Labels{{"run", v.run_id}, {"member", std::to_string(m.member_id)}, {"device", m.device}},
                   value_of(m));
  };
  member_family("pico_member_tokens_total", "counter", "Tokens credited to the member's key in the run.",
                [](const MemberView& m) { return double(m.ledger.tokens); });
  member_family("pico_member_tokens_per_second", "gauge", "The member's training throughput (its heartbeat).",
                [](const MemberView& m) { return m.tokens_per_s; });
  member_family("pico_member_loss", "gauge", "The member's last training loss.",
                [](const MemberView& m) { return m.loss; });
  member_family("pico_member_step", "gauge", "The member's inner steps so far.",
                [](const MemberView& m) { return double(m.step); });
  member_family("pico_member_bytes_sent_total", "counter", "Bytes the member's key sent in the run's collectives.",
                [](const MemberView& m) { return double(m.ledger.bytes_sent); });
  member_family("pico_member_rounds_total", "counter", "Rounds the member's key was credited for.",
                [](const MemberView& m) { return double(m.ledger.rounds_accepted); });
  member_family("pico_member_rejections_total", "counter", "Rounds whose update from the member's key was rejected.",
                [](const MemberView& m) { return double(m.ledger.rounds_rejected); });
  member_family("pico_member_heartbeat_age_seconds", "gauge", "Seconds since the broker last heard from the member.",
                [](const MemberView& m) { return m.heartbeat_age_s; });
  return out.str();
}

}  // namespace pico::broker
