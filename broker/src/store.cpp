#include "pico/broker/store.h"

#include <sqlite3.h>

#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "pico/common/error.h"

namespace pico::broker {
namespace {

constexpr int kSchemaVersion = 3;  // 2: runs.min_members; 3: runs.{algorithm,model_params,paused}, round_stats, banned

constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, config_yaml TEXT NOT NULL, dataset_hash TEXT NOT NULL,
  is_private INTEGER NOT NULL, token_sha256 TEXT NOT NULL, num_shards INTEGER NOT NULL,
  status TEXT NOT NULL, round INTEGER NOT NULL, snapshot_round INTEGER NOT NULL,
  snapshot_path TEXT NOT NULL, snapshot_sha256 TEXT NOT NULL, theta0_hash TEXT NOT NULL,
  dataset_info TEXT NOT NULL, created_at REAL NOT NULL, min_members INTEGER NOT NULL DEFAULT 1,
  algorithm TEXT NOT NULL DEFAULT '', model_params INTEGER NOT NULL DEFAULT 0, paused INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS allowlist (run_id TEXT NOT NULL, public_key TEXT NOT NULL,
  PRIMARY KEY (run_id, public_key));
CREATE TABLE IF NOT EXISTS members (
  run_id TEXT NOT NULL, member_id INTEGER NOT NULL, public_key TEXT NOT NULL, endpoint TEXT NOT NULL,
  device TEXT NOT NULL, shard INTEGER NOT NULL, status TEXT NOT NULL, joined_at REAL NOT NULL,
  last_heartbeat REAL NOT NULL, tokens_per_s REAL NOT NULL, joined_round INTEGER NOT NULL,
  PRIMARY KEY (run_id, member_id));
CREATE TABLE IF NOT EXISTS rounds (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
  participants TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL, bytes INTEGER NOT NULL,
  theta_hash TEXT NOT NULL, PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS ledger (
  run_id TEXT NOT NULL, public_key TEXT NOT NULL, tokens INTEGER NOT NULL, inner_steps INTEGER NOT NULL,
  rounds_accepted INTEGER NOT NULL, rounds_rejected INTEGER NOT NULL, compute_seconds REAL NOT NULL,
  bytes_sent INTEGER NOT NULL, PRIMARY KEY (run_id, public_key));
CREATE TABLE IF NOT EXISTS round_ready (run_id TEXT NOT NULL, round INTEGER NOT NULL, member_id INTEGER NOT NULL,
  tokens INTEGER NOT NULL, inner_steps INTEGER NOT NULL, compute_seconds REAL NOT NULL, delta_norm REAL NOT NULL,
  finite INTEGER NOT NULL, PRIMARY KEY (run_id, round, member_id));
CREATE TABLE IF NOT EXISTS round_results (run_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
  member_id INTEGER NOT NULL, ok INTEGER NOT NULL, theta_hash TEXT NOT NULL, bytes_sent INTEGER NOT NULL,
  error TEXT NOT NULL, PRIMARY KEY (run_id, round, attempt, member_id));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, time REAL NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS losses (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
  member_id INTEGER NOT NULL, step INTEGER NOT NULL, loss REAL NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS round_stats (run_id TEXT NOT NULL, round INTEGER NOT NULL, attempts INTEGER NOT NULL,
  participants INTEGER NOT NULL, rejected INTEGER NOT NULL, tokens INTEGER NOT NULL, run_tokens INTEGER NOT NULL,
  loss REAL, val_loss REAL, val_reports INTEGER NOT NULL, compute_s REAL, wait_s REAL, comm_s REAL, round_s REAL,
  committed_at REAL NOT NULL, bytes INTEGER NOT NULL, ddp_bytes INTEGER NOT NULL, PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS banned (run_id TEXT NOT NULL, public_key TEXT NOT NULL, time REAL NOT NULL,
  PRIMARY KEY (run_id, public_key));
)SQL";

// RAII prepared statement with positional binding.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw Error(str("broker database: cannot prepare '", sql, "': ", sqlite3_errmsg(db)));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(s_, i, v)); }
  Stmt& bind(int i, int v) { return check(sqlite3_bind_int64(s_, i, v)); }
  Stmt& bind(int i, double v) { return check(sqlite3_bind_double(s_, i, v)); }
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind(int i, const std::string& v) {
    return check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  // true while there is a row
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(str("broker database error: ", sqlite3_errmsg(db_)), "check free disk space and file permissions");
  }
  void run() {
    while (step()) {
    }
  }
  std::int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  double f64(int c) const { return sqlite3_column_double(s_, c); }
  // SQLite stores NaN as NULL: read it back as NaN.
  double f64_or_nan(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL ? std::nan("") : f64(c); }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, c)))
             : "";
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) throw Error(str("broker database: bind failed: ", sqlite3_errmsg(db_)));
    return *this;
  }
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

void exec(sqlite3* db, const char* sql, const std::string& path) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "?";
    sqlite3_free(err);
    throw Error(str("broker database ", path, ": ", msg),
                "the file may be damaged or not a pico broker database; pass another --state file");
  }
}

bool has_column(sqlite3* db, const char* table, const char* column) {
  Stmt s(db, str("PRAGMA table_info(", table, ")").c_str());
  while (s.step())
    if (s.text(1) == column) return true;
  return false;
}

RunRecord read_run(const Stmt& s) {
  RunRecord r;
  r.run_id = s.text(0);
  r.config_yaml = s.text(1);
  r.dataset_hash = s.text(2);
  r.is_private = s.i64(3) != 0;
  r.token_sha256 = s.text(4);
  r.num_shards = s.i64(5);
  r.status = parse_run_status(s.text(6));
  r.round = s.i64(7);
  // Stored as −1 when there is none (the column predates the type; files stay compatible).
  if (s.i64(8) >= 0) r.snapshot_round = s.i64(8);
  r.snapshot_path = s.text(9);
  r.snapshot_sha256 = s.text(10);
  r.theta0_hash = s.text(11);
  r.dataset_info = s.text(12);
  r.created_at = s.f64(13);
  r.min_members = s.i64(14);
  r.algorithm = s.text(15);
  r.model_params = s.i64(16);
  r.paused = s.i64(17) != 0;
  return r;
}

constexpr const char* kRunColumns =
    "run_id, config_yaml, dataset_hash, is_private, token_sha256, num_shards, status, round, snapshot_round, "
    "snapshot_path, snapshot_sha256, theta0_hash, dataset_info, created_at, min_members, algorithm, model_params, "
    "paused";

MemberRecord read_member(const Stmt& s) {
  MemberRecord m;
  m.run_id = s.text(0);
  m.member_id = s.i64(1);
  m.public_key = s.text(2);
  m.endpoint = s.text(3);
  m.device = s.text(4);
  m.shard = s.i64(5);
  m.status = parse_member_status(s.text(6));
  m.joined_at = s.f64(7);
  m.last_heartbeat = s.f64(8);
  m.tokens_per_s = s.f64(9);
  m.joined_round = s.i64(10);
  return m;
}

constexpr const char* kMemberColumns =
    "run_id, member_id, public_key, endpoint, device, shard, status, joined_at, last_heartbeat, tokens_per_s, "
    "joined_round";

RoundRecord read_round(const Stmt& s) {
  RoundRecord r;
  r.run_id = s.text(0);
  r.round = s.i64(1);
  r.attempt = s.i64(2);
  r.status = parse_round_status(s.text(3));
  r.participants = nlohmann::json::parse(s.text(4)).get<std::vector<std::int64_t>>();
  r.started_at = s.f64(5);
  r.finished_at = s.f64(6);
  r.bytes = s.i64(7);
  r.theta_hash = s.text(8);
  return r;
}

constexpr const char* kRoundColumns =
    "run_id, round, attempt, status, participants, started_at, finished_at, bytes, theta_hash";

constexpr const char* kRoundStatsColumns =
    "run_id, round, attempts, participants, rejected, tokens, run_tokens, loss, val_loss, val_reports, compute_s, "
    "wait_s, comm_s, round_s, committed_at, bytes, ddp_bytes";

}  // namespace

struct Store::Impl {
  sqlite3* db = nullptr;
  std::string path;
  mutable std::mutex mu;
  ~Impl() {
    if (db != nullptr) sqlite3_close(db);
  }
};

Store::Store() : impl_(std::make_unique<Impl>()) {}
Store::~Store() = default;
const std::string& Store::path() const {
  return impl_->path;
}

std::unique_ptr<Store> Store::open(const std::string& path) {
  std::unique_ptr<Store> s(new Store());
  s->impl_->path = path;
  if (sqlite3_open_v2(path.c_str(), &s->impl_->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK)
    throw Error(str("cannot open broker state ", path, ": ", sqlite3_errmsg(s->impl_->db)),
                "check that the directory exists and is writable");
  sqlite3* db = s->impl_->db;
  sqlite3_busy_timeout(db, 5000);
  // WAL + FULL: a commit is on disk (fsynced) before the call that made it returns.
  exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", path);
  exec(db, kSchema, path);
  Stmt get(db, "SELECT value FROM meta WHERE key = 'schema_version'");
  if (get.step()) {
    const std::string v = get.text(0);
    if (v == "1" || v == "2") {
      // Older files lack runs' newer columns (1: min_members, every run then waits for 1;
      // 2: the dashboard's); the new tables were created above.
      for (const auto& [column, ddl] :
           {std::pair{"min_members", "INTEGER NOT NULL DEFAULT 1"}, std::pair{"algorithm", "TEXT NOT NULL DEFAULT ''"},
            std::pair{"model_params", "INTEGER NOT NULL DEFAULT 0"}, std::pair{"paused", "INTEGER NOT NULL DEFAULT 0"}})
        if (!has_column(db, "runs", column))
          exec(db, str("ALTER TABLE runs ADD COLUMN ", column, " ", ddl, ";").c_str(), path);
      exec(db, "UPDATE meta SET value = '3' WHERE key = 'schema_version';", path);
    } else if (v != std::to_string(kSchemaVersion))
      throw Error(str("broker state ", path, " has schema version ", v, ", expected ", kSchemaVersion),
                  "use a state file written by this version of pico, or start a new one");
  } else {
    Stmt put(db, "INSERT INTO meta (key, value) VALUES ('schema_version', ?)");
    put.bind(1, std::to_string(kSchemaVersion)).run();
  }
  return s;
}

void Store::create_run(const RunRecord& r) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt check(impl_->db, "SELECT 1 FROM runs WHERE run_id = ?");
  if (check.bind(1, r.run_id).step()) throw Error(str("run ", r.run_id, " already exists in ", impl_->path));
  Stmt s(impl_->db, str("INSERT INTO runs (", kRunColumns, ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)").c_str());
  s.bind(1, r.run_id).bind(2, r.config_yaml).bind(3, r.dataset_hash).bind(4, r.is_private ? 1 : 0);
  s.bind(5, r.token_sha256)
      .bind(6, r.num_shards)
      .bind(7, to_string(r.status))
      .bind(8, r.round)
      .bind(9, r.snapshot_round.value_or(-1));
  s.bind(10, r.snapshot_path).bind(11, r.snapshot_sha256).bind(12, r.theta0_hash).bind(13, r.dataset_info);
  s.bind(14, r.created_at).bind(15, r.min_members).bind(16, r.algorithm).bind(17, r.model_params);
  s.bind(18, r.paused ? 1 : 0).run();
}

std::optional<RunRecord> Store::run(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kRunColumns, " FROM runs WHERE run_id = ?").c_str());
  if (!s.bind(1, run_id).step()) return std::nullopt;
  return read_run(s);
}

std::vector<RunRecord> Store::runs() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kRunColumns, " FROM runs ORDER BY created_at").c_str());
  std::vector<RunRecord> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

void Store::set_run_round(const std::string& run_id, std::int64_t round) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "UPDATE runs SET round = ? WHERE run_id = ?").bind(1, round).bind(2, run_id).run();
}

void Store::set_run_status(const std::string& run_id, RunStatus status) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "UPDATE runs SET status = ? WHERE run_id = ?").bind(1, to_string(status)).bind(2, run_id).run();
}

void Store::set_snapshot(const std::string& run_id, std::int64_t round, const std::string& path,
                         const std::string& sha256) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, "UPDATE runs SET snapshot_round = ?, snapshot_path = ?, snapshot_sha256 = ? WHERE run_id = ?");
  s.bind(1, round).bind(2, path).bind(3, sha256).bind(4, run_id).run();
}

void Store::allow_key(const std::string& run_id, const std::string& public_key) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "INSERT OR IGNORE INTO allowlist (run_id, public_key) VALUES (?, ?)")
      .bind(1, run_id)
      .bind(2, public_key)
      .run();
}

bool Store::is_allowed(const std::string& run_id, const std::string& public_key) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, "SELECT 1 FROM allowlist WHERE run_id = ? AND public_key = ?");
  return s.bind(1, run_id).bind(2, public_key).step();
}

void Store::set_run_paused(const std::string& run_id, bool paused) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "UPDATE runs SET paused = ? WHERE run_id = ?").bind(1, paused ? 1 : 0).bind(2, run_id).run();
}

void Store::ban_key(const std::string& run_id, const std::string& public_key, double time) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "INSERT OR IGNORE INTO banned (run_id, public_key, time) VALUES (?, ?, ?)")
      .bind(1, run_id)
      .bind(2, public_key)
      .bind(3, time)
      .run();
}

bool Store::is_banned(const std::string& run_id, const std::string& public_key) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, "SELECT 1 FROM banned WHERE run_id = ? AND public_key = ?");
  return s.bind(1, run_id).bind(2, public_key).step();
}

std::int64_t Store::add_member(const MemberRecord& m) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  exec(impl_->db, "BEGIN IMMEDIATE", impl_->path);
  try {
    Stmt next(impl_->db, "SELECT COALESCE(MAX(member_id), -1) + 1 FROM members WHERE run_id = ?");
    next.bind(1, m.run_id).step();
    const std::int64_t id = next.i64(0);
    Stmt s(impl_->db, str("INSERT INTO members (", kMemberColumns, ") VALUES (?,?,?,?,?,?,?,?,?,?,?)").c_str());
    s.bind(1, m.run_id).bind(2, id).bind(3, m.public_key).bind(4, m.endpoint).bind(5, m.device).bind(6, m.shard);
    s.bind(7, to_string(m.status))
        .bind(8, m.joined_at)
        .bind(9, m.last_heartbeat)
        .bind(10, m.tokens_per_s)
        .bind(11, m.joined_round);
    s.run();
    exec(impl_->db, "COMMIT", impl_->path);
    return id;
  } catch (...) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::optional<MemberRecord> Store::member(const std::string& run_id, std::int64_t member_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kMemberColumns, " FROM members WHERE run_id = ? AND member_id = ?").c_str());
  if (!s.bind(1, run_id).bind(2, member_id).step()) return std::nullopt;
  return read_member(s);
}

std::vector<MemberRecord> Store::members(const std::string& run_id, bool active_only) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kMemberColumns, " FROM members WHERE run_id = ?",
                        active_only ? " AND status = 'active'" : "", " ORDER BY member_id")
                        .c_str());
  s.bind(1, run_id);
  std::vector<MemberRecord> out;
  while (s.step()) out.push_back(read_member(s));
  return out;
}

void Store::set_member_status(const std::string& run_id, std::int64_t member_id, MemberStatus status) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "UPDATE members SET status = ? WHERE run_id = ? AND member_id = ?")
      .bind(1, to_string(status))
      .bind(2, run_id)
      .bind(3, member_id)
      .run();
}

void Store::heartbeat(const std::string& run_id, std::int64_t member_id, double time, double tokens_per_s) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "UPDATE members SET last_heartbeat = ?, tokens_per_s = ? WHERE run_id = ? AND member_id = ?")
      .bind(1, time)
      .bind(2, tokens_per_s)
      .bind(3, run_id)
      .bind(4, member_id)
      .run();
}

void Store::begin_round(const RoundRecord& r) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("INSERT OR REPLACE INTO rounds (", kRoundColumns, ") VALUES (?,?,?,?,?,?,?,?,?)").c_str());
  s.bind(1, r.run_id).bind(2, r.round).bind(3, r.attempt).bind(4, to_string(r.status));
  s.bind(5, nlohmann::json(r.participants).dump()).bind(6, r.started_at).bind(7, r.finished_at);
  s.bind(8, r.bytes).bind(9, r.theta_hash).run();
}

void Store::finish_round(const std::string& run_id, std::int64_t round, RoundStatus status, std::int64_t bytes,
                         const std::string& theta_hash, double finished_at) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "UPDATE rounds SET status = ?, bytes = ?, theta_hash = ?, finished_at = ? WHERE run_id = ? AND round = ?");
  s.bind(1, to_string(status))
      .bind(2, bytes)
      .bind(3, theta_hash)
      .bind(4, finished_at)
      .bind(5, run_id)
      .bind(6, round)
      .run();
}

std::optional<RoundRecord> Store::round(const std::string& run_id, std::int64_t round) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kRoundColumns, " FROM rounds WHERE run_id = ? AND round = ?").c_str());
  if (!s.bind(1, run_id).bind(2, round).step()) return std::nullopt;
  return read_round(s);
}

std::vector<RoundRecord> Store::rounds(const std::string& run_id, std::int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT ", kRoundColumns, " FROM rounds WHERE run_id = ? ORDER BY round DESC LIMIT ?").c_str());
  s.bind(1, run_id).bind(2, limit);
  std::vector<RoundRecord> out;
  while (s.step()) out.push_back(read_round(s));
  return out;
}

void Store::save_ready(const std::string& run_id, std::int64_t round, const ReadyRecord& r) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "INSERT OR REPLACE INTO round_ready (run_id, round, member_id, tokens, inner_steps, compute_seconds, "
         "delta_norm, finite) VALUES (?,?,?,?,?,?,?,?)");
  s.bind(1, run_id).bind(2, round).bind(3, r.member_id).bind(4, r.tokens).bind(5, r.inner_steps);
  s.bind(6, r.compute_seconds).bind(7, r.delta_norm).bind(8, r.finite ? 1 : 0).run();
}

std::vector<ReadyRecord> Store::ready_reports(const std::string& run_id, std::int64_t round) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "SELECT member_id, tokens, inner_steps, compute_seconds, delta_norm, finite FROM round_ready "
         "WHERE run_id = ? AND round = ? ORDER BY member_id");
  s.bind(1, run_id).bind(2, round);
  std::vector<ReadyRecord> out;
  while (s.step()) out.push_back({s.i64(0), s.i64(1), s.i64(2), s.f64(3), s.f64(4), s.i64(5) != 0});
  return out;
}

void Store::save_result(const std::string& run_id, std::int64_t round, std::int64_t attempt, const ResultRecord& r) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "INSERT OR REPLACE INTO round_results (run_id, round, attempt, member_id, ok, theta_hash, bytes_sent, error) "
         "VALUES (?,?,?,?,?,?,?,?)");
  s.bind(1, run_id).bind(2, round).bind(3, attempt).bind(4, r.member_id).bind(5, r.ok ? 1 : 0);
  s.bind(6, r.theta_hash).bind(7, r.bytes_sent).bind(8, r.error).run();
}

std::vector<ResultRecord> Store::results(const std::string& run_id, std::int64_t round, std::int64_t attempt) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "SELECT member_id, ok, theta_hash, bytes_sent, error FROM round_results "
         "WHERE run_id = ? AND round = ? AND attempt = ? ORDER BY member_id");
  s.bind(1, run_id).bind(2, round).bind(3, attempt);
  std::vector<ResultRecord> out;
  while (s.step()) out.push_back({s.i64(0), s.i64(1) != 0, s.text(2), s.i64(3), s.text(4)});
  return out;
}

namespace {
void credit_locked(sqlite3* db, const std::string& run_id, const LedgerRow& d) {
  Stmt s(db,
         "INSERT INTO ledger (run_id, public_key, tokens, inner_steps, rounds_accepted, rounds_rejected, "
         "compute_seconds, bytes_sent) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (run_id, public_key) DO UPDATE SET "
         "tokens = tokens + excluded.tokens, inner_steps = inner_steps + excluded.inner_steps, "
         "rounds_accepted = rounds_accepted + excluded.rounds_accepted, "
         "rounds_rejected = rounds_rejected + excluded.rounds_rejected, "
         "compute_seconds = compute_seconds + excluded.compute_seconds, bytes_sent = bytes_sent + excluded.bytes_sent");
  s.bind(1, run_id).bind(2, d.public_key).bind(3, d.tokens).bind(4, d.inner_steps).bind(5, d.rounds_accepted);
  s.bind(6, d.rounds_rejected).bind(7, d.compute_seconds).bind(8, d.bytes_sent).run();
}
}  // namespace

void Store::credit(const std::string& run_id, const LedgerRow& d) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  credit_locked(impl_->db, run_id, d);
}

void Store::commit_round(const std::string& run_id, std::int64_t round, std::int64_t bytes,
                         const std::string& theta_hash, double finished_at, const std::vector<LedgerRow>& credits,
                         const RoundStats* stats) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  exec(impl_->db, "BEGIN IMMEDIATE", impl_->path);
  try {
    Stmt s(
        impl_->db,
        "UPDATE rounds SET status = 'done', bytes = ?, theta_hash = ?, finished_at = ? WHERE run_id = ? AND round = ?");
    s.bind(1, bytes).bind(2, theta_hash).bind(3, finished_at).bind(4, run_id).bind(5, round).run();
    for (const auto& row : credits) credit_locked(impl_->db, run_id, row);
    Stmt(impl_->db, "UPDATE runs SET round = ? WHERE run_id = ?").bind(1, round).bind(2, run_id).run();
    if (stats != nullptr) {
      const RoundStats& st = *stats;
      Stmt r(impl_->db, str("INSERT OR REPLACE INTO round_stats (", kRoundStatsColumns,
                            ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
                            .c_str());
      r.bind(1, run_id).bind(2, st.round).bind(3, st.attempts).bind(4, st.participants).bind(5, st.rejected);
      r.bind(6, st.tokens).bind(7, st.run_tokens).bind(8, st.loss).bind(9, st.val_loss).bind(10, st.val_reports);
      r.bind(11, st.compute_s).bind(12, st.wait_s).bind(13, st.comm_s).bind(14, st.round_s).bind(15, st.committed_at);
      r.bind(16, st.bytes).bind(17, st.ddp_bytes).run();
    }
    exec(impl_->db, "COMMIT", impl_->path);
  } catch (...) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<LedgerRow> Store::ledger(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "SELECT public_key, tokens, inner_steps, rounds_accepted, rounds_rejected, compute_seconds, bytes_sent "
         "FROM ledger WHERE run_id = ? ORDER BY tokens DESC, public_key");
  s.bind(1, run_id);
  std::vector<LedgerRow> out;
  while (s.step()) out.push_back({s.text(0), s.i64(1), s.i64(2), s.i64(3), s.i64(4), s.f64(5), s.i64(6)});
  return out;
}

std::vector<RoundStats> Store::round_stats(const std::string& run_id, std::int64_t after_round,
                                           std::int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, str("SELECT * FROM (SELECT ", kRoundStatsColumns,
                        " FROM round_stats WHERE run_id = ? AND round > ? ORDER BY round DESC LIMIT ?) ORDER BY round")
                        .c_str());
  s.bind(1, run_id).bind(2, after_round).bind(3, limit);
  std::vector<RoundStats> out;
  while (s.step()) {
    RoundStats r;
    r.round = s.i64(1);
    r.attempts = s.i64(2);
    r.participants = s.i64(3);
    r.rejected = s.i64(4);
    r.tokens = s.i64(5);
    r.run_tokens = s.i64(6);
    r.loss = s.f64_or_nan(7);
    r.val_loss = s.f64_or_nan(8);
    r.val_reports = s.i64(9);
    r.compute_s = s.f64_or_nan(10);
    r.wait_s = s.f64_or_nan(11);
    r.comm_s = s.f64_or_nan(12);
    r.round_s = s.f64_or_nan(13);
    r.committed_at = s.f64(14);
    r.bytes = s.i64(15);
    r.ddp_bytes = s.i64(16);
    out.push_back(r);
  }
  return out;
}

void Store::add_val_loss(const std::string& run_id, std::int64_t round, double val_loss) {
  if (!std::isfinite(val_loss)) return;
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db,
         "UPDATE round_stats SET val_loss = (COALESCE(val_loss, 0) * val_reports + ?) / (val_reports + 1), "
         "val_reports = val_reports + 1 WHERE run_id = ? AND round = ?");
  s.bind(1, val_loss).bind(2, run_id).bind(3, round).run();
}

void Store::log_event(const std::string& run_id, const std::string& kind, const std::string& detail, double time) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "INSERT INTO events (run_id, time, kind, detail) VALUES (?,?,?,?)")
      .bind(1, run_id)
      .bind(2, time)
      .bind(3, kind)
      .bind(4, detail)
      .run();
}

std::vector<EventRecord> Store::events(const std::string& run_id, std::int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, "SELECT time, kind, detail, id FROM events WHERE run_id = ? ORDER BY id DESC LIMIT ?");
  s.bind(1, run_id).bind(2, limit);
  std::vector<EventRecord> out;
  while (s.step()) out.push_back({s.f64(0), s.text(1), s.text(2), s.i64(3)});
  return out;
}

std::vector<EventRecord> Store::events_after(const std::string& run_id, std::int64_t after_id,
                                             std::int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(
      impl_->db,
      "SELECT * FROM (SELECT time, kind, detail, id FROM events WHERE run_id = ? AND id > ? ORDER BY id DESC LIMIT ?) "
      "ORDER BY id");
  s.bind(1, run_id).bind(2, after_id).bind(3, limit);
  std::vector<EventRecord> out;
  while (s.step()) out.push_back({s.f64(0), s.text(1), s.text(2), s.i64(3)});
  return out;
}

void Store::record_loss(const std::string& run_id, const LossRecord& l) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt(impl_->db, "INSERT INTO losses (run_id, member_id, step, loss, time) VALUES (?,?,?,?,?)")
      .bind(1, run_id)
      .bind(2, l.member_id)
      .bind(3, l.step)
      .bind(4, l.loss)
      .bind(5, l.time)
      .run();
}

std::vector<LossRecord> Store::losses(const std::string& run_id, std::int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stmt s(impl_->db, "SELECT member_id, step, loss, time FROM losses WHERE run_id = ? ORDER BY id DESC LIMIT ?");
  s.bind(1, run_id).bind(2, limit);
  std::vector<LossRecord> out;
  while (s.step()) out.push_back({s.i64(0), s.i64(1), s.f64(2), s.f64(3)});
  return out;
}

}  // namespace pico::broker
