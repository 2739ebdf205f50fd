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

namespace pico::broker {

struct RunRecord {
  std::string run_id;
  std::string config_yaml;       // the run's shared settings, as resolved by its creator
  std::string dataset_hash;      // contributors must have this dataset
  bool is_private = false;       // private: allow-listed keys or join-token holders only
  std::string token_sha256;      // SHA-256 of the join token ("" when none)
  std::int64_t num_shards = 0;   // training shards of the dataset
  std::string status = "active"; // active | finished
  std::int64_t round = 0;        // completed outer rounds
  std::int64_t snapshot_round = -1;
  std::string snapshot_path;     // latest θ_g + outer state, for joiners
  std::string snapshot_sha256;
  std::string theta0_hash;       // hash of the initial θ_g (joiners before round 1 build it from the seed)
  std::string dataset_info;      // JSON: how the dataset was prepared (for the wrong-dataset HINT)
  double created_at = 0;
  std::int64_t min_members = 1;  // a round starts only when this many members are ready
};

struct MemberRecord {
  std::string run_id;
  std::int64_t member_id = 0;    // unique within the run, never reused
  std::string public_key;        // CURVE public key (Z85), the contributor's identity
  std::string endpoint;          // where peers reach it for collectives
  std::string device;            // "cpu", "cuda:0", …
  std::int64_t shard = 0;        // contributor slot: selects its data shards
  std::string status = "active"; // active | evicted | left
  double joined_at = 0;
  double last_heartbeat = 0;
  double tokens_per_s = 0;
  std::int64_t joined_round = 0;
};

struct RoundRecord {
  std::string run_id;
  std::int64_t round = 0;
  std::int64_t attempt = 0;
  std::string status;            // open | done | failed
  std::vector<std::int64_t> participants;
  double started_at = 0, finished_at = 0;
  std::int64_t bytes = 0;        // bytes all participants reported sending
  std::string theta_hash;        // agreed hash of θ_g after the round
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
};

struct EventRecord {
  double time = 0;
  std::string kind;
  std::string detail;
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
  void set_run_status(const std::string& run_id, const std::string& status);
  void set_snapshot(const std::string& run_id, std::int64_t round, const std::string& path, const std::string& sha256);
  void allow_key(const std::string& run_id, const std::string& public_key);
  bool is_allowed(const std::string& run_id, const std::string& public_key) const;

  // Members. add_member assigns the next member id and returns it.
  std::int64_t add_member(const MemberRecord& m);
  std::optional<MemberRecord> member(const std::string& run_id, std::int64_t member_id) const;
  std::vector<MemberRecord> members(const std::string& run_id, bool active_only) const;
  void set_member_status(const std::string& run_id, std::int64_t member_id, const std::string& status);
  void heartbeat(const std::string& run_id, std::int64_t member_id, double time, double tokens_per_s);

  // Rounds.
  void begin_round(const RoundRecord& r);  // inserts or replaces (run, round)
  void finish_round(const std::string& run_id, std::int64_t round, const std::string& status, std::int64_t bytes,
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
  // transaction: a broker killed at any point has either committed the round or not.
  void commit_round(const std::string& run_id, std::int64_t round, std::int64_t bytes, const std::string& theta_hash,
                    double finished_at, const std::vector<LedgerRow>& credits);
  std::vector<LedgerRow> ledger(const std::string& run_id) const;

  void log_event(const std::string& run_id, const std::string& kind, const std::string& detail, double time);
  std::vector<EventRecord> events(const std::string& run_id, std::int64_t limit) const;  // newest first
  void record_loss(const std::string& run_id, const LossRecord& l);
  std::vector<LossRecord> losses(const std::string& run_id, std::int64_t limit) const;  // newest first

 private:
  Store();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
