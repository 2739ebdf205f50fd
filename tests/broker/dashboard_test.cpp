// What the dashboard shows, from the broker's state machine driven with a fake clock: round
// stats (time split, loss, val loss, bytes vs ddp), the event log, pausing, operator
// evictions, and the Prometheus rendering. (The HTTP listener and a real browser are in
// dashboard_http_test.cpp and dashboard_browser_test.cpp.)
#include "pico/broker/dashboard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <regex>

#include "pico/broker/core.h"
#include "support/test_util.h"

namespace pico::broker {
namespace {

constexpr std::int64_t kParams = 1000;

// A core on a fresh store, and members that speak to it at times the test chooses.
struct LiveRun {
  test::TempDir dir;
  std::unique_ptr<Store> store = Store::open(dir.file("broker.db"));
  BrokerOptions opt = [this] {
    BrokerOptions o;
    o.member_timeout_s = 100;
    o.result_timeout_s = 100;
    o.snapshot_dir = dir.file("snapshots");
    return o;
  }();
  std::unique_ptr<BrokerCore> core = std::make_unique<BrokerCore>(*store, opt, 0.0);
  double now = 0;

  std::vector<Outgoing> send(const std::string& peer, MessageType t, nlohmann::json body) {
    Message m;
    m.type = t;
    m.request_id = 1;
    m.body = std::move(body);
    return core->handle({peer, "key-" + peer, std::move(m)}, now);
  }
  void create(std::int64_t min_members = 1) {
    auto out = send("creator", MessageType::kCreateRun,
                    {{"run_id", "r"},
                     {"config_yaml", "seed: 1\n"},
                     {"dataset_hash", "D"},
                     {"num_shards", 4},
                     {"private", false},
                     {"token_sha256", ""},
                     {"theta0_hash", "H0"},
                     {"min_members", min_members},
                     {"algorithm", "diloco H=10 bf16"},
                     {"model_params", kParams}});
    ASSERT_EQ(out.at(0).message.type, MessageType::kAck) << out.at(0).message.body.dump();
  }
  std::int64_t join(const std::string& peer) {
    auto out = send(peer, MessageType::kJoin,
                    {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "tcp://x:" + peer}});
    EXPECT_EQ(out.at(0).message.type, MessageType::kAck) << out.at(0).message.body.dump();
    return out.at(0).message.body.value("member_id", std::int64_t{-1});
  }
  std::vector<Outgoing> ready(const std::string& peer, std::int64_t id, std::int64_t round, double loss,
                              double compute_s = 2.0, double norm = 1.0) {
    return send(peer, MessageType::kReady,
                {{"run_id", "r"},
                 {"member_id", id},
                 {"round", round},
                 {"base_round", round - 1},
                 {"tokens", 100},
                 {"inner_steps", 10},
                 {"compute_seconds", compute_s},
                 {"delta_norm", norm},
                 {"finite", true},
                 {"loss", loss}});
  }
  std::vector<Outgoing> result(const std::string& peer, std::int64_t id, std::int64_t round,
                               const std::string& hash = "H") {
    return send(peer, MessageType::kRoundResult,
                {{"run_id", "r"},
                 {"member_id", id},
                 {"round", round},
                 {"attempt", 1},
                 {"ok", true},
                 {"theta_hash", hash},
                 {"bytes_sent", 1000}});
  }
  void heartbeat(const std::string& peer, std::int64_t id, std::int64_t base, nlohmann::json extra = {}) {
    nlohmann::json body = {{"run_id", "r"}, {"member_id", id},      {"base_round", base},
                           {"step", 10},    {"tokens_per_s", 50.0}, {"loss", 3.0}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    send(peer, MessageType::kHeartbeat, body);
  }
  RunView view(ViewQuery q = {}) { return core->run_view("r", q, now).value(); }
  std::vector<std::string> event_kinds() {
    std::vector<std::string> kinds;
    for (const auto& e : view().events) kinds.push_back(e.kind);
    return kinds;
  }
};

std::size_t count(const std::vector<Outgoing>& out, MessageType t) {
  std::size_t n = 0;
  for (const auto& o : out) n += o.message.type == t;
  return n;
}

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Dashboard, RoundStatsSplitComputeWaitAndCommunicationOnTheBrokersClock) {
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b");
  r.now = 10;
  r.ready("a", a, 1, /*loss=*/3.0, /*compute_s=*/2.0);
  r.now = 12;  // b is 2 s later: a waits 2 s, b not at all
  ASSERT_EQ(count(r.ready("b", b, 1, /*loss=*/2.0, /*compute_s=*/4.0), MessageType::kRoundStart), 2u);
  r.now = 13;
  r.result("a", a, 1);
  r.now = 14;
  r.result("b", b, 1);
  const RunView v = r.view();
  ASSERT_EQ(v.rounds.size(), 1u);
  const RoundStats& s = v.rounds[0];
  EXPECT_EQ(s.round, 1);
  EXPECT_EQ(s.participants, 2);
  EXPECT_EQ(s.tokens, 200);
  EXPECT_EQ(s.run_tokens, 200);
  EXPECT_DOUBLE_EQ(s.loss, 2.5);       // mean of the losses the members sent with `ready`
  EXPECT_DOUBLE_EQ(s.compute_s, 3.0);  // mean of 2 and 4
  EXPECT_DOUBLE_EQ(s.wait_s, 1.0);     // mean of 2 and 0
  EXPECT_DOUBLE_EQ(s.comm_s, 1.5);     // mean of 1 and 2
  EXPECT_TRUE(std::isnan(s.round_s));  // no commit before the first
  EXPECT_TRUE(std::isnan(s.val_loss));
  EXPECT_EQ(s.bytes, 2000);
  // ddp: 10 steps × 2(n−1) × 4 bytes × params, n = 2.
  EXPECT_EQ(s.ddp_bytes, 10 * 2 * 1 * 4 * kParams);
  EXPECT_DOUBLE_EQ(s.committed_at, 14.0);

  // Validation losses of round 1 arrive with heartbeats; each member's counts once.
  r.heartbeat("a", a, 1, {{"val_loss", 4.0}, {"val_round", 1}});
  r.heartbeat("a", a, 1, {{"val_loss", 4.0}, {"val_round", 1}});
  r.heartbeat("b", b, 1, {{"val_loss", 5.0}, {"val_round", 1}});
  r.heartbeat("b", b, 1, {{"val_loss", 9.0}, {"val_round", 7}});    // a round not committed: ignored
  r.heartbeat("b", b, 1, {{"val_loss", "NaN"}, {"val_round", 1}});  // wrong type: ignored, not refused
  const RoundStats s1 = r.view().rounds.at(0);
  EXPECT_DOUBLE_EQ(s1.val_loss, 4.5);
  EXPECT_EQ(s1.val_reports, 2);

  // Round 2 takes 6 s from commit to commit; only new rounds come back after rounds_after.
  r.now = 16;
  r.ready("a", a, 2, 2.0);
  r.ready("b", b, 2, 2.0);
  r.now = 20;
  r.result("a", a, 2, "H2");
  r.result("b", b, 2, "H2");
  ViewQuery q;
  q.rounds_after = 1;
  const RunView v2 = r.view(q);
  ASSERT_EQ(v2.rounds.size(), 1u);
  EXPECT_EQ(v2.rounds[0].round, 2);
  EXPECT_DOUBLE_EQ(v2.rounds[0].round_s, 6.0);
  EXPECT_EQ(v2.rounds[0].run_tokens, 400);
  EXPECT_EQ(v2.tokens, 400);
  EXPECT_EQ(v2.bytes_sent, 4000);
  EXPECT_EQ(v2.algorithm, "diloco H=10 bf16");
  EXPECT_EQ(v2.model_params, kParams);

  // The stats are durable: a restarted broker shows the same rounds, with round_s going on.
  r.core = std::make_unique<BrokerCore>(*r.store, r.opt, r.now);
  const RunView v3 = r.view();
  ASSERT_EQ(v3.rounds.size(), 2u);
  EXPECT_DOUBLE_EQ(v3.rounds[0].val_loss, 4.5);
  EXPECT_DOUBLE_EQ(v3.rounds[1].round_s, 6.0);
}

TEST(Dashboard, PausedRunsStartNoRoundUntilResumedEvenAfterARestart) {
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b");
  EXPECT_TRUE(r.core->operator_pause("r", true, r.now).empty());
  EXPECT_TRUE(r.view().paused);
  EXPECT_EQ(r.view().phase, RunPhase::kPaused);
  r.ready("a", a, 1, 3.0);
  EXPECT_EQ(count(r.ready("b", b, 1, 3.0), MessageType::kRoundStart), 0u);  // everyone ready, but paused
  // A broker restarted meanwhile is still paused (members report where they are, as after any restart).
  r.core = std::make_unique<BrokerCore>(*r.store, r.opt, r.now);
  r.heartbeat("a", a, 0);
  r.heartbeat("b", b, 0);
  EXPECT_TRUE(r.view().paused);
  r.ready("a", a, 1, 3.0);
  EXPECT_EQ(count(r.ready("b", b, 1, 3.0), MessageType::kRoundStart), 0u);
  // Resuming starts the round that was waiting.
  const auto out = r.core->operator_pause("r", false, r.now);
  EXPECT_EQ(count(out, MessageType::kRoundStart), 2u);
  EXPECT_FALSE(r.view().paused);
  EXPECT_EQ(r.view().phase, RunPhase::kRound);
  const auto kinds = r.event_kinds();
  EXPECT_TRUE(has(kinds, "paused"));
  EXPECT_TRUE(has(kinds, "resumed"));
  // Unknown runs are refused by kind (the HTTP layer answers 404).
  try {
    r.core->operator_pause("nope", true, r.now);
    FAIL() << "pausing an unknown run succeeded";
  } catch (const OperatorError& e) {
    EXPECT_EQ(e.kind, OperatorError::Kind::kNotFound);
  }
}

TEST(Dashboard, AnOperatorEvictionTellsTheMemberAndRefusesItsKeyAfterwards) {
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b");
  const auto out = r.core->operator_evict("r", b, r.now);
  ASSERT_EQ(count(out, MessageType::kEvicted), 1u);
  EXPECT_EQ(out[0].peer, "b");
  const auto again = r.send("b", MessageType::kJoin,
                            {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "tcp://x:b"}});
  ASSERT_EQ(again.at(0).message.type, MessageType::kError);
  EXPECT_NE(again[0].message.body["reason"].get<std::string>().find("removed your key"), std::string::npos);
  EXPECT_FALSE(again[0].message.body["hint"].get<std::string>().empty());
  const RunView v = r.view();
  EXPECT_EQ(v.active_members, 1);
  ASSERT_EQ(v.members.size(), 2u);
  EXPECT_EQ(v.members[0].member_id, a);
  EXPECT_EQ(v.members[1].status, MemberStatus::kEvicted);
  EXPECT_TRUE(has(r.event_kinds(), "evict"));
  try {
    r.core->operator_evict("r", b, r.now);  // no longer active
    FAIL() << "evicting an evicted member succeeded";
  } catch (const OperatorError& e) {
    EXPECT_EQ(e.kind, OperatorError::Kind::kNotFound);
  }
}

TEST(Dashboard, TheEventLogHasJoinsLeavesEvictionsRejectionsAndResyncsInOrder) {
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b"), c = r.join("c");
  // c's update is 100× the median: rejected (weight 0) in this public run.
  r.ready("a", a, 1, 3.0, 2.0, 1.0);
  r.ready("b", b, 1, 3.0, 2.0, 1.0);
  r.ready("c", c, 1, 3.0, 2.0, 100.0);
  // b disagrees about θ_g: resynced.
  r.result("a", a, 1, "H");
  r.result("b", b, 1, "X");
  r.result("c", c, 1, "H");
  r.send("c", MessageType::kLeave, {{"run_id", "r"}, {"member_id", c}});
  r.now = 500;  // a and b silent for longer than member_timeout_s
  r.core->tick(r.now);
  const RunView v = r.view();
  std::vector<std::string> kinds;
  for (const auto& e : v.events) kinds.push_back(e.kind);
  for (const char* k :
       {"run_created", "join", "update_rejected", "round_done", "hash_mismatch", "resync", "leave", "evict"})
    EXPECT_TRUE(has(kinds, k)) << k << " missing from the event log";
  EXPECT_EQ(v.rounds.at(0).rejected, 1);
  EXPECT_EQ(v.rounds_rejected, 1);
  // Oldest first, ids increasing; events_after returns only what is newer.
  for (std::size_t i = 1; i < v.events.size(); ++i) EXPECT_GT(v.events[i].id, v.events[i - 1].id);
  ViewQuery q;
  q.events_after = v.events[v.events.size() - 3].id;
  const RunView tail = r.view(q);
  ASSERT_EQ(tail.events.size(), 2u);
  EXPECT_EQ(tail.events.back().id, v.events.back().id);
  q.events_after = v.events.back().id;
  EXPECT_TRUE(r.view(q).events.empty());
}

TEST(Dashboard, AMemberEvictedMidRoundIsCreditedForTheRoundItTookPartIn) {
  // (Found by the dashboard: the ledger showed garbage for a member evicted during a round
  // that the others then completed — its ready report was gone when the round committed.)
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b"), c = r.join("c");
  r.ready("a", a, 1, 3.0);
  r.ready("b", b, 1, 3.0);
  ASSERT_EQ(count(r.ready("c", c, 1, 3.0), MessageType::kRoundStart), 3u);
  r.core->operator_evict("r", c, r.now);  // c took part in the all-reduce, then was removed
  r.result("a", a, 1);
  r.result("b", b, 1);
  const RunView v = r.view();
  ASSERT_EQ(v.round, 1);
  ASSERT_EQ(v.ledger.size(), 3u);
  for (const auto& row : v.ledger) {
    EXPECT_EQ(row.tokens, 100) << row.public_key;
    EXPECT_EQ(row.inner_steps, 10) << row.public_key;
    EXPECT_EQ(row.rounds_accepted, 1) << row.public_key;
  }
  EXPECT_EQ(v.rounds.at(0).tokens, 300);
  EXPECT_EQ(v.rounds.at(0).participants, 3);
}

TEST(Dashboard, ViewsOfUnknownRunsAreEmptyAndFinishedRunsStayVisible) {
  LiveRun r;
  r.create();
  const auto a = r.join("a");
  EXPECT_FALSE(r.core->run_view("nope", {}, r.now).has_value());
  r.ready("a", a, 1, 3.0);
  r.result("a", a, 1);
  r.send("a", MessageType::kRunFinished,
         {{"run_id", "r"}, {"member_id", a}, {"round", 1}, {"val_loss", 2.75}, {"val_round", 1}});
  RunView v = r.view();
  EXPECT_EQ(v.phase, RunPhase::kFinished);
  EXPECT_DOUBLE_EQ(v.rounds.at(0).val_loss, 2.75);  // the last round's val loss comes with run_finished
  // Restarted, the broker keeps only active runs in memory; the finished one is read from the store.
  r.core = std::make_unique<BrokerCore>(*r.store, r.opt, r.now);
  v = r.view();
  EXPECT_EQ(v.status, RunStatus::kFinished);
  EXPECT_EQ(v.round, 1);
  EXPECT_EQ(v.rounds.size(), 1u);
  EXPECT_EQ(r.core->run_ids(), std::vector<std::string>{"r"});
  try {
    r.core->operator_pause("r", true, r.now);
    FAIL();
  } catch (const OperatorError& e) {
    EXPECT_EQ(e.kind, OperatorError::Kind::kNotFound);  // not an active run any more
  }
}

TEST(Dashboard, AStateFileOfSchema2OpensWithoutTheDashboardsColumnsAndGetsThem) {
  test::TempDir dir;
  {
    LiveRun r;
    r.create();
    r.join("a");
    r.core.reset();
    r.store.reset();
    std::filesystem::copy_file(r.dir.file("broker.db"), dir.file("b.db"));
  }
  // Make it a version-2 file: what a broker before the dashboard wrote.
  const auto sql =
      test::run_command("sqlite3 " + dir.file("b.db") +
                        " \"ALTER TABLE runs DROP COLUMN algorithm; ALTER TABLE runs DROP COLUMN model_params; "
                        "ALTER TABLE runs DROP COLUMN paused; DROP TABLE round_stats; DROP TABLE banned; "
                        "UPDATE meta SET value = '2' WHERE key = 'schema_version';\"");
  ASSERT_EQ(sql.exit_code, 0) << sql.output;
  auto store = Store::open(dir.file("b.db"));
  const auto run = store->run("r");
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->algorithm, "");
  EXPECT_EQ(run->model_params, 0);
  EXPECT_FALSE(run->paused);
  EXPECT_TRUE(store->round_stats("r", -1, 10).empty());
  store->set_run_paused("r", true);
  EXPECT_TRUE(store->run("r")->paused);
  EXPECT_EQ(
      test::run_command("sqlite3 " + dir.file("b.db") + " \"SELECT value FROM meta WHERE key = 'schema_version'\"")
          .output,
      "3\n");
}

TEST(Dashboard, PrometheusTextNamesEveryFamilyOnceWithHelpTypeAndEscapedLabels) {
  LiveRun r;
  r.create();
  const auto a = r.join("a"), b = r.join("b");
  r.ready("a", a, 1, 3.0);
  r.ready("b", b, 1, 2.0);
  r.result("a", a, 1);
  r.result("b", b, 1);
  RunView v = r.view();
  v.algorithm = "quote \" backslash \\ newline \n end";
  const std::string text = prometheus_text({v});
  // Every sample line: name{labels} value, names from a HELP/TYPE pair seen before.
  std::set<std::string> typed;
  std::istringstream in(text);
  int samples = 0;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, std::regex(R"(# TYPE (\w+) (gauge|counter))"))) {
      EXPECT_TRUE(typed.insert(m[1]).second) << "family declared twice: " << m[1];
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    ASSERT_TRUE(std::regex_match(line, m, std::regex(R"((\w+)(\{.*\})? (\S+))"))) << line;
    EXPECT_TRUE(typed.count(m[1])) << "sample before its TYPE: " << line;
    ++samples;
  }
  EXPECT_GT(samples, 20);
  EXPECT_NE(text.find("pico_run_rounds_total{run=\"r\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pico_run_members{run=\"r\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("pico_run_loss{run=\"r\"} 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("pico_run_round_bytes_ratio_to_ddp{run=\"r\"} 0.025\n"),
            std::string::npos);  // 2000 / (10·2·4·1000)
  EXPECT_NE(text.find("pico_member_tokens_total{run=\"r\",member=\"0\",device=\"cpu\"} 100\n"), std::string::npos);
  EXPECT_NE(text.find(R"(algorithm="quote \" backslash \\ newline \n end")"), std::string::npos);
  EXPECT_NE(text.find("pico_run_val_loss{run=\"r\"} NaN\n"), std::string::npos);  // none reported yet
}

}  // namespace
}  // namespace pico::broker
