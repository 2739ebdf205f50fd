// pico/broker/store.h — the broker's durable state: runs, members, rounds, shard
// assignments and the contribution ledger, in SQLite (WAL, synchronous=FULL).
//
// Every mutating call commits before it returns, so anything the broker has acknowledged
// survives a SIGKILL: a restarted broker reopens the file and carries on. Thread-safe (one
// connection behind a mutex). Not a cache of the trainer's tensors: θ_g snapshots live in
// files next to the database, named here by path and SHA-256.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pico/broker/protocol.h"

namespace pico::broker {

struct RunRecord {
  std::string run_id;
  std::string config_yaml;      // the run's shared settings, as resolved by its creator
  std::string dataset_hash;     // contributors must have this dataset
  bool is_private = false;      // private: allow-listed keys or join-token holders only
  std::string token_sha256;     // SHA-256 of the join token ("" when none)
  std::int64_t num_shards = 0;  // training shards of the dataset
  RunStatus status = RunStatus::kActive;
  std::int64_t round = 0;                      // completed outer rounds
  std::optional<std::int64_t> snapshot_round;  // the round of the latest snapshot (none yet: nullopt)
  std::string snapshot_path;                   // latest θ_g + outer state, for joiners
  std::string snapshot_sha256;
  std::string theta0_hash;   // hash of the initial θ_g (joiners before round 1 build it from the seed)
  std::string dataset_info;  // JSON: how the dataset was prepared (for the wrong-dataset HINT)
  double created_at = 0;
  std::int64_t min_members = 1;  // a round starts only when this many members are ready
  // What the dashboard shows about the run (schema 3). Optional in create_run: 0 / "" when
  // the creator did not say.
  std::string algorithm;          // e.g. "diloco H=30 bf16", as the creator describes it
  std::int64_t model_params = 0;  // parameters of the model (for the bytes ddp would send)
  bool paused = false;            // an operator paused rounds: none starts until resumed
};

struct MemberRecord {
  std::string run_id;
  std::int64_t member_id = 0;  // unique within the run, never reused
  std::string public_key;      // CURVE public key (Z85), the contributor's identity
  std::string endpoint;        // where peers reach it for collectives
  std::string device;          // "cpu", "cuda:0", …
  std::int64_t shard = 0;      // contributor slot: selects its data shards
  MemberStatus status = MemberStatus::kActive;
  double joined_at = 0;
  double last_heartbeat = 0;
  double tokens_per_s = 0;
  std::int64_t joined_round = 0;
};

struct RoundRecord {
  std::string run_id;
  std::int64_t round = 0;
  std::int64_t attempt = 0;
  RoundStatus status = RoundStatus::kOpen;
  std::vector<std::int64_t> participants;
  double started_at = 0, finished_at = 0;
  std::int64_t bytes = 0;  // bytes all participants reported sending
  std::string theta_hash;  // agreed hash of θ_g after the round
};

struct LedgerRow {
  std::string public_key;
  std::int64_t tokens = 0;
  std::int64_t inner_steps = 0;
  std::int64_t rounds_accepted = 0;
  std::int64_t rounds_rejected = 0;
  double compute_seconds = 0;
  std::int64_t bytes_sent = 0;
};

// What a member reported when it finished the inner steps of a round (`ready`).
struct ReadyRecord {
  std::int64_t member_id = 0;
  std::int64_t tokens = 0;
  std::int64_t inner_steps = 0;
  double compute_seconds = 0;
  double delta_norm = 0;
  bool finite = true;
};

// A member's outcome of one attempt of a round (`round_result`).
struct ResultRecord {
  std::int64_t member_id = 0;
  bool ok = false;
  std::string theta_hash;
  std::int64_t bytes_sent = 0;
  std::string error;
  // Members it could not connect to (RoundResult::unreachable). Not stored: after a broker
  // restart the retry of the attempt includes them again, and they are found again.
  std::vector<std::int64_t> unreachable = {};
};

// The run's event log: joins, leaves, evictions, rejections, resyncs, rounds, operator
// actions. `id` grows with every event of the broker, so a reader asks for what is new.
struct EventRecord {
  double time = 0;
  std::string kind;
  std::string detail;
  std::int64_t id = 0;
};

// What one committed round cost and gave, for the dashboard and /metrics. Times are the
// broker's clock except compute_s (the members' own); means are over the participants.
//   compute_s  inner steps (reported in `ready`)
//   wait_s     from a member's `ready` to the `round_start` of the attempt that committed
//              (waiting for the slowest member, and any failed attempt before it)
//   comm_s     from that `round_start` to the member's `round_result` (all-reduce + outer step)
// NaN where unknown (e.g. a round resumed after a broker restart).
struct RoundStats {
  std::int64_t round = 0;
  std::int64_t attempts = 1;
  std::int64_t participants = 0;
  std::int64_t rejected = 0;
  std::int64_t tokens = 0;       // credited to the round (rejected updates count 0)
  std::int64_t run_tokens = 0;   // credited to the run up to and including this round
  double loss = 0;               // mean training loss of the participants at `ready` (NaN: none)
  double val_loss = 0;           // mean validation loss the members reported for θ_g of this round
  std::int64_t val_reports = 0;  // how many members reported val_loss
  double compute_s = 0, wait_s = 0, comm_s = 0;
  double round_s = 0;  // since the previous commit (NaN for the first round)
  double committed_at = 0;
  std::int64_t bytes = 0;      // all participants' bytes sent
  std::int64_t ddp_bytes = 0;  // a ring all-reduce of fp32 gradients every step would send this (0: unknown)
};

struct LossRecord {
  std::int64_t member_id = 0;
  std::int64_t step = 0;
  double loss = 0;
  double time = 0;
};

class Store {
 public:
  // Opens (creating if needed) the database at `path`; throws pico::Error naming the file if
  // it is not a pico broker database or cannot be opened.
  static std::unique_ptr<Store> open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  const std::string& path() const;

  // Runs.
  void create_run(const RunRecord& run);  // throws if the id exists
  std::optional<RunRecord> run(const std::string& run_id) const;
  std::vector<RunRecord> runs() const;
  void set_run_round(const std::string& run_id, std::int64_t round);
  void set_run_status(const std::string& run_id, RunStatus status);
  void set_snapshot(const std::string& run_id, std::int64_t round, const std::string& path, const std::string& sha256);
  void allow_key(const std::string& run_id, const std::string& public_key);
  bool is_allowed(const std::string& run_id, const std::string& public_key) const;
  void set_run_paused(const std::string& run_id, bool paused);
  // Keys an operator removed from a run: they may not join it again.
  void ban_key(const std::string& run_id, const std::string& public_key, double time);
  bool is_banned(const std::string& run_id, const std::string& public_key) const;

  // Members. add_member assigns the next member id and returns it.
  std::int64_t add_member(const MemberRecord& m);
  std::optional<MemberRecord> member(const std::string& run_id, std::int64_t member_id) const;
  std::vector<MemberRecord> members(const std::string& run_id, bool active_only) const;
  void set_member_status(const std::string& run_id, std::int64_t member_id, MemberStatus status);
  void heartbeat(const std::string& run_id, std::int64_t member_id, double time, double tokens_per_s);

  // Rounds.
  void begin_round(const RoundRecord& r);  // inserts or replaces (run, round)
  void finish_round(const std::string& run_id, std::int64_t round, RoundStatus status, std::int64_t bytes,
                    const std::string& theta_hash, double finished_at);
  std::optional<RoundRecord> round(const std::string& run_id, std::int64_t round) const;
  std::vector<RoundRecord> rounds(const std::string& run_id, std::int64_t limit) const;  // newest first

  // Acknowledged reports of a round in progress (kept so that a restarted broker can finish it).
  void save_ready(const std::string& run_id, std::int64_t round, const ReadyRecord& r);
  std::vector<ReadyRecord> ready_reports(const std::string& run_id, std::int64_t round) const;
  void save_result(const std::string& run_id, std::int64_t round, std::int64_t attempt, const ResultRecord& r);
  std::vector<ResultRecord> results(const std::string& run_id, std::int64_t round, std::int64_t attempt) const;

  // Ledger: adds to the contributor's totals (creating the row on first use).
  void credit(const std::string& run_id, const LedgerRow& delta);
  // Marks the round done, credits its participants and advances the run, in one
  // transaction: a broker killed at any point has either committed the round or not. The
  // round's stats, when given, are written in the same transaction.
  void commit_round(const std::string& run_id, std::int64_t round, std::int64_t bytes, const std::string& theta_hash,
                    double finished_at, const std::vector<LedgerRow>& credits, const RoundStats* stats = nullptr);
  std::vector<LedgerRow> ledger(const std::string& run_id) const;
  // Stats of committed rounds after `after_round`, oldest first, at most `limit` (the newest).
  std::vector<RoundStats> round_stats(const std::string& run_id, std::int64_t after_round, std::int64_t limit) const;
  // A member's validation loss for θ_g of `round`: folded into the round's mean.
  void add_val_loss(const std::string& run_id, std::int64_t round, double val_loss);

  void log_event(const std::string& run_id, const std::string& kind, const std::string& detail, double time);
  std::vector<EventRecord> events(const std::string& run_id, std::int64_t limit) const;  // newest first
  // Events with id > after_id, oldest first, at most `limit` (the newest of them).
  std::vector<EventRecord> events_after(const std::string& run_id, std::int64_t after_id, std::int64_t limit) const;
  void record_loss(const std::string& run_id, const LossRecord& l);
  std::vector<LossRecord> losses(const std::string& run_id, std::int64_t limit) const;  // newest first

 private:
  Store();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
