// The message header codec (wire.h) and its checksum, the CURVE key store, memberships and
// the file rendezvous: the transport's pieces that need no running collective.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "checksum.h"
#include "pico/comm/curve_keys.h"
#include "pico/comm/rendezvous.h"
#include "pico/comm/wire.h"
#include "pico/common/error.h"
#include "pico/common/hash.h"
#include "zmq_test_util.h"

namespace pico::comm::test {
namespace {

// ---- checksum ----

TEST(WireChecksum, EqualsPicoCrc32cForEveryLengthAndAlignment) {
  std::vector<std::uint8_t> buf(70'000);
  std::mt19937 rng(5);
  for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
  std::vector<std::size_t> lengths = {0,   1,   7,   8,   15,  16,  63,   64,   127,    128,   129,
                                      255, 256, 511, 512, 513, 767, 1023, 4096, 65'536, 69'000};
  for (int i = 0; i < 200; ++i) lengths.push_back(rng() % 69'000);
  for (std::size_t n : lengths)
    for (std::size_t off : {0, 1, 5})
      for (std::uint32_t init : {0u, 0xdeadbeefu}) {
        ASSERT_EQ(wire_crc32c(buf.data() + off, n, init), pico::crc32c(buf.data() + off, n, init))
            << "length " << n << " offset " << off;
      }
  // The CRC-32C check value of "123456789".
  EXPECT_EQ(wire_crc32c("123456789", 9), 0xE3069283u);
}

// ---- header codec ----

std::vector<std::uint8_t> sealed(MessageHeader h, std::vector<std::uint8_t> payload) {
  h.length = static_cast<std::uint32_t>(payload.size());
  std::vector<std::uint8_t> frame(kWireHeaderBytes + payload.size());
  std::copy(payload.begin(), payload.end(), frame.begin() + kWireHeaderBytes);
  wire_seal(h, frame.data() + kWireHeaderBytes, frame.data());
  return frame;
}

MessageHeader reduce_scatter_header() {
  MessageHeader h;
  h.kind = MessageKind::kReduceScatter;
  h.dtype = WireDtype::kFloat16;
  h.run_id = 0x1122334455667788ULL;
  h.round = 12;
  h.tag = 99;
  h.epoch = 3;
  h.src = 2;
  h.world = 4;
  h.chunk = 1;
  h.offset = 1000;
  h.total = 5000;
  h.count = 8;
  return h;
}

// Re-seals only the header checksum after a field was changed in place.
void reseal(std::vector<std::uint8_t>& f) {
  const std::uint32_t crc = wire_crc32c(f.data(), 76);
  std::memcpy(f.data() + 76, &crc, 4);
}

WireError decode(const std::vector<std::uint8_t>& f, MessageHeader* out = nullptr, std::uint32_t limit = 1 << 20) {
  MessageHeader h;
  std::string detail;
  const WireError e = wire_decode(f.data(), f.size(), {limit}, h, &detail);
  if (e != WireError::kOk) {
    EXPECT_FALSE(detail.empty()) << to_string(e);
  }
  if (out) *out = h;
  return e;
}

TEST(WireHeader, RoundTripsEveryField) {
  const MessageHeader in = reduce_scatter_header();
  const auto frame = sealed(in, std::vector<std::uint8_t>(16, 7));  // 8 fp16 values
  MessageHeader out;
  ASSERT_EQ(decode(frame, &out), WireError::kOk);
  EXPECT_EQ(out.kind, in.kind);
  EXPECT_EQ(out.dtype, in.dtype);
  EXPECT_EQ(out.run_id, in.run_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.tag, in.tag);
  EXPECT_EQ(out.epoch, in.epoch);
  EXPECT_EQ(out.src, in.src);
  EXPECT_EQ(out.world, in.world);
  EXPECT_EQ(out.chunk, in.chunk);
  EXPECT_EQ(out.length, 16u);
  EXPECT_EQ(out.offset, in.offset);
  EXPECT_EQ(out.total, in.total);
  EXPECT_EQ(out.count, in.count);
  // Forwarding rewrites the sender and keeps the frame valid.
  auto fwd = frame;
  wire_reseal_header(fwd.data(), 3);
  ASSERT_EQ(decode(fwd, &out), WireError::kOk);
  EXPECT_EQ(out.src, 3);
  // Every kind with a well-formed body decodes.
  MessageHeader g;
  g.kind = MessageKind::kGather;
  g.world = 2;
  g.total = 10;
  g.offset = 4;
  EXPECT_EQ(decode(sealed(g, std::vector<std::uint8_t>(6, 1))), WireError::kOk);
  g.kind = MessageKind::kBroadcast;
  g.total = 0;
  g.offset = 0;
  EXPECT_EQ(decode(sealed(g, {})), WireError::kOk);
  MessageHeader b;
  b.kind = MessageKind::kBarrier;
  EXPECT_EQ(decode(sealed(b, {})), WireError::kOk);
  b.kind = MessageKind::kAbort;
  EXPECT_EQ(decode(sealed(b, std::vector<std::uint8_t>(40, 'x'))), WireError::kOk);
}

TEST(WireHeader, RejectsEveryKindOfMalformedFrame) {
  const auto good = sealed(reduce_scatter_header(), std::vector<std::uint8_t>(16, 7));
  ASSERT_EQ(decode(good), WireError::kOk);
  auto f = good;

  EXPECT_EQ(decode(std::vector<std::uint8_t>(good.begin(), good.begin() + 79)), WireError::kShort);
  EXPECT_EQ(decode({}), WireError::kShort);

  f = good;
  f[0] ^= 1;
  EXPECT_EQ(decode(f), WireError::kBadMagic);

  f = good;
  f[4] = 2;  // version 2, header checksum recomputed: still refused
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadVersion);

  f = good;
  f[20] ^= 0x10;  // round changed, checksum not
  EXPECT_EQ(decode(f), WireError::kBadHeaderChecksum);

  f = good;
  f[6] = 9;
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadKind);

  f = good;
  f[7] = 4;
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadDtype);

  f = good;  // a lying length: says 1000 payload bytes, carries 16
  const std::uint32_t lie = 1000;
  std::memcpy(f.data() + 44, &lie, 4);
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadLength);

  f = good;  // frame longer than its length field
  f.push_back(0);
  EXPECT_EQ(decode(f), WireError::kBadLength);

  EXPECT_EQ(decode(good, nullptr, 8), WireError::kTooLong);  // receiver's bound below the payload

  f = good;  // src ≥ world
  f[36] = 9;
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadRank);

  f = good;  // world 0
  f[38] = 0;
  f[39] = 0;
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadRank);

  f = good;  // chunk ≥ world
  f[40] = 4;
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadRank);

  f = good;  // segment beyond the buffer: offset + count > total
  const std::uint64_t total = 1003;
  std::memcpy(f.data() + 56, &total, 8);
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadRange);

  f = good;  // count claims more values than the payload can hold
  const std::uint64_t count = 1u << 30;
  std::memcpy(f.data() + 64, &count, 8);
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadRange);

  f = good;  // count consistent in range but not with the dtype's size
  const std::uint64_t count7 = 7;
  std::memcpy(f.data() + 64, &count7, 8);
  reseal(f);
  EXPECT_EQ(decode(f), WireError::kBadLength);

  f = good;
  f[kWireHeaderBytes + 3] ^= 0x40;
  EXPECT_EQ(decode(f), WireError::kBadPayloadChecksum);

  MessageHeader b;  // a barrier with a payload
  b.kind = MessageKind::kBarrier;
  EXPECT_EQ(decode(sealed(b, {1, 2, 3})), WireError::kBadRange);
  b.kind = MessageKind::kAbort;  // an abort reason above the bound
  EXPECT_EQ(decode(sealed(b, std::vector<std::uint8_t>(kWireMaxReasonBytes + 1, 'x'))), WireError::kBadRange);
  MessageHeader g;  // a gather segment past its payload's end
  g.kind = MessageKind::kGather;
  g.world = 2;
  g.total = 10;
  g.offset = 8;
  EXPECT_EQ(decode(sealed(g, std::vector<std::uint8_t>(6, 1))), WireError::kBadRange);
}

TEST(WireHeader, RandomCorruptionNeverCrashesAndIsAlmostAlwaysCaught) {
  const auto good = sealed(reduce_scatter_header(), std::vector<std::uint8_t>(16, 7));
  std::mt19937 rng(11);
  int accepted = 0;
  for (int i = 0; i < 20'000; ++i) {
    auto f = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) f[rng() % f.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    if (rng() % 4 == 0) f.resize(rng() % (f.size() + 40), 0xAB);
    MessageHeader h;
    accepted += wire_decode(f.data(), f.size(), {}, h) == WireError::kOk && f != good;
  }
  EXPECT_EQ(accepted, 0);  // two CRC-32Cs catch every corruption of up to 4 bytes here
}

// ---- keys ----

TEST(CurveKeys, AreCreatedOnceWithMode0600AndReloaded) {
  ScratchDir dir;
  const std::string keys = dir.path() + "/keys";
  const CurveKeyPair a = curve_load_or_create_keypair(keys, "worker-0");
  EXPECT_TRUE(curve_is_valid_key(a.public_key));
  EXPECT_TRUE(curve_is_valid_key(a.secret_key));
  struct stat st {};
  ASSERT_EQ(::stat((keys + "/worker-0.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(keys.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const CurveKeyPair b = curve_load_or_create_keypair(keys, "worker-0");
  EXPECT_EQ(a.public_key, b.public_key);
  EXPECT_EQ(a.secret_key, b.secret_key);
  EXPECT_NE(curve_load_or_create_keypair(keys, "worker-1").public_key, a.public_key);
}

TEST(CurveKeys, ProcessesRacingToCreateAKeyShareOne) {
  ScratchDir dir;
  std::vector<std::string> seen(8);
  std::vector<std::thread> t;
  for (int i = 0; i < 8; ++i)
    t.emplace_back([&, i] { seen[i] = curve_load_or_create_keypair(dir.path(), "shared").public_key; });
  for (auto& th : t) th.join();
  for (const auto& k : seen) EXPECT_EQ(k, seen[0]);
}

TEST(CurveKeys, BadKeyFilesAreRefusedWithTheirPathAndAHint) {
  ScratchDir dir;
  const std::string path = dir.path() + "/w.key";
  curve_load_or_create_keypair(dir.path(), "w");
  ::chmod(path.c_str(), 0644);
  try {
    curve_load_or_create_keypair(dir.path(), "w");
    FAIL() << "a world-readable key file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("chmod 600"), std::string::npos) << e.hint();
  }
  const CurveKeyPair other = curve_generate_keypair(), mine = curve_generate_keypair();
  std::ofstream(path, std::ios::trunc) << "public-key = " << other.public_key << "\nsecret-key = " << mine.secret_key
                                       << "\n";
  ::chmod(path.c_str(), 0600);
  EXPECT_THROW(curve_load_or_create_keypair(dir.path(), "w"), Error);  // halves of different pairs
  std::ofstream(path, std::ios::trunc) << "garbage\n";
  EXPECT_THROW(curve_load_or_create_keypair(dir.path(), "w"), Error);
  EXPECT_THROW(curve_load_or_create_keypair(dir.path(), "../escape"), Error);
}

// ---- membership and rendezvous ----

Membership four_members() {
  Membership m;
  m.run_id = 5;
  m.epoch = 2;
  m.rank = 2;
  for (int r = 0; r < 4; ++r)
    m.members.push_back({r, "tcp://127.0.0.1:" + std::to_string(4000 + r), curve_generate_keypair().public_key});
  return m;
}

TEST(Membership, SurvivorsKeepRingOrderAndGetTheNextEpoch) {
  const Membership old = four_members();
  const Membership m = membership_of_survivors(old, {3, 0, 2});
  EXPECT_EQ(m.epoch, 3u);
  EXPECT_EQ(m.run_id, 5u);
  ASSERT_EQ(m.world_size(), 3);
  EXPECT_EQ(m.rank, 1);  // old rank 2 is the second survivor
  EXPECT_EQ(m.members[0].endpoint, old.members[0].endpoint);
  EXPECT_EQ(m.members[1].public_key, old.members[2].public_key);
  EXPECT_EQ(m.members[2].endpoint, old.members[3].endpoint);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m.members[i].rank, i);
  EXPECT_NO_THROW(m.validate(true));
  EXPECT_THROW(membership_of_survivors(old, {0, 1, 3}), Error);  // this rank (2) was dropped
  EXPECT_THROW(membership_of_survivors(old, {0, 2, 2}), Error);
  EXPECT_THROW(membership_of_survivors(old, {0, 2, 7}), Error);
}

TEST(Membership, ValidateNamesWhatIsWrong) {
  Membership m = four_members();
  m.members[3].public_key = m.members[1].public_key;
  EXPECT_THROW(m.validate(true), Error);
  m = four_members();
  m.members[1].rank = 2;
  EXPECT_THROW(m.validate(true), Error);
  m = four_members();
  m.members[0].public_key = "short";
  EXPECT_THROW(m.validate(true), Error);
  EXPECT_NO_THROW(m.validate(false));
  m.rank = 4;
  EXPECT_THROW(m.validate(false), Error);
}

TEST(ZmqOptionsTest, ValidateRejectsNonsense) {
  ZmqOptions o;
  EXPECT_NO_THROW(o.validate());
  o.connections_per_peer = 0;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.segment_bytes = 10;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.bind_host = "0.0.0.0";
  EXPECT_THROW(o.validate(), Error);  // peers cannot dial 0.0.0.0
  o.advertise_host = "192.0.2.1";
  EXPECT_NO_THROW(o.validate());
  // The receive bound covers the largest segment of every wire dtype.
  o = {};
  EXPECT_EQ(zmq_message_payload_bytes(o), o.segment_bytes);  // one connection by default
  o.connections_per_peer = 4;
  EXPECT_EQ(zmq_message_payload_bytes(o), o.segment_bytes / 4);
  EXPECT_GE(zmq_max_message_bytes(o), kWireHeaderBytes + zmq_message_payload_bytes(o));
  EXPECT_GE(zmq_max_message_bytes(o), kWireHeaderBytes + encoded_size(WireDtype::kUInt8, kUInt8Block));
}

TEST(FileRendezvous, ThreeProcessesFindEachOtherAndReduce) {
  ScratchDir dir;
  const int world = 3;
  std::vector<Membership> seen(world);
  std::vector<std::vector<float>> out(world);
  std::vector<std::thread> t;
  std::vector<std::string> errors(world);
  for (int r = 0; r < world; ++r)
    t.emplace_back([&, r] {
      try {
        ZmqOptions o = test_options(dir.path() + "/keys");
        o.key_name = "worker-" + std::to_string(r);
        auto node = ZmqNode::create(o);
        FileRendezvousOptions ro;
        ro.dir = dir.path() + "/rdv";
        ro.world_size = world;
        ro.rank = r;
        ro.run_id = 77;
        if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a late joiner
        seen[r] = rendezvous_files(*node, ro);
        auto comm = make_zmq_communicator(node, seen[r]);
        std::vector<float> v(1001, static_cast<float>(r + 1));
        const auto res = comm->all_reduce(v.data(), v.size(), {});
        if (!res.ok()) throw Error(res.error);
        out[r] = v;
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& th : t) th.join();
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(seen[r].rank, r);
    ASSERT_EQ(seen[r].world_size(), world);
    for (int i = 0; i < world; ++i) {
      EXPECT_EQ(seen[r].members[i].endpoint, seen[0].members[i].endpoint);
      EXPECT_EQ(seen[r].members[i].public_key, seen[0].members[i].public_key);
    }
    EXPECT_EQ(out[r], std::vector<float>(1001, 6.0f));
  }
}

TEST(FileRendezvous, AMissingRankIsNamedAfterTheTimeout) {
  ScratchDir dir;
  auto node = ZmqNode::create(test_options(dir.path() + "/keys"));
  FileRendezvousOptions ro;
  ro.dir = dir.path() + "/rdv";
  ro.world_size = 3;
  ro.rank = 0;
  ro.timeout = std::chrono::milliseconds(300);
  try {
    rendezvous_files(*node, ro);
    FAIL() << "rendezvous without peers returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank(s) 1, 2 did not publish"), std::string::npos) << e.what();
  }
}

TEST(FileRendezvous, AFileOfAnotherRunIsRefused) {
  ScratchDir dir;
  auto node = ZmqNode::create(test_options(dir.path() + "/keys"));
  // Rank 1 of some other run left its file in the directory.
  std::filesystem::create_directories(dir.path() + "/rdv/epoch-0");
  std::ofstream(dir.path() + "/rdv/epoch-0/rank-1.member")
      << "pico-rendezvous 1\nrun_id 999\nrank 1\nworld 2\nendpoint tcp://127.0.0.1:1\npublic_key "
      << curve_generate_keypair().public_key << "\n";
  FileRendezvousOptions ro;
  ro.dir = dir.path() + "/rdv";
  ro.world_size = 2;
  ro.run_id = 1;
  ro.timeout = std::chrono::milliseconds(2000);
  try {
    rendezvous_files(*node, ro);
    FAIL() << "a stale file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank-1.member is for run 999"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pico::comm::test
