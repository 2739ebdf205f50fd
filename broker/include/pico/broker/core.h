// pico/broker/core.h — the broker's decisions, as a state machine without sockets.
//
// BrokerCore takes each decoded message (with the sender's connection id and authenticated
// CURVE key) and the passing of time, and returns the messages to send. Everything it must
// not forget goes to the Store before the reply that acknowledges it is returned, so a
// broker killed at any point and restarted on the same Store resumes the run. The service
// (service.h) moves the bytes; tests drive the core directly.
//
// A run, round by round (DiLoCo):
//   1. Members train their inner steps from θ_g of round R−1 and send `ready` for round R
//      with a summary of their pseudo-gradient (tokens, steps, ‖Δ‖, finite?).
//   2. When every eligible member (one whose model is based on round R−1) is ready, the core
//      sends `round_start` to each: the ring order (member id, endpoint, key) and each
//      member's weight multiplier (0 for an update rejected by validation: it still takes part
//      so that it ends the round in sync, but contributes nothing).
//   3. Members all-reduce peer to peer and report `round_result` (ok + θ_g hash, or failed).
//      If any member completed, the round is committed with the majority hash and the ledger
//      is credited; members that failed or disagree are told to resync from a snapshot. If
//      none completed, the attempt is retried with the members still alive.
//   4. Members silent for longer than member_timeout_s are evicted; a round in progress is
//      retried without them.
// Joiners (and resyncs) get θ_g + outer state from the latest snapshot, which the core asks
// a member in sync to upload after a round when someone needs it.
//
// The dashboard reads the core through run_view() (dashboard.h) and acts on it through the
// operator_* calls; the service authenticates the operator before it calls them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "pico/broker/dashboard.h"
#include "pico/broker/protocol.h"
#include "pico/broker/store.h"

namespace pico::broker {

struct BrokerOptions {
  double member_timeout_s = 30;       // evict a member not heard from for this long
  double result_timeout_s = 900;      // a round attempt's results must arrive within this
  double heartbeat_persist_s = 5;     // write a member's heartbeat to the store at most this often
  double norm_rejection_factor = 10;  // public runs: reject ‖Δ‖ > factor × the round's median
  std::string snapshot_dir;           // where θ_g snapshots are kept (next to the database)
  std::size_t snapshot_chunk_bytes = 8u << 20;
  // Ask a member in sync for θ_g after every this many rounds, so that the run survives the
  // death of every member that holds the latest θ_g (0: only when a joiner needs one).
  std::int64_t snapshot_every_rounds = 1;
  // A member the others cannot connect to is left out of the retry at once; after this many
  // such attempts it is evicted (and told why).
  int unreachable_evict_after = 2;
  // The relay members behind a NAT may use (tcp://HOST:PORT, the broker's key), offered in
  // run_info and create_run replies; "" = none. Set by the service that runs it.
  std::string relay_endpoint;
};

struct Incoming {
  std::string peer;        // connection id (ZeroMQ routing id)
  std::string public_key;  // the sender's authenticated CURVE key (Z85)
  Message message;
  std::string peer_address = "";  // the IP address its connection comes from ("" if unknown)
};

struct Outgoing {
  std::string peer;
  Message message;
};

// An operator action the core refuses: what was not found or not allowed.
class OperatorError : public std::runtime_error {
 public:
  enum class Kind { kNotFound, kConflict };
  OperatorError(Kind kind, const std::string& what) : std::runtime_error(what), kind(kind) {}
  Kind kind;
};

class BrokerCore {
 public:
  // Loads every active run from the store: a restarted broker carries on where it stopped.
  BrokerCore(Store& store, BrokerOptions options, double now);
  ~BrokerCore();

  std::vector<Outgoing> handle(const Incoming& in, double now);
  // Evictions and timeouts; call about once a second.
  std::vector<Outgoing> tick(double now);
  // Runs, members, rounds and recent losses, for the --http status endpoint.
  nlohmann::json status(double now) const;

  // Reachability. A member that joins is dialed back at the endpoint it advertises (by the
  // service, off this thread: a connection attempt may take seconds). take_dial_backs() hands
  // out the members to dial; note_dial_back() records the outcome ("" = reachable) in the
  // member's view and, when it failed, in the event log with the reason.
  struct DialBack {
    std::string run_id;
    std::int64_t member_id = 0;
    std::string endpoint;
  };
  std::vector<DialBack> take_dial_backs();
  // The relay offered to members (BrokerOptions::relay_endpoint), once the service runs it.
  void set_relay_endpoint(const std::string& endpoint) { opt_.relay_endpoint = endpoint; }
  void note_dial_back(const DialBack& d, const std::string& error, double now);

  // Every run on this broker (active and finished), oldest first.
  std::vector<std::string> run_ids() const;
  // Members of `run_id` still active (0 for an unknown run).
  std::size_t active_members(const std::string& run_id) const;
  // What the dashboard shows of a run; nullopt for a run this broker does not know.
  std::optional<RunView> run_view(const std::string& run_id, const ViewQuery& query, double now) const;
  // Operator actions. They throw OperatorError for an unknown run or member, or a finished
  // run, and return the messages to send like handle().
  //   evict: the member is told so and its key may not join the run again.
  //   pause: no round starts until resumed; a round in flight finishes.
  std::vector<Outgoing> operator_evict(const std::string& run_id, std::int64_t member_id, double now);
  std::vector<Outgoing> operator_pause(const std::string& run_id, bool paused, double now);

  struct RunState;

 private:
  std::vector<Outgoing> dispatch(const Incoming& in, double now);
  std::vector<Outgoing> on_create_run(const Incoming& in, double now);
  std::vector<Outgoing> on_join(const Incoming& in, double now);
  std::vector<Outgoing> on_heartbeat(const Incoming& in, double now);
  std::vector<Outgoing> on_ready(const Incoming& in, double now);
  std::vector<Outgoing> on_round_result(const Incoming& in, double now);
  std::vector<Outgoing> on_snapshot_put(const Incoming& in, double now);
  std::vector<Outgoing> on_snapshot_get(const Incoming& in, double now);
  std::vector<Outgoing> on_leave(const Incoming& in, double now);
  std::vector<Outgoing> on_run_finished(const Incoming& in, double now);
  std::vector<Outgoing> on_ledger(const Incoming& in, double now);

  RunState& run_of(const std::string& run_id);
  // Member `member_id` of `run`, checked against the sender's key (ProtocolError) and
  // remembered as reachable at the sender's connection.
  struct LiveMember& member_of(RunState& run, std::int64_t member_id, const Incoming& in);
  void maybe_start_round(RunState& run, double now, std::vector<Outgoing>& out);
  void start_attempt(RunState& run, const std::vector<std::int64_t>& members, double now, std::vector<Outgoing>& out);
  void maybe_finish_round(RunState& run, double now, std::vector<Outgoing>& out);
  // Records a member's report for the round in flight; false when it is stale.
  bool record_result(RunState& run, LiveMember& lm, const RoundResult& report, double now);
  // A member's progress report (protocol.h ProgressReport), for the dashboard.
  void note_progress(RunState& run, LiveMember& lm, const ProgressReport& p);
  RoundStats round_stats_of(const RunState& run, std::int64_t round, const std::vector<LedgerRow>& credits,
                            std::int64_t bytes, double now) const;
  // Tells a member to fetch the snapshot, and puts it in the event log.
  void resync(RunState& run, LiveMember& lm, const std::string& why, double now, std::vector<Outgoing>& out);
  // `replaced`: the member's key joined again as a new member (it is told not to rejoin).
  // `unreachable`: the others could not connect to it (it is told not to rejoin as it is).
  void evict(RunState& run, std::int64_t member_id, const std::string& why, double now, std::vector<Outgoing>& out,
             bool replaced = false, bool unreachable = false);
  void request_snapshot_if_needed(RunState& run, std::vector<Outgoing>& out);
  std::vector<DialBack> dial_backs_;
  void announce_snapshot(RunState& run, std::vector<Outgoing>& out);

  Store& store_;
  BrokerOptions opt_;
  std::map<std::string, std::unique_ptr<RunState>> runs_;
};

}  // namespace pico::broker
