#include "pico/broker/core.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"

namespace pico::broker {

struct LiveMember {
  MemberRecord rec;
  std::string peer;  // connection id of its last message ("" after a broker restart)
  double last_seen = 0;
  double last_persisted = 0;
  // Where its model stands. Unknown until it reports after a broker restart (`reported`);
  // then the round of the θ_g it is based on, or nullopt while it waits for a snapshot.
  bool reported = false;
  std::optional<std::int64_t> base_round;
  bool awaiting_snapshot = false;
  // The round of the last snapshot it downloaded in full. An awaiting member is in sync
  // again only once it has fetched the run's θ_g: a heartbeat that says "base = the run's
  // round" may have been sent before it was told to resync (a member whose θ_g disagreed
  // reports the round, then learns it is in the minority).
  std::optional<std::int64_t> fetched_round;
  double tokens_per_s = 0;
  std::int64_t step = 0;
  double loss = std::nan("");
  std::int64_t val_round = 0;   // the newest round whose validation loss it reported
  int unreachable_strikes = 0;  // failed attempts in which others could not connect to it
  // How peers reach it: "checking" until the broker's dial-back answers, "direct", or
  // "unreachable: WHY".
  std::string link = "checking";
  bool relayed = false;  // its endpoint is a port of the broker's relay
};

// The participants of an attempt that the others (those that reported so far) could not
// connect to (RoundResult::unreachable). A member that named two or more members, each named
// by no one else, is the one cut off (its own connections fail, not theirs): it is left out
// instead.
std::set<std::int64_t> unreachable_members(const std::map<std::int64_t, ResultRecord>& results,
                                           const std::vector<std::int64_t>& participants) {
  std::map<std::int64_t, std::set<std::int64_t>> named_by, names;
  for (const auto& [id, r] : results)
    for (auto u : r.unreachable)
      if (u != id && std::find(participants.begin(), participants.end(), u) != participants.end())
        named_by[u].insert(id), names[id].insert(u);
  std::set<std::int64_t> cut_off, out;
  for (const auto& [id, named] : names) {
    const bool alone = std::all_of(named.begin(), named.end(), [&](std::int64_t u) { return named_by[u].size() == 1; });
    if (named.size() >= 2 && alone) cut_off.insert(id);
  }
  for (const auto& [u, by] : named_by)
    if (!std::includes(cut_off.begin(), cut_off.end(), by.begin(), by.end())) out.insert(u);
  out.insert(cut_off.begin(), cut_off.end());
  return out;
}

struct BrokerCore::RunState {
  RunRecord rec;
  std::map<std::int64_t, LiveMember> members;  // active members by id
  // The round being assembled or run is rec.round + 1.
  bool running = false;
  std::int64_t attempt = 0;
  std::map<std::int64_t, ReadyRecord> ready;
  std::vector<std::int64_t> participants;  // of the running attempt, in ring order
  std::set<std::int64_t> rejected;         // participants whose update was rejected (weight 0)
  std::map<std::int64_t, ResultRecord> results;
  double deadline = 0;
  // Snapshot upload in progress.
  std::int64_t upload_round = -1;
  std::int64_t uploader = -1;
  std::int64_t upload_next = 0;
  std::string upload_tmp;
  // For the round's stats (RoundStats), on the broker's clock; not persisted (a round
  // resumed after a restart has NaN times).
  std::map<std::int64_t, double> ready_at, ready_loss, result_at;
  double attempt_started_at = std::nan("");
  double last_commit_at = std::nan("");
  std::int64_t run_tokens = 0;  // credited so far
};

namespace {

Message reply(const Incoming& in, MessageType type, nlohmann::json body, std::string blob = "") {
  Message m;
  m.type = type;
  m.request_id = in.message.request_id;
  m.body = std::move(body);
  m.blob = std::move(blob);
  return m;
}

template <typename T>
Message reply(const Incoming& in, const T& msg, std::string blob = "") {
  Message m = message(msg, std::move(blob));
  m.request_id = in.message.request_id;
  return m;
}

Outgoing error_to(const Incoming& in, const std::string& reason, const std::string& hint) {
  return {in.peer, reply(in, ErrorReply{reason, hint})};
}

// An ack with nothing to say.
Message ack(const Incoming& in) {
  return reply(in, MessageType::kAck, nlohmann::json::object());
}

// The command that makes the run's dataset, from the JSON the store keeps.
std::string prepare_command_of(const RunRecord& r) {
  const auto info = nlohmann::json::parse(r.dataset_info, nullptr, false);
  if (info.is_object() && info.contains("prepare") && info["prepare"].is_string()) return info["prepare"];
  return "";
}

std::int64_t snapshot_chunks(std::int64_t bytes, std::size_t chunk) {
  return std::max<std::int64_t>(1, (bytes + static_cast<std::int64_t>(chunk) - 1) / static_cast<std::int64_t>(chunk));
}

}  // namespace

BrokerCore::BrokerCore(Store& store, BrokerOptions options, double now) : store_(store), opt_(std::move(options)) {
  if (opt_.snapshot_dir.empty())
    opt_.snapshot_dir = std::filesystem::path(store.path()).parent_path().string() + "/snapshots";
  if (opt_.snapshot_dir.empty() || opt_.snapshot_dir == "/snapshots") opt_.snapshot_dir = "snapshots";
  make_dirs(opt_.snapshot_dir);
  // A restart: every active run, its members (given a fresh grace period) and any round
  // attempt that was in flight, with the reports already acknowledged.
  for (auto& rec : store_.runs()) {
    if (rec.status != RunStatus::kActive) continue;
    auto run = std::make_unique<RunState>();
    run->rec = rec;
    for (auto& m : store_.members(rec.run_id, /*active_only=*/true)) {
      LiveMember lm;
      lm.rec = m;
      lm.last_seen = now;
      lm.last_persisted = now;
      lm.val_round = rec.round;  // validation losses up to here are in the store already
      run->members.emplace(m.member_id, std::move(lm));
    }
    for (const auto& row : store_.ledger(rec.run_id)) run->run_tokens += row.tokens;
    if (auto last = store_.round(rec.run_id, rec.round); last && last->status == RoundStatus::kDone)
      run->last_commit_at = last->finished_at;
    const std::int64_t next = rec.round + 1;
    for (auto& r : store_.ready_reports(rec.run_id, next)) run->ready[r.member_id] = r;
    log_info("broker: run ", rec.run_id, " is at round ", rec.round, " with ", run->members.size(), " active members (",
             run->ready.size(), " ready for round ", next, ")");
    if (auto open = store_.round(rec.run_id, next); open && open->status == RoundStatus::kOpen) {
      run->running = true;
      run->attempt = open->attempt;
      run->participants = open->participants;
      run->deadline = now + opt_.result_timeout_s;
      for (auto& r : store_.results(rec.run_id, next, open->attempt)) run->results[r.member_id] = r;
      log_info("broker: run ", rec.run_id, " resumes round ", next, " attempt ", open->attempt, " with ",
               run->results.size(), "/", run->participants.size(), " results in");
    }
    runs_.emplace(rec.run_id, std::move(run));
  }
}

BrokerCore::~BrokerCore() = default;

std::vector<Outgoing> BrokerCore::handle(const Incoming& in, double now) {
  try {
    return dispatch(in, now);
  } catch (const ProtocolError& e) {
    log_warn("broker: rejected ", to_string(in.message.type), " from ", in.public_key.substr(0, 8), "…: ", e.what());
    return {error_to(in, e.what(), "this looks like a bug or a version mismatch between pico builds")};
  } catch (const Error& e) {
    log_warn("broker: refused ", to_string(in.message.type), " from ", in.public_key.substr(0, 8), "…: ", e.what());
    return {error_to(in, e.what(), e.hint())};
  }
}

std::vector<Outgoing> BrokerCore::dispatch(const Incoming& in, double now) {
  switch (in.message.type) {
    case MessageType::kCreateRun:
      return on_create_run(in, now);
    case MessageType::kJoin:
      return on_join(in, now);
    case MessageType::kHeartbeat:
      return on_heartbeat(in, now);
    case MessageType::kReady:
      return on_ready(in, now);
    case MessageType::kRoundResult:
      return on_round_result(in, now);
    case MessageType::kSnapshotPut:
      return on_snapshot_put(in, now);
    case MessageType::kSnapshotGet:
      return on_snapshot_get(in, now);
    case MessageType::kLeave:
      return on_leave(in, now);
    case MessageType::kRunFinished:
      return on_run_finished(in, now);
    case MessageType::kLedgerQuery:
      return on_ledger(in, now);
    case MessageType::kStatusQuery: {
      const auto q = parse<StatusQuery>(in.message);
      if (!q.run_id) return {{in.peer, reply(in, MessageType::kAck, status(now))}};
      // One run as the dashboard shows it (`pico top CODE`), with only the new rounds and events.
      ViewQuery vq;
      vq.rounds_after = q.rounds_after;
      vq.events_after = q.events_after;
      const auto view = run_view(*q.run_id, vq, now);
      if (!view) throw Error(str("no run '", *q.run_id, "' on this broker"), "check the run id in the join code");
      return {{in.peer, reply(in, MessageType::kAck, to_json(*view))}};
    }
    case MessageType::kRunInfo: {
      const RunState& run = run_of(parse<RunInfo>(in.message).run_id);
      RunInfoReply r;
      r.run_id = run.rec.run_id;
      r.config_yaml = run.rec.config_yaml;
      r.dataset_hash = run.rec.dataset_hash;
      r.num_shards = run.rec.num_shards;
      r.round = run.rec.round;
      r.min_members = run.rec.min_members;
      r.is_private = run.rec.is_private;
      r.prepare_command = prepare_command_of(run.rec);
      r.seen_from = in.peer_address;
      r.relay = opt_.relay_endpoint;
      return {{in.peer, reply(in, r)}};
    }
    default:
      throw ProtocolError(str("a broker does not accept ", to_string(in.message.type), " messages"));
  }
}

BrokerCore::RunState& BrokerCore::run_of(const std::string& id) {
  auto it = runs_.find(id);
  if (it == runs_.end())
    throw Error(str("no active run '", id, "' on this broker"), "check the join code, or whether the run has finished");
  return *it->second;
}

LiveMember& BrokerCore::member_of(RunState& run, std::int64_t id, const Incoming& in) {
  auto it = run.members.find(id);
  if (it == run.members.end())
    throw Error(str("member ", id, " is not an active member of run ", run.rec.run_id),
                "it was evicted or left; join again with `pico train --join CODE`");
  if (it->second.rec.public_key != in.public_key) throw ProtocolError(str("member ", id, " belongs to another key"));
  it->second.peer = in.peer;
  it->second.last_seen = std::max(it->second.last_seen, 0.0);
  return it->second;
}

std::vector<Outgoing> BrokerCore::on_create_run(const Incoming& in, double now) {
  const auto m = parse<CreateRun>(in.message);
  if (!is_valid_run_id(m.run_id))
    throw Error(str("run id '", m.run_id, "' is not [A-Za-z0-9_-]{1,64}"), "pick another run name");
  RunRecord r;
  r.run_id = m.run_id;
  r.config_yaml = m.config_yaml;
  r.dataset_hash = m.dataset_hash;
  r.num_shards = m.num_shards;
  r.is_private = m.is_private;
  r.token_sha256 = m.token_sha256;
  r.theta0_hash = m.theta0_hash;
  r.dataset_info = nlohmann::json{{"prepare", m.prepare_command}}.dump();
  r.created_at = now;
  r.min_members = m.min_members;
  r.algorithm = m.algorithm;
  r.model_params = m.model_params;
  if (auto existing = store_.run(r.run_id)) {
    // The creator restarting (or resuming) registers the same run again: fine if it is the same.
    if (existing->config_yaml != r.config_yaml || existing->dataset_hash != r.dataset_hash)
      throw Error(str("run '", r.run_id, "' already exists on this broker with a different config or dataset"),
                  "choose another checkpointing.run_name, or resume the run with its original config");
    return {{in.peer, reply(in, CreateRunReply{r.run_id, existing->round, true, existing->status, in.peer_address,
                                               opt_.relay_endpoint})}};
  }
  store_.create_run(r);
  for (const auto& k : m.allow) store_.allow_key(r.run_id, k);
  store_.log_event(r.run_id, "run_created",
                   str(r.is_private ? "private" : "public", " run, dataset ", r.dataset_hash.substr(0, 12)), now);
  auto run = std::make_unique<RunState>();
  run->rec = r;
  runs_.emplace(r.run_id, std::move(run));
  log_info("broker: run ", r.run_id, " created (", r.is_private ? "private" : "public", ")");
  return {{in.peer,
           reply(in, CreateRunReply{r.run_id, 0, false, RunStatus::kActive, in.peer_address, opt_.relay_endpoint})}};
}

std::vector<Outgoing> BrokerCore::on_join(const Incoming& in, double now) {
  const auto m = parse<Join>(in.message);
  RunState& run = run_of(m.run_id);
  if (m.dataset_hash != run.rec.dataset_hash) {
    const std::string prepare = prepare_command_of(run.rec);
    throw Error(str("your dataset (", m.dataset_hash.substr(0, 12), "…) is not the run's (",
                    run.rec.dataset_hash.substr(0, 12), "…)"),
                (prepare.empty() ? std::string("prepare the run's dataset") : "prepare it with: " + prepare) +
                    ", and pass its directory with --set data.path=DIR");
  }
  if (run.rec.is_private) {
    const std::string& token = m.token;
    const bool token_ok = !run.rec.token_sha256.empty() && !token.empty() && sha256_hex(token) == run.rec.token_sha256;
    if (!token_ok && !store_.is_allowed(run.rec.run_id, in.public_key))
      throw Error(str("run ", run.rec.run_id, " is private and your key ", in.public_key.substr(0, 8),
                      "… is not on its allow-list", token.empty() ? "" : ", and the join token is wrong"),
                  "ask the run's owner for a join code with a token, or to allow-list your public key");
  }
  if (store_.is_banned(run.rec.run_id, in.public_key))
    throw Error(
        str("the operator of run ", run.rec.run_id, " removed your key ", in.public_key.substr(0, 8), "… from it"),
        "ask the run's operator; another run (or another broker) may take you");
  // A key that is still an active member rejoins (its old process is gone): retire the old one.
  std::vector<Outgoing> out;
  for (auto it = run.members.begin(); it != run.members.end();) {
    if (it->second.rec.public_key == in.public_key) {
      const auto old = it->first;
      ++it;
      evict(run, old, "rejoined under a new member id", now, out, /*replaced=*/true);
    } else {
      ++it;
    }
  }
  std::set<std::int64_t> used;
  for (auto& [id, lm] : run.members) used.insert(lm.rec.shard);
  std::int64_t slot = 0;
  while (used.count(slot)) ++slot;
  MemberRecord rec;
  rec.run_id = run.rec.run_id;
  rec.public_key = in.public_key;
  rec.endpoint = m.endpoint;
  rec.device = m.device;
  rec.shard = slot;
  rec.joined_at = now;
  rec.last_heartbeat = now;
  rec.joined_round = run.rec.round;
  rec.member_id = store_.add_member(rec);
  LiveMember lm;
  lm.rec = rec;
  lm.peer = in.peer;
  lm.last_seen = now;
  lm.last_persisted = now;
  lm.relayed = m.relayed;
  // Before round 1, θ_g is the seeded initialization every member builds itself.
  lm.reported = true;
  if (run.rec.round == 0) lm.base_round = 0;
  lm.awaiting_snapshot = run.rec.round > 0;
  lm.val_round = run.rec.round;
  run.members.emplace(rec.member_id, lm);
  dial_backs_.push_back({run.rec.run_id, rec.member_id, rec.endpoint});
  store_.log_event(run.rec.run_id, "join",
                   str("member ", rec.member_id, " (", in.public_key.substr(0, 8), "…, ", rec.device, ") slot ", slot),
                   now);
  log_info("broker: member ", rec.member_id, " joined run ", run.rec.run_id, " (slot ", slot, ", ", rec.device, ")");
  out.push_back({in.peer, reply(in, JoinReply{rec.member_id, slot, run.rec.num_shards, run.rec.round,
                                              run.rec.theta0_hash, run.rec.round > 0})});
  if (run.rec.round > 0) {
    if (run.rec.snapshot_round == run.rec.round)
      announce_snapshot(run, out);
    else
      request_snapshot_if_needed(run, out);
  }
  return out;
}

std::vector<Outgoing> BrokerCore::on_heartbeat(const Incoming& in, double now) {
  const auto m = parse<Heartbeat>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember* lm = nullptr;
  try {
    lm = &member_of(run, m.member_id, in);
  } catch (const Error& e) {
    return {{in.peer, message(Evicted{run.rec.run_id, e.what(), false, false})}};
  }
  lm->last_seen = now;
  if (run.rec.status == RunStatus::kFinished)  // a member still catching up when the run ended
    return {{in.peer, message(RunFinished{run.rec.run_id, std::nullopt, run.rec.round, {}})}};
  // Heartbeats come from a background thread: one sent just before the member's round
  // result may arrive after the broker committed that round. A member's base only moves
  // forward (or to "waiting for a snapshot"), so an older base is such a stale report.
  if (!m.base_round || !lm->reported || !lm->base_round || *m.base_round > *lm->base_round)
    lm->base_round = m.base_round;
  lm->reported = true;
  lm->step = m.step;
  lm->tokens_per_s = m.tokens_per_s;
  note_progress(run, *lm, m.progress);
  if (now - lm->last_persisted >= opt_.heartbeat_persist_s) {
    store_.heartbeat(run.rec.run_id, lm->rec.member_id, now, lm->tokens_per_s);
    if (std::isfinite(lm->loss)) store_.record_loss(run.rec.run_id, {lm->rec.member_id, lm->step, lm->loss, now});
    lm->last_persisted = now;
  }
  std::vector<Outgoing> out;
  if (lm->awaiting_snapshot && lm->base_round == run.rec.round && lm->fetched_round == run.rec.round)
    lm->awaiting_snapshot = false;  // synced: it loaded the run's θ_g
  maybe_start_round(run, now, out);
  return out;
}

std::vector<Outgoing> BrokerCore::on_ready(const Incoming& in, double now) {
  const auto m = parse<Ready>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember& lm = member_of(run, m.member_id, in);
  lm.last_seen = now;
  note_progress(run, lm, m.progress);
  lm.reported = true;
  lm.base_round = m.base_round;
  std::vector<Outgoing> out;
  if (run.running && m.base_round == run.rec.round + 1) {
    // The member finished the round in flight and moved on, but its report of it was lost
    // (a broker restart): the ready carries it. If the round still cannot be committed,
    // the member asks again shortly — its θ_g is the round's, it needs no snapshot.
    if (m.last_result) record_result(run, lm, *m.last_result, now);
    maybe_finish_round(run, now, out);
    if (run.running && m.base_round == run.rec.round + 1) {
      out.push_back({in.peer, reply(in, ReadyReply{run.rec.round + 1, 1.0})});
      return out;
    }
  }
  const std::int64_t next = run.rec.round + 1;
  if (m.base_round != run.rec.round || m.round != next ||
      (run.running &&
       std::find(run.participants.begin(), run.participants.end(), lm.rec.member_id) == run.participants.end())) {
    // Behind (it missed a round) or too late for the attempt in flight: its Δ is stale.
    if (!lm.awaiting_snapshot)
      store_.log_event(run.rec.run_id, "resync",
                       str("member ", lm.rec.member_id, ": its update is for round ", m.round, " from θ_g of round ",
                           m.base_round, ", the run is at round ", run.rec.round),
                       now);
    lm.awaiting_snapshot = true;
    lm.base_round.reset();
    lm.fetched_round.reset();
    out.push_back({in.peer, reply(in, Resync{run.rec.run_id, run.rec.round,
                                             str("your update is for round ", m.round, " from θ_g of round ",
                                                 m.base_round, "; the run is at round ", run.rec.round,
                                                 run.running ? " with a round in flight" : "")})});
    if (run.rec.snapshot_round == run.rec.round)
      announce_snapshot(run, out);
    else
      request_snapshot_if_needed(run, out);
    return out;
  }
  ReadyRecord r;
  r.member_id = lm.rec.member_id;
  r.tokens = m.tokens;
  r.inner_steps = m.inner_steps;
  r.compute_seconds = m.compute_seconds;
  r.delta_norm = m.delta_norm;
  r.finite = m.finite;
  store_.save_ready(run.rec.run_id, next, r);
  run.ready[r.member_id] = r;
  run.ready_at[r.member_id] = now;
  run.ready_loss[r.member_id] = lm.loss;
  out.push_back({in.peer, reply(in, ReadyReply{next, std::nullopt})});
  maybe_start_round(run, now, out);
  return out;
}

void BrokerCore::maybe_start_round(RunState& run, double now, std::vector<Outgoing>& out) {
  if (run.running || run.rec.status != RunStatus::kActive || run.rec.paused) return;
  std::vector<std::int64_t> eligible;
  for (auto& [id, lm] : run.members) {
    // After a restart, wait until every member has said where it is (or has been evicted
    // for silence): a round started without a member that is in sync would leave it behind.
    if (!lm.reported) return;
    if (lm.base_round == run.rec.round && !lm.awaiting_snapshot) eligible.push_back(id);
  }
  if (eligible.empty() || static_cast<std::int64_t>(eligible.size()) < run.rec.min_members) return;
  // The ring in slot order: a member's rank is then its data slot, so a joined run sums the
  // members' updates in the order a local run of as many contributors does (bit for bit).
  std::sort(eligible.begin(), eligible.end(),
            [&](std::int64_t a, std::int64_t b) { return run.members.at(a).rec.shard < run.members.at(b).rec.shard; });
  for (auto id : eligible) {
    if (!run.ready.count(id)) return;             // someone is still training
    if (run.members.at(id).peer.empty()) return;  // not heard from since a restart: cannot reach it yet
  }
  start_attempt(run, eligible, now, out);
}

void BrokerCore::start_attempt(RunState& run, const std::vector<std::int64_t>& members, double now,
                               std::vector<Outgoing>& out) {
  const std::int64_t round = run.rec.round + 1;
  // Validate the updates before they are summed: non-finite always; in public runs also a
  // norm far above the round's median. A rejected member still takes part, with weight 0.
  run.rejected.clear();
  std::vector<double> norms;
  for (auto id : members)
    if (run.ready[id].finite) norms.push_back(run.ready[id].delta_norm);
  std::sort(norms.begin(), norms.end());
  const double median = norms.empty() ? 0.0 : norms[norms.size() / 2];
  for (auto id : members) {
    const auto& r = run.ready[id];
    std::string why;
    if (!r.finite)
      why = "its pseudo-gradient is not finite";
    else if (!run.rec.is_private && members.size() >= 3 && median > 0 &&
             r.delta_norm > opt_.norm_rejection_factor * median)
      why = str("‖Δ‖ = ", r.delta_norm, " exceeds ", opt_.norm_rejection_factor, " × the round's median ", median);
    if (!why.empty()) {
      run.rejected.insert(id);
      store_.log_event(run.rec.run_id, "update_rejected", str("round ", round, " member ", id, ": ", why), now);
      log_warn("broker: round ", round, ": rejected the update of member ", id, ": ", why);
    }
  }
  if (run.rejected.size() == members.size()) {
    // Nothing to sum: everyone goes back to the current θ_g and tries again.
    for (auto id : members) {
      auto& lm = run.members.at(id);
      run.ready.erase(id);
      resync(run, lm, "every update of the round was rejected", now, out);
      store_.credit(run.rec.run_id, {lm.rec.public_key, 0, 0, 0, 1, 0.0, 0});
    }
    if (run.rec.snapshot_round == run.rec.round)
      announce_snapshot(run, out);
    else
      request_snapshot_if_needed(run, out);
    return;
  }
  run.running = true;
  ++run.attempt;
  run.participants = members;
  run.results.clear();
  run.result_at.clear();
  run.attempt_started_at = now;
  run.deadline = now + opt_.result_timeout_s;
  RoundRecord rr;
  rr.run_id = run.rec.run_id;
  rr.round = round;
  rr.attempt = run.attempt;
  rr.status = RoundStatus::kOpen;
  rr.participants = members;
  rr.started_at = now;
  store_.begin_round(rr);
  RoundStart start;
  start.run_id = run.rec.run_id;
  start.round = round;
  start.attempt = run.attempt;
  for (std::size_t rank = 0; rank < members.size(); ++rank) {
    const auto& lm = run.members.at(members[rank]);
    start.members.push_back({lm.rec.member_id, static_cast<int>(rank), lm.rec.endpoint, lm.rec.public_key,
                             run.rejected.count(members[rank]) ? 0.0 : 1.0});
  }
  const Message msg = message(start);
  for (auto id : members) out.push_back({run.members.at(id).peer, msg});
  log_info("broker: run ", run.rec.run_id, " round ", round, " attempt ", run.attempt, " starts with ", members.size(),
           " members");
}

std::vector<Outgoing> BrokerCore::on_round_result(const Incoming& in, double now) {
  const auto m = parse<RoundResult>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember& lm = member_of(run, m.member_id, in);
  lm.last_seen = now;
  std::vector<Outgoing> out{{in.peer, reply(in, MessageType::kAck, {{"round", m.round}})}};
  if (record_result(run, lm, m, now)) maybe_finish_round(run, now, out);
  return out;
}

bool BrokerCore::record_result(RunState& run, LiveMember& lm, const RoundResult& report, double now) {
  const bool current =
      run.running && report.round == run.rec.round + 1 && report.attempt == run.attempt &&
      std::find(run.participants.begin(), run.participants.end(), lm.rec.member_id) != run.participants.end();
  if (!current || run.results.count(lm.rec.member_id)) return false;  // stale, or already in (a re-send)
  ResultRecord r;
  r.member_id = lm.rec.member_id;
  r.ok = report.ok;
  r.theta_hash = report.ok ? report.theta_hash : "";
  r.bytes_sent = report.bytes_sent;
  r.error = report.error;
  r.unreachable = report.unreachable;
  store_.save_result(run.rec.run_id, report.round, report.attempt, r);
  run.results[r.member_id] = r;
  run.result_at[r.member_id] = now;
  return true;
}

void BrokerCore::maybe_finish_round(RunState& run, double now, std::vector<Outgoing>& out) {
  if (!run.running) return;
  const bool past_deadline = now >= run.deadline;
  // A participant the others could not connect to is not waited for: nobody can tell it the
  // group broke, so it sits in its collective until its own timeout.
  const std::set<std::int64_t> cut_off = unreachable_members(run.results, run.participants);
  for (auto id : run.participants)
    if (!run.results.count(id) && run.members.count(id) && !cut_off.count(id) && !past_deadline)
      return;  // still waiting
  if (past_deadline) {
    std::vector<std::int64_t> silent;
    for (auto id : run.participants)
      if (!run.results.count(id) && run.members.count(id) && !cut_off.count(id)) silent.push_back(id);
    run.running = false;  // evict() must not recurse into this round
    for (auto id : silent) evict(run, id, "no result for the round before the deadline", now, out);
    run.running = true;
  }
  const std::int64_t round = run.rec.round + 1;
  std::map<std::string, int> votes;
  for (auto& [id, r] : run.results)
    if (r.ok) ++votes[r.theta_hash];
  if (!votes.empty()) {
    std::string hash;
    int best = -1;
    for (auto& [h, n] : votes)
      if (n > best) best = n, hash = h;
    std::int64_t bytes = 0;
    for (auto& [id, r] : run.results) bytes += r.bytes_sent;
    std::vector<LedgerRow> credits;
    for (auto id : run.participants) {
      const auto rd = run.ready.find(id);
      const std::string key =
          run.members.count(id) ? run.members.at(id).rec.public_key : store_.member(run.rec.run_id, id)->public_key;
      if (rd ==
          run.ready.end()) {  // cannot happen (evict() keeps participants' reports); credit nothing rather than guess
        log_warn("broker: round ", round, ": no ready report of participant ", id, "; it is credited nothing");
        credits.push_back({key, 0, 0, 0, 0, 0.0, run.results.count(id) ? run.results.at(id).bytes_sent : 0});
        continue;
      }
      const bool rejected = run.rejected.count(id) > 0;
      LedgerRow row{key,
                    rejected ? 0 : rd->second.tokens,
                    rejected ? 0 : rd->second.inner_steps,
                    rejected ? 0 : 1,
                    rejected ? 1 : 0,
                    rd->second.compute_seconds,
                    run.results.count(id) ? run.results.at(id).bytes_sent : 0};
      credits.push_back(row);
    }
    const RoundStats stats = round_stats_of(run, round, credits, bytes, now);
    store_.commit_round(run.rec.run_id, round, bytes, hash, now, credits, &stats);
    run.run_tokens = stats.run_tokens;
    run.last_commit_at = now;
    store_.log_event(run.rec.run_id, "round_done",
                     str("round ", round, " attempt ", run.attempt, ": ", run.participants.size(), " members, θ_g ",
                         hash.substr(0, 12)),
                     now);
    run.rec.round = round;
    run.running = false;
    run.attempt = 0;
    run.ready.clear();
    run.ready_at.clear();
    run.ready_loss.clear();
    run.result_at.clear();
    for (auto& [id, lm] : run.members) {
      const auto r = run.results.find(id);
      if (r != run.results.end() && r->second.ok && r->second.theta_hash == hash) {
        lm.reported = true;
        lm.base_round = round;
        continue;
      }
      // Failed, disagreed, or not in the attempt: its θ_g is not the run's.
      if (r != run.results.end() && r->second.ok)
        store_.log_event(run.rec.run_id, "hash_mismatch",
                         str("member ", id, " reported θ_g ", r->second.theta_hash.substr(0, 12),
                             ", the round agreed on ", hash.substr(0, 12)),
                         now);
      resync(run, lm,
             r == run.results.end() ? "not in the attempt that committed the round"
             : r->second.ok         ? "its θ_g is not the round's"
                                    : "its collective failed",
             now, out);
    }
    log_info("broker: run ", run.rec.run_id, " round ", round, " done (θ_g ", hash.substr(0, 12), ")");
    request_snapshot_if_needed(run, out);
    return;
  }
  // Nobody completed: retry at once with the members still here, without those the others
  // could not connect to (they wait for the next round); one that is unreachable in
  // opt_.unreachable_evict_after attempts is evicted and told why.
  std::set<std::int64_t> unreachable = cut_off;
  std::vector<std::int64_t> survivors;
  for (auto id : run.participants)
    if (run.members.count(id) && run.results.count(id) && !unreachable.count(id)) survivors.push_back(id);
  if (survivors.empty()) {  // everyone named everyone: no way to tell who is at fault, try all again
    unreachable.clear();
    for (auto id : run.participants)
      if (run.members.count(id) && run.results.count(id)) survivors.push_back(id);
  }
  std::string left_out;
  for (auto id : unreachable) left_out += str(left_out.empty() ? "" : ", ", id);
  store_.finish_round(run.rec.run_id, round, RoundStatus::kFailed, 0, "", now);
  store_.log_event(run.rec.run_id, "round_failed",
                   str("round ", round, " attempt ", run.attempt, ": retrying with ", survivors.size(), " members",
                       left_out.empty() ? "" : str(", without member(s) ", left_out, " (others could not connect)")),
                   now);
  log_warn("broker: run ", run.rec.run_id, " round ", round, " attempt ", run.attempt, " failed after ",
           std::round((now - run.attempt_started_at) * 10) / 10, " s; retrying with ", survivors.size(), " members",
           left_out.empty() ? "" : str(", without member(s) ", left_out, " (the others could not connect to them)"));
  run.running = false;
  std::vector<std::int64_t> strike_out;
  for (auto id : unreachable) {
    auto it = run.members.find(id);
    if (it == run.members.end()) continue;
    run.ready.erase(id);  // not in the retry: its update waits for a round it can take part in
    if (++it->second.unreachable_strikes >= opt_.unreachable_evict_after) strike_out.push_back(id);
  }
  if (!survivors.empty()) start_attempt(run, survivors, now, out);
  for (auto id : strike_out) {
    const auto& lm = run.members.at(id);
    evict(run, id,
          str("the other members could not connect to it at ", lm.rec.endpoint, " in ", lm.unreachable_strikes,
              " attempts: it is behind a NAT or firewall, or advertises an address others cannot reach "
              "(listen on a reachable address with --listen/--advertise, or forward its port)"),
          now, out, /*replaced=*/false, /*unreachable=*/true);
  }
}

void BrokerCore::resync(RunState& run, LiveMember& lm, const std::string& why, double now, std::vector<Outgoing>& out) {
  if (!lm.awaiting_snapshot)  // (a joiner still fetching θ_g is told again, but that is no news)
    store_.log_event(run.rec.run_id, "resync", str("member ", lm.rec.member_id, " must fetch θ_g: ", why), now);
  lm.base_round.reset();
  lm.fetched_round.reset();
  lm.awaiting_snapshot = true;
  out.push_back({lm.peer, message(Resync{run.rec.run_id, run.rec.round, why})});
}

void BrokerCore::note_progress(RunState& run, LiveMember& lm, const ProgressReport& p) {
  if (p.loss) lm.loss = *p.loss;
  // Each member's validation loss of a round counts once, and only for a committed round.
  if (p.val_loss && *p.val_round > lm.val_round && *p.val_round <= run.rec.round) {
    lm.val_round = *p.val_round;
    store_.add_val_loss(run.rec.run_id, *p.val_round, *p.val_loss);
  }
}

RoundStats BrokerCore::round_stats_of(const RunState& run, std::int64_t round, const std::vector<LedgerRow>& credits,
                                      std::int64_t bytes, double now) const {
  RoundStats st;
  st.round = round;
  st.attempts = run.attempt;
  st.participants = static_cast<std::int64_t>(run.participants.size());
  st.rejected = static_cast<std::int64_t>(run.rejected.size());
  for (const auto& c : credits) st.tokens += c.tokens;
  st.run_tokens = run.run_tokens + st.tokens;
  st.bytes = bytes;
  st.committed_at = now;
  st.round_s = now - run.last_commit_at;  // NaN when unknown
  // Means over the participants of what is known about each (NaN when nothing is).
  auto mean = [&](auto value_of) {
    double sum = 0;
    int n = 0;
    for (auto id : run.participants) {
      const double v = value_of(id);
      if (std::isfinite(v)) sum += v, ++n;
    }
    return n > 0 ? sum / n : std::nan("");
  };
  auto at = [](const std::map<std::int64_t, double>& m, std::int64_t id) {
    const auto it = m.find(id);
    return it == m.end() ? std::nan("") : it->second;
  };
  st.loss = mean([&](std::int64_t id) { return at(run.ready_loss, id); });
  st.val_loss = std::nan("");
  st.compute_s = mean([&](std::int64_t id) {
    const auto it = run.ready.find(id);
    return it == run.ready.end() ? std::nan("") : it->second.compute_seconds;
  });
  st.wait_s = mean([&](std::int64_t id) { return run.attempt_started_at - at(run.ready_at, id); });
  st.comm_s = mean([&](std::int64_t id) { return at(run.result_at, id) - run.attempt_started_at; });
  // ddp moves every step's fp32 gradient through a ring all-reduce: each of n members sends
  // 2(n−1)/n of it per step. Over the steps that process the round's tokens (the mean of
  // the members' steps: ddp's n workers take n batches a step), that is
  //   steps × 2(n−1) × 4 bytes × params.
  const double steps = mean([&](std::int64_t id) {
    const auto it = run.ready.find(id);
    return it == run.ready.end() ? std::nan("") : static_cast<double>(it->second.inner_steps);
  });
  const auto n = static_cast<double>(st.participants);
  if (run.rec.model_params > 0 && n >= 2 && std::isfinite(steps))
    st.ddp_bytes = static_cast<std::int64_t>(steps * 2 * (n - 1) * 4 * static_cast<double>(run.rec.model_params));
  return st;
}

std::vector<Outgoing> BrokerCore::operator_evict(const std::string& run_id, std::int64_t member_id, double now) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) throw OperatorError(OperatorError::Kind::kNotFound, str("no active run '", run_id, "'"));
  RunState& run = *it->second;
  auto m = run.members.find(member_id);
  if (m == run.members.end())
    throw OperatorError(OperatorError::Kind::kNotFound,
                        str("member ", member_id, " is not an active member of run ", run_id));
  // Banned first: the member, told it is evicted, tries to join again at once.
  store_.ban_key(run_id, m->second.rec.public_key, now);
  std::vector<Outgoing> out;
  evict(run, member_id, "evicted by the operator", now, out);
  return out;
}

std::vector<Outgoing> BrokerCore::operator_pause(const std::string& run_id, bool paused, double now) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) throw OperatorError(OperatorError::Kind::kNotFound, str("no active run '", run_id, "'"));
  RunState& run = *it->second;
  if (run.rec.status != RunStatus::kActive)
    throw OperatorError(OperatorError::Kind::kConflict, str("run ", run_id, " has finished"));
  std::vector<Outgoing> out;
  if (run.rec.paused == paused) return out;
  store_.set_run_paused(run_id, paused);
  run.rec.paused = paused;
  store_.log_event(
      run_id, paused ? "paused" : "resumed",
      paused ? str("by the operator after round ", run.rec.round, run.running ? " (the round in flight finishes)" : "")
             : str("by the operator at round ", run.rec.round),
      now);
  log_info("broker: run ", run_id, paused ? " paused" : " resumed", " by the operator");
  if (!paused) maybe_start_round(run, now, out);
  return out;
}

void BrokerCore::evict(RunState& run, std::int64_t member_id, const std::string& why, double now,
                       std::vector<Outgoing>& out, bool replaced, bool unreachable) {
  auto it = run.members.find(member_id);
  if (it == run.members.end()) return;
  const std::string peer = it->second.peer;
  store_.set_member_status(run.rec.run_id, member_id, why == "left" ? MemberStatus::kLeft : MemberStatus::kEvicted);
  store_.log_event(run.rec.run_id, why == "left" ? "leave" : "evict", str("member ", member_id, ": ", why), now);
  log_info("broker: member ", member_id, " of run ", run.rec.run_id,
           why == "left" ? " left" : " evicted: ", why == "left" ? "" : why);
  run.members.erase(it);
  // A participant of the attempt in flight keeps its report: if the others complete the
  // collective, its update is in θ_g and the ledger credits it for the round.
  const bool in_flight =
      run.running && std::find(run.participants.begin(), run.participants.end(), member_id) != run.participants.end();
  if (!in_flight) run.ready.erase(member_id);
  if (run.uploader == member_id) run.uploader = -1, run.upload_round = -1;
  if (!peer.empty() && why != "left")
    out.push_back({peer, message(Evicted{run.rec.run_id, why, replaced, unreachable})});
  if (run.running)
    maybe_finish_round(run, now, out);
  else
    maybe_start_round(run, now, out);
  if (run.upload_round < 0) request_snapshot_if_needed(run, out);
}

void BrokerCore::request_snapshot_if_needed(RunState& run, std::vector<Outgoing>& out) {
  bool needed = false;
  for (auto& [id, lm] : run.members) needed = needed || lm.awaiting_snapshot;
  if (run.rec.round == 0) return;
  if (needed && run.rec.snapshot_round == run.rec.round) {
    announce_snapshot(run, out);
    return;
  }
  const bool stale = opt_.snapshot_every_rounds > 0 &&
                     (!run.rec.snapshot_round || run.rec.round - *run.rec.snapshot_round >= opt_.snapshot_every_rounds);
  if (!needed && !stale) return;
  if (run.upload_round == run.rec.round && run.uploader >= 0) return;  // already asked
  for (auto& [id, lm] : run.members) {
    if (lm.base_round == run.rec.round && !lm.awaiting_snapshot && !lm.peer.empty()) {
      run.upload_round = run.rec.round;
      run.uploader = id;
      run.upload_next = 0;
      out.push_back({lm.peer, message(SnapshotRequest{run.rec.run_id, run.rec.round,
                                                      static_cast<std::int64_t>(opt_.snapshot_chunk_bytes)})});
      return;
    }
  }
}

void BrokerCore::announce_snapshot(RunState& run, std::vector<Outgoing>& out) {
  const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(run.rec.snapshot_path));
  for (auto& [id, lm] : run.members) {
    if (!lm.awaiting_snapshot || lm.peer.empty()) continue;
    out.push_back(
        {lm.peer, message(SnapshotReady{
                      run.rec.run_id, *run.rec.snapshot_round, bytes, snapshot_chunks(bytes, opt_.snapshot_chunk_bytes),
                      static_cast<std::int64_t>(opt_.snapshot_chunk_bytes), run.rec.snapshot_sha256})});
  }
}

std::vector<Outgoing> BrokerCore::on_snapshot_put(const Incoming& in, double now) {
  const auto m = parse<SnapshotPut>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember& lm = member_of(run, m.member_id, in);
  lm.last_seen = now;
  const std::int64_t round = m.round, index = m.index, count = m.count, total = m.bytes;
  const std::string& sha = m.sha256;
  if (lm.rec.member_id != run.uploader || round != run.upload_round)
    throw Error(str("unexpected snapshot upload for round ", round),
                "the broker asked another member, or a newer round");
  if (index + 1 == run.upload_next && index + 1 < count)  // a re-sent chunk whose ack was lost
    return {{in.peer, reply(in, SnapshotPutReply{index})}};
  if (index != run.upload_next || count < 1 || index >= count || total < 0)
    throw ProtocolError(str("snapshot chunk ", index, "/", count, " out of order (expected ", run.upload_next, ")"));
  if (index == 0) {
    run.upload_tmp = str(opt_.snapshot_dir, "/.", run.rec.run_id, "_round_", round, ".tmp");
    std::ofstream(run.upload_tmp, std::ios::binary | std::ios::trunc);
  }
  {
    std::ofstream f(run.upload_tmp, std::ios::binary | std::ios::app);
    f.write(in.message.blob.data(), static_cast<std::streamsize>(in.message.blob.size()));
    if (!f)
      throw Error(str("cannot write snapshot ", run.upload_tmp), "check free disk space next to the broker state");
  }
  ++run.upload_next;
  std::vector<Outgoing> out{{in.peer, reply(in, SnapshotPutReply{index})}};
  if (index + 1 < count) return out;
  // Complete: verify, then publish atomically.
  const auto size = static_cast<std::int64_t>(std::filesystem::file_size(run.upload_tmp));
  const std::string got = sha256_file(run.upload_tmp);
  run.uploader = -1;
  run.upload_round = -1;
  if (size != total || got != sha) {
    std::filesystem::remove(run.upload_tmp);
    store_.log_event(
        run.rec.run_id, "snapshot_rejected",
        str("round ", round, ": ", size, " bytes, sha256 ", got.substr(0, 12), " ≠ announced ", sha.substr(0, 12)),
        now);
    request_snapshot_if_needed(run, out);
    return out;
  }
  const std::string path = str(opt_.snapshot_dir, "/", run.rec.run_id, "_round_", round, ".snapshot");
  fsync_path(run.upload_tmp);
  std::filesystem::rename(run.upload_tmp, path);
  fsync_path(opt_.snapshot_dir);
  const std::string old = run.rec.snapshot_path;
  store_.set_snapshot(run.rec.run_id, round, path, sha);
  run.rec.snapshot_round = round;
  run.rec.snapshot_path = path;
  run.rec.snapshot_sha256 = sha;
  if (!old.empty() && old != path) std::filesystem::remove(old);
  store_.log_event(run.rec.run_id, "snapshot",
                   str("round ", round, " from member ", lm.rec.member_id, ", ", size, " bytes"), now);
  if (round == run.rec.round)
    announce_snapshot(run, out);
  else
    request_snapshot_if_needed(run, out);
  return out;
}

std::vector<Outgoing> BrokerCore::on_snapshot_get(const Incoming& in, double now) {
  const auto m = parse<SnapshotGet>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember& lm = member_of(run, m.member_id, in);
  lm.last_seen = now;
  const std::int64_t round = m.round, index = m.index;
  if (run.rec.snapshot_round != round || run.rec.snapshot_path.empty())
    throw Error(str("no snapshot of round ", round, " (the broker has ",
                    run.rec.snapshot_round ? str("round ", *run.rec.snapshot_round) : std::string("none"), ")"),
                "wait for the snapshot_ready message");
  const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(run.rec.snapshot_path));
  const auto chunks = snapshot_chunks(bytes, opt_.snapshot_chunk_bytes);
  if (index < 0 || index >= chunks) throw ProtocolError(str("snapshot chunk ", index, " outside [0, ", chunks, ")"));
  std::ifstream f(run.rec.snapshot_path, std::ios::binary);
  f.seekg(index * static_cast<std::int64_t>(opt_.snapshot_chunk_bytes));
  std::string blob(static_cast<std::size_t>(
                       std::min<std::int64_t>(static_cast<std::int64_t>(opt_.snapshot_chunk_bytes),
                                              bytes - index * static_cast<std::int64_t>(opt_.snapshot_chunk_bytes))),
                   '\0');
  f.read(blob.data(), static_cast<std::streamsize>(blob.size()));
  if (!f) throw Error(str("cannot read snapshot ", run.rec.snapshot_path), "the broker's snapshot file is damaged");
  if (index == chunks - 1) lm.fetched_round = round;
  return {
      {in.peer, reply(in, SnapshotGetReply{round, index, chunks, bytes, run.rec.snapshot_sha256}, std::move(blob))}};
}

std::vector<Outgoing> BrokerCore::on_leave(const Incoming& in, double now) {
  const auto m = parse<Leave>(in.message);
  RunState& run = run_of(m.run_id);
  LiveMember& lm = member_of(run, m.member_id, in);
  std::vector<Outgoing> out{{in.peer, ack(in)}};
  evict(run, lm.rec.member_id, "left", now, out);
  return out;
}

std::vector<Outgoing> BrokerCore::on_run_finished(const Incoming& in, double now) {
  const auto m = parse<RunFinished>(in.message);
  if (!m.member_id) throw ProtocolError("run_finished from a member lacks field 'member_id'");
  RunState& run = run_of(m.run_id);
  note_progress(run, member_of(run, *m.member_id, in), m.progress);
  const std::int64_t round = m.round;
  std::vector<Outgoing> out{{in.peer, ack(in)}};
  if (round == run.rec.round && run.rec.status == RunStatus::kActive) {
    store_.set_run_status(run.rec.run_id, RunStatus::kFinished);
    store_.log_event(run.rec.run_id, "finished", str("after round ", round), now);
    run.rec.status = RunStatus::kFinished;
    log_info("broker: run ", run.rec.run_id, " finished after round ", round);
  }
  return out;
}

std::vector<Outgoing> BrokerCore::on_ledger(const Incoming& in, double now) {
  const std::string id = parse<LedgerQuery>(in.message).run_id;
  if (!store_.run(id)) throw Error(str("no run '", id, "' on this broker"), "check the run id (`pico ledger RUN`)");
  LedgerReply r;
  r.run_id = id;
  for (const auto& row : store_.ledger(id))
    r.ledger.push_back({row.public_key, row.tokens, row.inner_steps, row.rounds_accepted, row.rounds_rejected,
                        row.compute_seconds, row.bytes_sent});
  return {{in.peer, reply(in, r)}};
}

std::vector<BrokerCore::DialBack> BrokerCore::take_dial_backs() {
  std::vector<DialBack> out;
  out.swap(dial_backs_);
  return out;
}

void BrokerCore::note_dial_back(const DialBack& d, const std::string& error, double now) {
  const auto r = runs_.find(d.run_id);
  if (r == runs_.end()) return;
  const auto m = r->second->members.find(d.member_id);
  if (m == r->second->members.end() || m->second.rec.endpoint != d.endpoint) return;  // gone, or joined again
  m->second.link = !error.empty() ? "unreachable: " + error : m->second.relayed ? "relayed" : "direct";
  if (error.empty()) return;
  store_.log_event(d.run_id, "unreachable",
                   str("member ", d.member_id, ": the broker cannot connect to it at ", d.endpoint, " (", error,
                       "); the others will not either unless they share its network"),
                   now);
  log_warn("broker: member ", d.member_id, " of run ", d.run_id, " is not reachable at ", d.endpoint, ": ", error);
}

std::vector<Outgoing> BrokerCore::tick(double now) {
  std::vector<Outgoing> out;
  for (auto& [id, run] : runs_) {
    std::vector<std::int64_t> silent;
    for (auto& [mid, lm] : run->members)
      if (now - lm.last_seen > opt_.member_timeout_s) silent.push_back(mid);
    for (auto mid : silent)
      evict(*run, mid, str("no heartbeat for ", static_cast<int>(now - run->members.at(mid).last_seen), " s"), now,
            out);
    // A round restored after a restart may already hold every result: finish it now.
    if (run->running) maybe_finish_round(*run, now, out);
  }
  return out;
}

nlohmann::json BrokerCore::status(double now) const {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& rec : store_.runs()) {
    nlohmann::json members = nlohmann::json::array();
    auto live = runs_.find(rec.run_id);
    for (const auto& m : store_.members(rec.run_id, false)) {
      nlohmann::json j = {{"member_id", m.member_id},
                          {"public_key", m.public_key},
                          {"device", m.device},
                          {"slot", m.shard},
                          {"status", to_string(m.status)},
                          {"joined_round", m.joined_round},
                          {"tokens_per_s", m.tokens_per_s},
                          {"last_heartbeat_age_s", now - m.last_heartbeat}};
      if (live != runs_.end()) {
        auto it = live->second->members.find(m.member_id);
        if (it != live->second->members.end()) {
          j["tokens_per_s"] = it->second.tokens_per_s;
          j["last_heartbeat_age_s"] = now - it->second.last_seen;
          j["step"] = it->second.step;
          j["base_round"] = it->second.base_round ? nlohmann::json(*it->second.base_round) : nlohmann::json(nullptr);
        }
      }
      members.push_back(j);
    }
    nlohmann::json rounds = nlohmann::json::array();
    for (const auto& r : store_.rounds(rec.run_id, 20))
      rounds.push_back({{"round", r.round},
                        {"attempt", r.attempt},
                        {"status", to_string(r.status)},
                        {"participants", r.participants},
                        {"duration_s", r.finished_at - r.started_at},
                        {"bytes", r.bytes},
                        {"theta_hash", r.theta_hash}});
    nlohmann::json losses = nlohmann::json::array();
    for (const auto& l : store_.losses(rec.run_id, 50))
      losses.push_back({{"member_id", l.member_id}, {"step", l.step}, {"loss", l.loss}, {"age_s", now - l.time}});
    runs.push_back({{"run_id", rec.run_id},
                    {"status", to_string(rec.status)},
                    {"private", rec.is_private},
                    {"round", rec.round},
                    {"dataset_hash", rec.dataset_hash},
                    {"members", members},
                    {"rounds", rounds},
                    {"recent_losses", losses}});
  }
  return {{"runs", runs}};
}

std::vector<std::string> BrokerCore::run_ids() const {
  std::vector<std::string> ids;
  for (const auto& r : store_.runs()) ids.push_back(r.run_id);
  return ids;
}

std::size_t BrokerCore::active_members(const std::string& run_id) const {
  const auto it = runs_.find(run_id);
  return it == runs_.end() ? 0 : it->second->members.size();
}

std::optional<RunView> BrokerCore::run_view(const std::string& run_id, const ViewQuery& q, double now) const {
  const auto live_it = runs_.find(run_id);
  const RunState* live = live_it == runs_.end() ? nullptr : live_it->second.get();
  std::optional<RunRecord> stored;
  if (live == nullptr) {
    stored = store_.run(run_id);
    if (!stored) return std::nullopt;
  }
  const RunRecord& rec = live ? live->rec : *stored;
  RunView v;
  v.run_id = rec.run_id;
  v.status = rec.status;
  v.algorithm = rec.algorithm;
  v.is_private = rec.is_private;
  v.paused = rec.paused;
  v.round = rec.round;
  v.min_members = rec.min_members;
  v.model_params = rec.model_params;
  v.dataset_hash = rec.dataset_hash;
  v.created_at = rec.created_at;
  v.ledger = store_.ledger(run_id);
  std::map<std::string, const LedgerRow*> by_key;
  for (const auto& row : v.ledger) {
    by_key[row.public_key] = &row;
    v.tokens += row.tokens;
    v.bytes_sent += row.bytes_sent;
    v.rounds_rejected += row.rounds_rejected;
  }
  // Active members first (live state), then the most recent former ones.
  std::vector<MemberView> former;
  for (const auto& m : store_.members(run_id, /*active_only=*/false)) {
    MemberView mv;
    mv.member_id = m.member_id;
    mv.public_key = m.public_key;
    mv.device = m.device;
    mv.slot = m.shard;
    mv.status = m.status;
    mv.joined_round = m.joined_round;
    mv.tokens_per_s = m.tokens_per_s;
    mv.loss = std::nan("");
    mv.heartbeat_age_s = now - m.last_heartbeat;
    if (const auto k = by_key.find(m.public_key); k != by_key.end()) mv.ledger = *k->second;
    mv.ledger.public_key = m.public_key;
    const LiveMember* lm = nullptr;
    if (live != nullptr)
      if (const auto it = live->members.find(m.member_id); it != live->members.end()) lm = &it->second;
    if (lm != nullptr) {
      mv.status = MemberStatus::kActive;
      mv.step = lm->step;
      mv.base_round = lm->base_round;
      mv.ready = live->ready.count(m.member_id) > 0;
      mv.tokens_per_s = lm->tokens_per_s;
      mv.loss = lm->loss;
      mv.heartbeat_age_s = now - lm->last_seen;
      mv.link = lm->link;
      v.tokens_per_s += lm->tokens_per_s;
      ++v.active_members;
      v.members.push_back(mv);
    } else if (mv.status != MemberStatus::kActive) {
      mv.tokens_per_s = 0;
      former.push_back(mv);
    }
  }
  const auto keep = static_cast<std::size_t>(std::max<std::int64_t>(0, q.former_members_limit));
  if (former.size() > keep) former.erase(former.begin(), former.end() - static_cast<std::ptrdiff_t>(keep));
  v.members.insert(v.members.end(), former.rbegin(), former.rend());  // newest former member first
  if (rec.status != RunStatus::kActive)
    v.phase = RunPhase::kFinished;
  else if (live != nullptr && live->running)
    v.phase = RunPhase::kRound, v.attempt = live->attempt;
  else if (rec.paused)
    v.phase = RunPhase::kPaused;
  else if (v.active_members < rec.min_members)
    v.phase = RunPhase::kWaitingForMembers;
  else
    v.phase = RunPhase::kTraining;
  if (q.rounds_limit > 0) v.rounds = store_.round_stats(run_id, q.rounds_after, q.rounds_limit);
  if (q.events_limit > 0) v.events = store_.events_after(run_id, q.events_after, q.events_limit);
  return v;
}

}  // namespace pico::broker
