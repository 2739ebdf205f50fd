#include "pico/broker/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "pico/common/error.h"
#include "support/test_util.h"

namespace pico::broker {
namespace {

RunRecord make_run(const std::string& id) {
  RunRecord r;
  r.run_id = id;
  r.config_yaml = "seed: 1\n";
  r.dataset_hash = "abc";
  r.num_shards = 8;
  r.created_at = 1.0;
  return r;
}

TEST(Store, RunsMembersRoundsLedger) {
  test::TempDir dir;
  auto s = Store::open(dir.file("b.db"));
  s->create_run(make_run("r1"));
  EXPECT_THROW(s->create_run(make_run("r1")), Error);
  EXPECT_EQ(s->run("r1")->num_shards, 8);
  EXPECT_FALSE(s->run("nope").has_value());

  MemberRecord m;
  m.run_id = "r1";
  m.public_key = "K0";
  m.endpoint = "tcp://127.0.0.1:1";
  EXPECT_EQ(s->add_member(m), 0);
  m.public_key = "K1";
  EXPECT_EQ(s->add_member(m), 1);
  s->set_member_status("r1", 0, MemberStatus::kEvicted);
  EXPECT_EQ(s->members("r1", true).size(), 1u);
  EXPECT_EQ(s->members("r1", false).size(), 2u);
  m.public_key = "K0";  // a rejoining key gets a new member id, never a reused one
  EXPECT_EQ(s->add_member(m), 2);

  RoundRecord r;
  r.run_id = "r1";
  r.round = 1;
  r.status = RoundStatus::kOpen;
  r.participants = {1, 2};
  s->begin_round(r);
  s->finish_round("r1", 1, RoundStatus::kDone, 1234, "hash", 5.0);
  const auto got = s->round("r1", 1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->participants, (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(got->bytes, 1234);
  EXPECT_EQ(got->status, RoundStatus::kDone);

  s->credit("r1", {"K0", 100, 10, 1, 0, 2.5, 1000});
  s->credit("r1", {"K0", 50, 5, 0, 1, 1.5, 500});
  s->credit("r1", {"K1", 10, 1, 1, 0, 0.5, 100});
  const auto l = s->ledger("r1");
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].public_key, "K0");
  EXPECT_EQ(l[0].tokens, 150);
  EXPECT_EQ(l[0].rounds_rejected, 1);
  EXPECT_DOUBLE_EQ(l[0].compute_seconds, 4.0);

  s->allow_key("r1", "K9");
  EXPECT_TRUE(s->is_allowed("r1", "K9"));
  EXPECT_FALSE(s->is_allowed("r1", "K8"));
}

TEST(Store, CommitRoundIsAllOrNothing) {
  test::TempDir dir;
  auto s = Store::open(dir.file("b.db"));
  s->create_run(make_run("r1"));
  RoundRecord r;
  r.run_id = "r1";
  r.round = 1;
  r.attempt = 1;
  r.status = RoundStatus::kOpen;
  r.participants = {0, 1};
  s->begin_round(r);
  s->commit_round("r1", 1, 2000, "H", 5.0, {{"ka", 100, 10, 1, 0, 1.0, 1000}, {"kb", 50, 5, 1, 0, 1.0, 1000}});
  EXPECT_EQ(s->round("r1", 1)->status, RoundStatus::kDone);
  EXPECT_EQ(s->round("r1", 1)->theta_hash, "H");
  EXPECT_EQ(s->run("r1")->round, 1);
  EXPECT_EQ(s->ledger("r1").size(), 2u);
  // A statement failing inside rolls every part back: SQLite stores a NaN as NULL, which
  // the ledger's NOT NULL refuses, after the round update and the first credit ran.
  r.round = 2;
  s->begin_round(r);
  EXPECT_THROW(
      s->commit_round("r1", 2, 1, "H2", 6.0, {{"ka", 1, 1, 1, 0, 1.0, 1}, {"kb", 1, 1, 1, 0, std::nan(""), 1}}), Error);
  EXPECT_EQ(s->round("r1", 2)->status, RoundStatus::kOpen);
  EXPECT_EQ(s->run("r1")->round, 1);
  EXPECT_EQ(s->ledger("r1").at(0).tokens, 100);
}

TEST(Store, MinMembersSurvivesAndOldStateFilesAreMigrated) {
  test::TempDir dir;
  {
    auto s = Store::open(dir.file("b.db"));
    RunRecord run = make_run("r1");
    run.min_members = 3;
    s->create_run(run);
  }
  EXPECT_EQ(Store::open(dir.file("b.db"))->run("r1")->min_members, 3);
  // A state file of schema version 1 (no min_members) opens, upgraded, with the default.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("b.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(
          db, "ALTER TABLE runs DROP COLUMN min_members; UPDATE meta SET value = '1' WHERE key = 'schema_version';",
          nullptr, nullptr, nullptr),
      SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto s = Store::open(dir.file("b.db"));
  EXPECT_EQ(s->run("r1")->min_members, 1);
  EXPECT_EQ(s->run("r1")->num_shards, 8);
}

TEST(Store, NotABrokerDatabaseIsAClearError) {
  test::TempDir dir;
  test::write_text(dir.file("junk.db"), std::string(4096, 'x'));
  try {
    Store::open(dir.file("junk.db"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.db"), std::string::npos) << e.what();
  }
}

TEST(Store, SigkillLosesNothingAcknowledged) {
  // A child credits the ledger in a loop and acknowledges each committed write through a
  // pipe; the parent SIGKILLs it mid-stream, reopens the file, and finds every acknowledged
  // write (and at most one more, in flight when it died).
  test::TempDir dir;
  const std::string path = dir.file("b.db");
  Store::open(path)->create_run(make_run("r"));
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto s = Store::open(path);
    for (int i = 0;; ++i) {
      s->credit("r", {"K", 1, 1, 0, 0, 0.0, 0});
      char ack = 1;
      if (write(fds[1], &ack, 1) != 1) _exit(1);
    }
  }
  close(fds[1]);
  int acked = 0;
  char c;
  while (acked < 200 && read(fds[0], &c, 1) == 1) ++acked;
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  while (read(fds[0], &c, 1) == 1) ++acked;  // acks already in the pipe
  close(fds[0]);
  const auto l = Store::open(path)->ledger("r");
  ASSERT_EQ(l.size(), 1u);
  EXPECT_GE(l[0].tokens, acked);
  EXPECT_LE(l[0].tokens, acked + 1);
}

}  // namespace
}  // namespace pico::broker
