// pico/broker/dashboard.h — what the dashboard page, /metrics and `pico top` show of a run.
//
// RunView is a typed picture of one run that BrokerCore::run_view() takes from its live
// state and the store; this header renders it as JSON (the page's /api, `pico top`) and in
// the Prometheus text format (/metrics). It is not the broker protocol (protocol.h) and it
// touches neither sockets nor the store: the service takes views under the core's lock and
// renders them outside it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pico/broker/store.h"

namespace pico::broker {

// One member as the dashboard lists it: the live state of an active member (its last
// heartbeat) and, for every member, the ledger of its key.
struct MemberView {
  std::int64_t member_id = 0;
  std::string public_key;  // Z85
  std::string device;
  std::int64_t slot = 0;
  MemberStatus status = MemberStatus::kActive;
  std::int64_t joined_round = 0;
  std::int64_t step = 0;                   // its inner steps so far (heartbeat)
  std::optional<std::int64_t> base_round;  // round of the θ_g its model is based on; nullopt: syncing
  bool ready = false;                      // has sent `ready` for the round being assembled
  double tokens_per_s = 0;                 // heartbeat
  double loss = 0;                         // its last training loss (NaN: not reported)
  double heartbeat_age_s = 0;              // seconds since the broker last heard from it
  // How its peers reach it: "direct", "relayed" (through the broker's relay: it is behind a
  // NAT), "checking" (the broker's dial-back has not answered yet) or "unreachable: WHY" (the
  // broker could not connect to its endpoint).
  std::string link = "direct";
  LedgerRow ledger;  // the totals of its key in this run
};

// The phase a run is in, from the broker's point of view.
enum class RunPhase { kWaitingForMembers, kTraining, kRound, kPaused, kFinished };
const char* to_string(RunPhase p);

struct RunView {
  std::string run_id;
  RunStatus status = RunStatus::kActive;
  RunPhase phase = RunPhase::kTraining;
  std::string algorithm;  // as the creator described it ("" if it did not)
  bool is_private = false;
  bool paused = false;
  std::int64_t round = 0;    // committed rounds
  std::int64_t attempt = 0;  // attempt of the round in flight (0: none)
  std::int64_t min_members = 1;
  std::int64_t model_params = 0;
  std::string dataset_hash;
  double created_at = 0;
  std::int64_t active_members = 0;
  double tokens_per_s = 0;  // sum over active members
  // Run totals (the ledger).
  std::int64_t tokens = 0, bytes_sent = 0, rounds_rejected = 0;
  std::vector<MemberView> members;  // active ones first, then the most recent former ones
  std::vector<LedgerRow> ledger;    // by tokens, largest first
  std::vector<RoundStats> rounds;   // committed rounds after ViewQuery::rounds_after, oldest first
  std::vector<EventRecord> events;  // events after ViewQuery::events_after, oldest first
};

// Which part of the history a view carries: a poller asks only for what is new.
struct ViewQuery {
  std::int64_t rounds_after = -1;    // round stats with round > this
  std::int64_t rounds_limit = 2000;  // at most this many (the newest)
  std::int64_t events_after = 0;     // events with id > this
  std::int64_t events_limit = 200;   // at most this many (the newest)
  std::int64_t former_members_limit = 50;
};

nlohmann::json to_json(const RunView& v);
// Every run's metrics in the Prometheus text exposition format (version 0.0.4): per run and
// per active member. The last round of each view gives the per-round metrics; its newest
// round with a validation loss gives pico_run_val_loss.
std::string prometheus_text(const std::vector<RunView>& runs);

}  // namespace pico::broker
