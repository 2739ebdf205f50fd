// The broker's state machine driven directly: rounds, failures, snapshots, the ledger,
// refusals and a restart on the same store.
#include "pico/broker/core.h"

#include <gtest/gtest.h>

#include "pico/common/error.h"
#include "pico/common/hash.h"
#include "support/test_util.h"

namespace pico::broker {
namespace {

Message msg(MessageType t, nlohmann::json body, std::uint64_t id = 1, std::string blob = "") {
  Message m;
  m.type = t;
  m.request_id = id;
  m.body = std::move(body);
  m.blob = std::move(blob);
  return m;
}

struct Harness {
  test::TempDir dir;
  std::unique_ptr<Store> store = Store::open(dir.file("broker.db"));
  BrokerOptions opt = [this] {
    BrokerOptions o;
    o.member_timeout_s = 10;
    o.result_timeout_s = 60;
    o.snapshot_dir = dir.file("snapshots");
    o.snapshot_chunk_bytes = 1000;
    return o;
  }();
  std::unique_ptr<BrokerCore> core = std::make_unique<BrokerCore>(*store, opt, 0.0);
  double now = 0;

  std::vector<Outgoing> send(const std::string& peer, MessageType t, nlohmann::json body, std::string blob = "") {
    return core->handle({peer, "key-" + peer, msg(t, std::move(body), 1, std::move(blob))}, now);
  }
  void restart() {  // a new process: the store reopened from its file
    core.reset();
    store.reset();
    store = Store::open(dir.file("broker.db"));
    core = std::make_unique<BrokerCore>(*store, opt, now);
  }
  void create(bool is_private = false, const std::string& token = "") {
    auto out = send("creator", MessageType::kCreateRun,
                    {{"run_id", "r"},
                     {"config_yaml", "seed: 1\n"},
                     {"dataset_hash", "D"},
                     {"num_shards", 4},
                     {"private", is_private},
                     {"token_sha256", token.empty() ? "" : sha256_hex(token)},
                     {"theta0_hash", "H0"},
                     {"prepare_command", "pico data prepare --input kjv.txt"}});
    ASSERT_EQ(out.at(0).message.type, MessageType::kAck);
  }
  std::int64_t join(const std::string& peer, const std::string& dataset = "D") {
    auto out = send(peer, MessageType::kJoin,
                    {{"run_id", "r"}, {"dataset_hash", dataset}, {"device", "cpu"}, {"endpoint", "tcp://x:" + peer}});
    EXPECT_EQ(out.at(0).message.type, MessageType::kAck) << out.at(0).message.body.dump();
    return out.at(0).message.body.value("member_id", -1);
  }
  std::vector<Outgoing> ready(const std::string& peer, std::int64_t id, std::int64_t round, double norm = 1.0,
                              bool finite = true) {
    return send(peer, MessageType::kReady,
                {{"run_id", "r"},
                 {"member_id", id},
                 {"round", round},
                 {"base_round", round - 1},
                 {"tokens", 100},
                 {"inner_steps", 10},
                 {"compute_seconds", 2.0},
                 {"delta_norm", norm},
                 {"finite", finite}});
  }
  std::vector<Outgoing> result(const std::string& peer, std::int64_t id, std::int64_t round, std::int64_t attempt,
                               bool ok, const std::string& hash = "H") {
    return send(peer, MessageType::kRoundResult,
                {{"run_id", "r"},
                 {"member_id", id},
                 {"round", round},
                 {"attempt", attempt},
                 {"ok", ok},
                 {"theta_hash", hash},
                 {"bytes_sent", 1000}});
  }
  void heartbeat(const std::string& peer, std::int64_t id, std::int64_t base) {
    send(peer, MessageType::kHeartbeat,
         {{"run_id", "r"}, {"member_id", id}, {"base_round", base}, {"step", 1}, {"tokens_per_s", 5.0}, {"loss", 3.0}});
  }
};

std::vector<Outgoing> of_type(const std::vector<Outgoing>& out, MessageType t) {
  std::vector<Outgoing> r;
  for (const auto& o : out)
    if (o.message.type == t) r.push_back(o);
  return r;
}

TEST(BrokerCore, ARoundStartsWhenEveryMemberIsReadyAndCommitsOnAgreement) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b");
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 1);
  EXPECT_TRUE(of_type(h.ready("a", a, 1), MessageType::kRoundStart).empty());  // b still training
  const auto start = of_type(h.ready("b", b, 1), MessageType::kRoundStart);
  ASSERT_EQ(start.size(), 2u);
  const auto& members = start[0].message.body["members"];
  ASSERT_EQ(members.size(), 2u);
  EXPECT_EQ(members[0]["endpoint"], "tcp://x:a");
  EXPECT_EQ(members[1]["rank"], 1);
  h.result("a", a, 1, 1, true);
  h.result("b", b, 1, 1, true);
  const auto run = h.store->run("r");
  EXPECT_EQ(run->round, 1);
  EXPECT_EQ(h.store->round("r", 1)->status, RoundStatus::kDone);
  EXPECT_EQ(h.store->round("r", 1)->theta_hash, "H");
  const auto ledger = h.store->ledger("r");
  ASSERT_EQ(ledger.size(), 2u);
  for (const auto& row : ledger) {
    EXPECT_EQ(row.tokens, 100);
    EXPECT_EQ(row.inner_steps, 10);
    EXPECT_EQ(row.rounds_accepted, 1);
    EXPECT_EQ(row.bytes_sent, 1000);
  }
}

TEST(BrokerCore, ADeadMemberIsEvictedAndTheRoundRetriedWithoutIt) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b"), c = h.join("c");
  h.ready("a", a, 1);
  h.ready("b", b, 1);
  h.ready("c", c, 1);
  // c dies in the collective: a and b fail and report so; c stays silent.
  h.now = 5;
  h.result("a", a, 1, 1, false);
  h.heartbeat("a", a, 0);
  h.heartbeat("b", b, 0);
  auto out = h.result("b", b, 1, 1, false);
  EXPECT_TRUE(of_type(out, MessageType::kRoundStart).empty());  // c has not reported yet
  h.now = 12;                                                   // c silent for 12 s > 10 s
  out = h.core->tick(h.now);
  const auto retry = of_type(out, MessageType::kRoundStart);
  ASSERT_EQ(retry.size(), 2u);
  EXPECT_EQ(retry[0].message.body["attempt"], 2);
  EXPECT_EQ(retry[0].message.body["members"].size(), 2u);
  EXPECT_EQ(h.store->members("r", true).size(), 2u);
  h.result("a", a, 1, 2, true);
  h.result("b", b, 1, 2, true);
  EXPECT_EQ(h.store->run("r")->round, 1);
  // c's update never counted
  for (const auto& row : h.store->ledger("r")) EXPECT_NE(row.public_key, "key-c");
}

TEST(BrokerCore, PartialSuccessCommitsAndResyncsTheMembersThatFailedOrDisagree) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b"), c = h.join("c");
  for (auto [p, id] : {std::pair{"a", a}, {"b", b}, {"c", c}}) h.ready(p, id, 1);
  h.result("a", a, 1, 1, true, "H");
  h.result("b", b, 1, 1, true, "X");  // disagrees: a bug, but it must not spread
  const auto out = h.result("c", c, 1, 1, false);
  EXPECT_EQ(h.store->round("r", 1)->theta_hash, "H");  // the majority among a, b is a tie → first hash wins
  const auto resync = of_type(out, MessageType::kResync);
  ASSERT_EQ(resync.size(), 2u);
  // a, in sync, is asked for a snapshot so that b and c can catch up.
  const auto req = of_type(out, MessageType::kSnapshotRequest);
  ASSERT_EQ(req.size(), 1u);
  EXPECT_EQ(req[0].peer, "a");
  bool logged = false;
  for (const auto& e : h.store->events("r", 20)) logged = logged || e.kind == "hash_mismatch";
  EXPECT_TRUE(logged);
}

// A member whose θ_g disagreed reports the round as its base (a heartbeat sent before it
// learned it is in the minority) after the broker told it to resync: that stale heartbeat must
// not count it as in sync, or it would never be sent the snapshot it waits for (and a run
// that needs it would wait forever). It is in sync once it has fetched the run's θ_g.
TEST(BrokerCore, AStaleHeartbeatDoesNotUndoAResync) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b"), c = h.join("c");
  for (auto [p, id] : {std::pair{"a", a}, {"b", b}, {"c", c}}) h.ready(p, id, 1);
  h.result("a", a, 1, 1, true, "H");
  h.result("b", b, 1, 1, true, "X");
  auto out = h.result("c", c, 1, 1, true, "H");
  ASSERT_EQ(of_type(out, MessageType::kResync).size(), 1u);
  const auto req = of_type(out, MessageType::kSnapshotRequest);
  ASSERT_EQ(req.size(), 1u);
  h.heartbeat("b", b, 1);  // stale: sent before b read its resync
  const std::string uploader = req[0].peer;
  const auto up = uploader == "a" ? a : c;
  const std::string snap(1500, 'x');
  for (int i = 0; i < 2; ++i)
    out = h.send(uploader, MessageType::kSnapshotPut,
                 {{"run_id", "r"},
                  {"member_id", up},
                  {"round", 1},
                  {"index", i},
                  {"count", 2},
                  {"bytes", 1500},
                  {"sha256", sha256_hex(snap)}},
                 snap.substr(static_cast<std::size_t>(i) * 1000, 1000));
  const auto ready = of_type(out, MessageType::kSnapshotReady);
  ASSERT_EQ(ready.size(), 1u) << "the resynced member was not told where θ_g is";
  EXPECT_EQ(ready[0].peer, "b");
  // Until b has fetched θ_g, round 2 does not wait for it; once it has, it does.
  h.ready("a", a, 2);
  EXPECT_EQ(of_type(h.ready("c", c, 2), MessageType::kRoundStart).size(), 2u);
  h.result("a", a, 2, 1, true, "H2");
  h.result("c", c, 2, 1, true, "H2");
  EXPECT_EQ(h.store->run("r")->round, 2);
}

class SnapshotPolicy : public ::testing::TestWithParam<int> {};

// snapshot_every_rounds = 1: the broker asks for θ_g as soon as a round commits;
// 0: only when a joiner needs it.
TEST_P(SnapshotPolicy, JoinersGetTheSnapshotOfTheLatestRound) {
  Harness h;
  h.opt.snapshot_every_rounds = GetParam();
  h.restart();
  h.create();
  const auto a = h.join("a");
  h.ready("a", a, 1);
  auto out = h.result("a", a, 1, 1, true, "H1");
  EXPECT_EQ(of_type(out, MessageType::kSnapshotRequest).size(), GetParam() > 0 ? 1u : 0u);
  // Round 1 is done; a trains round 2 from θ_g(1). Now d joins and needs θ_g(1).
  out = h.send("d", MessageType::kJoin,
               {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cuda:0"}, {"endpoint", "e"}});
  ASSERT_EQ(out.at(0).message.type, MessageType::kAck);
  EXPECT_TRUE(out.at(0).message.body["needs_snapshot"].get<bool>());
  const auto d = out.at(0).message.body["member_id"].get<std::int64_t>();
  EXPECT_EQ(of_type(out, MessageType::kSnapshotRequest).size(), GetParam() > 0 ? 0u : 1u);  // asked once
  // a uploads 2500 bytes in 3 chunks of 1000
  std::string snap(2500, '\0');
  for (std::size_t i = 0; i < snap.size(); ++i) snap[i] = static_cast<char>(i * 31);
  const std::string sha = sha256_hex(snap);
  for (int i = 0; i < 3; ++i) {
    out = h.send(
        "a", MessageType::kSnapshotPut,
        {{"run_id", "r"}, {"member_id", a}, {"round", 1}, {"index", i}, {"count", 3}, {"bytes", 2500}, {"sha256", sha}},
        snap.substr(static_cast<std::size_t>(i) * 1000, 1000));
    ASSERT_EQ(out.at(0).message.type, MessageType::kAck) << out.at(0).message.body.dump();
  }
  const auto ready = of_type(out, MessageType::kSnapshotReady);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].peer, "d");
  EXPECT_EQ(ready[0].message.body["sha256"], sha);
  std::string got;
  for (int i = 0; i < ready[0].message.body["chunks"].get<int>(); ++i) {
    out = h.send("d", MessageType::kSnapshotGet, {{"run_id", "r"}, {"member_id", d}, {"round", 1}, {"index", i}});
    ASSERT_EQ(out.at(0).message.type, MessageType::kAck);
    got += out.at(0).message.blob;
  }
  EXPECT_EQ(got, snap);
  // d reports θ_g(1) as its base: round 2 now waits for it too.
  h.heartbeat("d", d, 1);
  EXPECT_TRUE(of_type(h.ready("a", a, 2), MessageType::kRoundStart).empty());
  EXPECT_EQ(of_type(h.ready("d", d, 2), MessageType::kRoundStart).size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(BrokerCore, SnapshotPolicy, ::testing::Values(0, 1));

TEST(BrokerCore, ACorruptSnapshotUploadIsRejected) {
  Harness h;
  h.create();
  const auto a = h.join("a");
  h.ready("a", a, 1);
  h.result("a", a, 1, 1, true);
  h.send("d", MessageType::kJoin, {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "e"}});
  auto out = h.send("a", MessageType::kSnapshotPut,
                    {{"run_id", "r"},
                     {"member_id", a},
                     {"round", 1},
                     {"index", 0},
                     {"count", 1},
                     {"bytes", 3},
                     {"sha256", sha256_hex("abc")}},
                    "abd");
  EXPECT_TRUE(of_type(out, MessageType::kSnapshotReady).empty());
  EXPECT_EQ(of_type(out, MessageType::kSnapshotRequest).size(), 1u);  // asks again
  EXPECT_EQ(h.store->run("r")->snapshot_round, std::nullopt);
}

TEST(BrokerCore, PublicRunsRejectNonFiniteAndOutlierUpdates) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b"), c = h.join("c"), d = h.join("d");
  h.ready("a", a, 1, 1.0);
  h.ready("b", b, 1, 1.2);
  h.ready("c", c, 1, 500.0);  // 500 × the median
  const auto out = h.ready("d", d, 1, 1.0, /*finite=*/false);
  const auto start = of_type(out, MessageType::kRoundStart);
  ASSERT_EQ(start.size(), 4u);
  for (const auto& m : start[0].message.body["members"]) {
    const auto id = m["member_id"].get<std::int64_t>();
    EXPECT_EQ(m["weight"].get<double>(), (id == c || id == d) ? 0.0 : 1.0) << id;
  }
  for (auto [p, id] : {std::pair{"a", a}, {"b", b}, {"c", c}, {"d", d}}) h.result(p, id, 1, 1, true);
  for (const auto& row : h.store->ledger("r")) {
    const bool bad = row.public_key == "key-c" || row.public_key == "key-d";
    EXPECT_EQ(row.rounds_rejected, bad ? 1 : 0) << row.public_key;
    EXPECT_EQ(row.rounds_accepted, bad ? 0 : 1) << row.public_key;
    EXPECT_EQ(row.tokens, bad ? 0 : 100) << row.public_key;
  }
}

TEST(BrokerCore, RefusesWrongDatasetsPrivateRunsAndUnknownRunsClearly) {
  Harness h;
  h.create(/*private=*/true, "sesame");
  auto out = h.send("x", MessageType::kJoin,
                    {{"run_id", "r"}, {"dataset_hash", "OTHER"}, {"device", "cpu"}, {"endpoint", "e"}});
  ASSERT_EQ(out.at(0).message.type, MessageType::kError);
  EXPECT_NE(out.at(0).message.body["reason"].get<std::string>().find("not the run's"), std::string::npos);
  EXPECT_NE(out.at(0).message.body["hint"].get<std::string>().find("pico data prepare --input kjv.txt"),
            std::string::npos);
  out = h.send("x", MessageType::kJoin, {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "e"}});
  ASSERT_EQ(out.at(0).message.type, MessageType::kError);
  EXPECT_NE(out.at(0).message.body["reason"].get<std::string>().find("private"), std::string::npos);
  out = h.send("x", MessageType::kJoin,
               {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "e"}, {"token", "wrong"}});
  EXPECT_EQ(out.at(0).message.type, MessageType::kError);
  out = h.send("x", MessageType::kJoin,
               {{"run_id", "r"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "e"}, {"token", "sesame"}});
  EXPECT_EQ(out.at(0).message.type, MessageType::kAck);
  out = h.send("x", MessageType::kJoin,
               {{"run_id", "nope"}, {"dataset_hash", "D"}, {"device", "cpu"}, {"endpoint", "e"}});
  EXPECT_NE(out.at(0).message.body["reason"].get<std::string>().find("no active run 'nope'"), std::string::npos);
  // malformed: a missing field is an error reply, never a crash
  out = h.send("x", MessageType::kReady, {{"run_id", "r"}});
  EXPECT_EQ(out.at(0).message.type, MessageType::kError);
  out = h.send("x", MessageType::kReady, {{"run_id", "r"}, {"member_id", "zero"}});
  EXPECT_EQ(out.at(0).message.type, MessageType::kError);
  // another key cannot speak for member 0
  out = h.send("y", MessageType::kReady,
               {{"run_id", "r"},
                {"member_id", 0},
                {"round", 1},
                {"base_round", 0},
                {"tokens", 1},
                {"inner_steps", 1},
                {"compute_seconds", 1.0},
                {"delta_norm", 1.0},
                {"finite", true}});
  EXPECT_EQ(out.at(0).message.type, MessageType::kError);
}

TEST(BrokerCore, ARestartedBrokerFinishesTheRoundInFlight) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b");
  h.ready("a", a, 1);
  h.ready("b", b, 1);
  h.result("a", a, 1, 1, true);  // acknowledged, then the broker dies
  h.now = 3;
  h.restart();
  // b's result arrives at the new broker; a's was on disk.
  h.result("b", b, 1, 1, true);
  EXPECT_EQ(h.store->run("r")->round, 1);
  EXPECT_EQ(h.store->ledger("r").size(), 2u);
  // and the members carry on with round 2 after saying where they are
  h.heartbeat("a", a, 1);
  h.heartbeat("b", b, 1);
  h.ready("a", a, 2);
  EXPECT_EQ(of_type(h.ready("b", b, 2), MessageType::kRoundStart).size(), 2u);
}

TEST(BrokerCore, AMemberWhoseReportALostBrokerNeverGotIsNotSentBackForASnapshot) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b");
  h.ready("a", a, 1);
  h.ready("b", b, 1);
  h.result("a", a, 1, 1, true);  // b's report went to the broker that died
  h.now = 3;
  h.restart();
  h.heartbeat("a", a, 1);
  h.heartbeat("b", b, 1);
  // b trained round 2 and says ready, carrying the report of round 1 the broker lost.
  auto out = h.send(
      "b", MessageType::kReady,
      {{"run_id", "r"},
       {"member_id", b},
       {"round", 2},
       {"base_round", 1},
       {"tokens", 100},
       {"inner_steps", 10},
       {"compute_seconds", 2.0},
       {"delta_norm", 1.0},
       {"finite", true},
       {"last_result", {{"round", 1}, {"attempt", 1}, {"ok", true}, {"theta_hash", "H"}, {"bytes_sent", 1000}}}});
  EXPECT_TRUE(of_type(out, MessageType::kResync).empty());
  EXPECT_EQ(h.store->run("r")->round, 1);
  EXPECT_EQ(h.store->ledger("r").size(), 2u);
  EXPECT_EQ(of_type(h.ready("a", a, 2), MessageType::kRoundStart).size(), 2u);
}

TEST(BrokerCore, AMemberAheadOfAnUncommittedRoundIsAskedToRetryNotToResync) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b");
  h.ready("a", a, 1);
  h.ready("b", b, 1);
  h.result("b", b, 1, 1, true);  // a's report is still on its way
  const auto out = h.ready("b", b, 2);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].message.type, MessageType::kAck);
  EXPECT_EQ(out[0].message.body.value("retry_after_s", 0.0), 1.0);
  h.result("a", a, 1, 1, true);
  EXPECT_EQ(h.store->run("r")->round, 1);
  h.ready("a", a, 2);
  EXPECT_EQ(of_type(h.ready("b", b, 2), MessageType::kRoundStart).size(), 2u);
}

TEST(BrokerCore, ARoundWaitsForMinContributors) {
  Harness h;
  auto created = h.send("creator", MessageType::kCreateRun,
                        {{"run_id", "r"},
                         {"config_yaml", "seed: 1\n"},
                         {"dataset_hash", "D"},
                         {"num_shards", 4},
                         {"private", false},
                         {"token_sha256", ""},
                         {"theta0_hash", "H0"},
                         {"min_members", 2}});
  ASSERT_EQ(created.at(0).message.type, MessageType::kAck);
  const auto a = h.join("a");
  EXPECT_TRUE(of_type(h.ready("a", a, 1), MessageType::kRoundStart).empty());  // alone: waits
  const auto b = h.join("b");
  EXPECT_EQ(of_type(h.ready("b", b, 1), MessageType::kRoundStart).size(), 2u);
  // survives a restart
  h.restart();
  EXPECT_EQ(h.store->run("r")->min_members, 2);
  auto bad = h.send("creator", MessageType::kCreateRun,
                    {{"run_id", "r2"},
                     {"config_yaml", "x"},
                     {"dataset_hash", "D"},
                     {"num_shards", 4},
                     {"private", false},
                     {"token_sha256", ""},
                     {"theta0_hash", "H0"},
                     {"min_members", 0}});
  EXPECT_EQ(bad.at(0).message.type, MessageType::kError);
}

TEST(BrokerCore, AStaleHeartbeatDoesNotDropAMemberFromTheNextRound) {
  Harness h;
  h.create();
  const auto a = h.join("a"), b = h.join("b");
  h.ready("a", a, 1);
  h.ready("b", b, 1);
  h.result("a", a, 1, 1, true);
  h.result("b", b, 1, 1, true);
  h.heartbeat("b", b, 0);  // sent before b's result, delivered after the commit
  EXPECT_TRUE(of_type(h.ready("a", a, 2), MessageType::kRoundStart).empty());  // b is still training round 2
  EXPECT_EQ(of_type(h.ready("b", b, 2), MessageType::kRoundStart).size(), 2u);
}

TEST(BrokerCore, ALateMemberIsToldToResync) {
  Harness h;
  h.create();
  const auto a = h.join("a");
  h.ready("a", a, 1);
  const auto b = h.join("b");  // joins while round 1 is in flight
  h.result("a", a, 1, 1, true);
  const auto out = h.ready("b", b, 1);  // b trained from θ_g(0): too late
  EXPECT_EQ(of_type(out, MessageType::kResync).size(), 1u);
}

TEST(Protocol, DecoderRejectsEveryMalformedFrame) {
  Message m = msg(MessageType::kJoin, {{"run_id", "r"}}, 7, "blob");
  const std::string good = encode_message(m);
  std::string why;
  auto back = decode_message(reinterpret_cast<const std::uint8_t*>(good.data()), good.size(), why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(back->request_id, 7u);
  EXPECT_EQ(back->blob, "blob");
  auto bad = [&](std::string s, const std::string& expect) {
    std::string w;
    EXPECT_FALSE(decode_message(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), w));
    EXPECT_NE(w.find(expect), std::string::npos) << w;
  };
  bad(good.substr(0, 10), "short");
  std::string s = good;
  s[0] = 'X';
  bad(s, "magic");
  s = good;
  s[4] = 9;
  bad(s, "version");
  s = good;
  s[40] ^= 1;
  bad(s, "checksum");
  bad(good + "x", "disagree");
  s = good;
  s[17] = 0x7f;  // json_len lies (header checksum catches it first)
  bad(s, "checksum");
}

TEST(Protocol, JoinCodesRoundTripAndBadOnesAreExplained) {
  JoinCode jc;
  jc.host = "203.0.113.5";
  jc.port = 7070;
  jc.run_id = "my-run";
  jc.broker_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  jc.token = "abc123";
  const std::string code = format_join_code(jc);
  EXPECT_EQ(code.rfind("pico://203.0.113.5:7070/my-run?key=", 0), 0u) << code;
  const JoinCode back = parse_join_code(code);
  EXPECT_EQ(back.broker_key, jc.broker_key);
  EXPECT_EQ(back.token, "abc123");
  EXPECT_EQ(back.endpoint(), "tcp://203.0.113.5:7070");
  for (const char* bad : {"http://x:1/r?key=00", "pico://x/r?key=00", "pico://x:99999/r?key=00", "pico://x:1/r",
                          "pico://x:1/r?key=zz", "pico://x:1/bad id?key=00"}) {
    EXPECT_THROW(parse_join_code(bad), Error) << bad;
  }
}

}  // namespace
}  // namespace pico::broker
