// Who may talk to a rank, and what happens to what they say: a stranger without an admitted
// key cannot connect or inject anything; frames from an admitted connection that are
// malformed (bad magic, wrong version, lying lengths, oversize, wrong run id, bad checksums…)
// are rejected and logged, and the collective they were mixed into still gives the right sum.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <zmq.hpp>

#include "checksum.h"
#include "pico/comm/curve_keys.h"
#include "pico/comm/ring.h"
#include "pico/common/error.h"
#include "zmq_test_util.h"

namespace pico::comm::test {
namespace {

using namespace std::chrono_literals;

// A client socket of our own (not a pico node), with its monitor.
struct Client {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::push};
  zmq::socket_t mon{ctx, zmq::socket_type::pair};

  // key empty: plaintext (NULL mechanism).
  Client(const std::string& endpoint, const std::string& server_key, const CurveKeyPair& key) {
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    if (!key.public_key.empty()) {
      sock.set(zmq::sockopt::curve_serverkey, server_key);
      sock.set(zmq::sockopt::curve_publickey, key.public_key);
      sock.set(zmq::sockopt::curve_secretkey, key.secret_key);
    }
    static int counter = 0;
    const std::string addr = "inproc://test-monitor-" + std::to_string(counter++);
    zmq_socket_monitor(sock.handle(), addr.c_str(), ZMQ_EVENT_ALL);
    mon.connect(addr);
    sock.connect(endpoint);
  }
  ~Client() {
    zmq_socket_monitor(sock.handle(), nullptr, 0);
    sock.close();
    mon.close();
  }
  // Waits up to `wait` for one of `events`; returns the event seen (0 if none).
  int wait_for(std::initializer_list<int> events, std::chrono::milliseconds wait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{mon.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 50ms);
      zmq::message_t ev, addr;
      while (mon.recv(ev, zmq::recv_flags::dontwait)) {
        if (ev.more()) (void)mon.recv(addr);
        std::uint16_t id;
        std::memcpy(&id, ev.data(), 2);
        for (int e : events)
          if (id == e) return id;
        seen.push_back(id);
      }
    }
    return 0;
  }
  // Never blocks: a socket whose only connection was refused has nowhere to queue.
  bool send(const std::vector<std::uint8_t>& frame) {
    return sock.send(zmq::buffer(frame), zmq::send_flags::dontwait).has_value();
  }
  std::vector<int> seen;
};

std::vector<std::uint8_t> frame(MessageHeader h, const std::vector<std::uint8_t>& payload) {
  h.length = static_cast<std::uint32_t>(payload.size());
  std::vector<std::uint8_t> f(kWireHeaderBytes + payload.size());
  std::copy(payload.begin(), payload.end(), f.begin() + kWireHeaderBytes);
  wire_seal(h, f.data() + kWireHeaderBytes, f.data());
  return f;
}
void reseal(std::vector<std::uint8_t>& f) {
  const std::uint32_t crc = wire_crc32c(f.data(), 76);
  std::memcpy(f.data() + 76, &crc, 4);
}

// A plausible round-0 message of rank `src` in a group like the test's: everything right
// except what the caller spoils.
MessageHeader plausible(std::uint64_t run_id, int src, int world) {
  MessageHeader h;
  h.kind = MessageKind::kReduceScatter;
  h.run_id = run_id;
  h.world = static_cast<std::uint16_t>(world);
  h.src = static_cast<std::uint16_t>(src);
  h.chunk = static_cast<std::uint32_t>(src);
  h.total = 3000;
  h.count = 4;
  return h;
}

// Every rank all-reduces rank_input(r, n); returns whether everyone got the reference sum.
void expect_correct_allreduce(ThreadGroup& g, std::size_t n, std::vector<ZmqStats>* stats = nullptr,
                              int extra_barriers = 0) {
  const int w = g.world();
  std::vector<std::vector<float>> inputs, results(w);
  for (int r = 0; r < w; ++r) inputs.push_back(rank_input(r, n));
  if (stats) stats->assign(w, {});
  g.run([&](int r, ZmqCommunicator& c) {
    auto data = inputs[r];
    AllreduceOptions o;
    o.timeout = 20s;
    const auto res = c.all_reduce(data.data(), n, o);
    ASSERT_TRUE(res.ok()) << res.error;
    for (int i = 0; i < extra_barriers; ++i) ASSERT_TRUE(c.barrier({}).ok());
    results[r] = std::move(data);
    if (stats) (*stats)[r] = c.stats();
  });
  std::vector<const float*> ptrs;
  for (auto& v : inputs) ptrs.push_back(v.data());
  std::vector<float> expected(n);
  for (int c = 0; c < w; ++c) {
    const auto [b, e] = ring_chunk(n, w, c);
    if (e > b) ring_reduce_reference(WireDtype::kFloat32, ptrs, c, b, e, expected.data() + b);
  }
  for (int r = 0; r < w; ++r)
    ASSERT_EQ(std::memcmp(results[r].data(), expected.data(), n * sizeof(float)), 0) << "rank " << r;
}

TEST(ZmqSecurity, AStrangerWithoutAnAdmittedKeyCannotConnectOrInject) {
  ScratchDir keys;
  ThreadGroup g(3, test_options(keys.path()), keys.path(), /*run_id=*/7);
  const Membership m = g.membership(0);
  // A stranger who knows everything but a member's secret: endpoint, server key, run id.
  Client stranger(m.members[0].endpoint, m.members[0].public_key, curve_generate_keypair());
  // And one who does not even speak CURVE.
  Client plain(m.members[0].endpoint, "", {});
  EXPECT_EQ(stranger.wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  EXPECT_NE(plain.wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                            ZMQ_EVENT_DISCONNECTED, ZMQ_EVENT_HANDSHAKE_SUCCEEDED},
                           5s),
            ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  // Whatever they send is queued on a connection that never opens.
  std::vector<float> poison(4, 1e30f);
  std::vector<std::uint8_t> bytes(16);
  std::memcpy(bytes.data(), poison.data(), 16);
  for (int i = 0; i < 50; ++i) {
    stranger.send(frame(plausible(7, 2, 3), bytes));
    plain.send(frame(plausible(7, 2, 3), bytes));
  }
  std::vector<ZmqStats> stats;
  expect_correct_allreduce(g, 3000, &stats);
  EXPECT_GE(g.nodes[0]->zap_refusals(), 1u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(stats[r].messages_rejected, 0u) << "nothing of theirs reached rank " << r;
    // Rank r accepts exactly its ring messages: 2 chunks × 2 phases, one segment each.
    EXPECT_EQ(stats[r].messages_accepted, 4u) << "rank " << r;
  }
  for (int e : stranger.seen) EXPECT_NE(e, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  for (int e : plain.seen) EXPECT_NE(e, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
}

// A group's first connection races its admission: a member may connect (make_zmq_communicator
// on its node) before the neighbour's node admits its key (the neighbour has not yet read the
// round's member list). The neighbour's ZAP handler holds such a request until admit() names
// the key (up to ZmqOptions::zap_admit_wait) instead of refusing it, so the first attempt gets
// in: no refusal, no reconnect.
TEST(ZmqSecurity, AMemberWhoConnectsBeforeItsKeyIsAdmittedGetsInOnTheFirstAttempt) {
  ScratchDir keys;
  ZmqOptions o = test_options(keys.path());
  std::vector<std::shared_ptr<ZmqNode>> nodes;
  Membership m;
  m.run_id = 7;
  for (int r = 0; r < 2; ++r) {
    o.key_name = "rank-" + std::to_string(r);
    nodes.push_back(ZmqNode::create(o));
    m.members.push_back({r, nodes.back()->endpoint(), nodes.back()->public_key()});
  }
  // Neither node has admitted anyone. Rank 0 admits both keys and connects to rank 1 at once.
  std::vector<float> a = rank_input(0, 5000), b = rank_input(1, 5000);
  std::vector<float> expected(5000);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = a[i] + b[i];
  CollectiveResult r0, r1;
  std::thread t0([&] {
    Membership m0 = m;
    m0.rank = 0;
    auto c = make_zmq_communicator(nodes[0], m0);
    AllreduceOptions ao;
    ao.timeout = 10s;
    r0 = c->all_reduce(a.data(), a.size(), ao);
  });
  // Rank 1 reads the member list later: rank 0's handshakes reach its ZAP handler first.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(nodes[1]->zap_refusals(), 0u) << "rank 0's first connection attempts were refused";
  {
    Membership m1 = m;
    m1.rank = 1;
    auto c = make_zmq_communicator(nodes[1], m1);
    AllreduceOptions ao;
    ao.timeout = 10s;
    r1 = c->all_reduce(b.data(), b.size(), ao);
  }
  t0.join();
  ASSERT_TRUE(r0.ok()) << r0.error;
  ASSERT_TRUE(r1.ok()) << r1.error;
  EXPECT_EQ(std::memcmp(a.data(), expected.data(), a.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(b.data(), expected.data(), b.size() * sizeof(float)), 0);
  EXPECT_EQ(nodes[0]->zap_refusals(), 0u);
  EXPECT_EQ(nodes[1]->zap_refusals(), 0u);
}

// The hold must end well before libzmq gives up on the handshake (30 s), and cannot be negative.
TEST(ZmqSecurity, AnAdmitWaitOutOfRangeIsRefusedWithItsName) {
  ScratchDir keys;
  for (auto wait : {std::chrono::milliseconds(-1), std::chrono::milliseconds(25'000)}) {
    ZmqOptions o = test_options(keys.path());
    o.zap_admit_wait = wait;
    try {
      ZmqNode::create(o);
      ADD_FAILURE() << "zap_admit_wait = " << wait.count() << " ms was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("comm.zap_admit_wait = " + std::to_string(wait.count())), std::string::npos)
          << e.what();
    }
  }
}

TEST(ZmqSecurity, MalformedFramesAreRejectedAndLoggedWhileTheCollectiveCompletes) {
  ScratchDir keys;
  const std::uint64_t run = 7;
  ThreadGroup g(3, test_options(keys.path()), keys.path(), run);
  const Membership m = g.membership(0);
  // The injector holds rank 2's key (rank 0's left neighbour): a buggy or compromised member
  // whose connection is admitted, so that every check after authentication is exercised.
  const CurveKeyPair left = curve_load_or_create_keypair(keys.path(), "rank-2");
  Client insider(m.members[0].endpoint, m.members[0].public_key, left);
  ASSERT_EQ(insider.wait_for({ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s), ZMQ_EVENT_HANDSHAKE_SUCCEEDED);

  const std::vector<std::uint8_t> payload(16, 0);
  const auto good = frame(plausible(run, 2, 3), payload);
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> bad;
  bad.push_back({"short", {1, 2, 3}});
  auto f = good;
  f[1] ^= 0xff;
  bad.push_back({"magic", f});
  f = good;
  f[4] = 99;
  reseal(f);
  bad.push_back({"version", f});
  f = good;
  f[17] ^= 1;
  bad.push_back({"header-checksum", f});
  f = good;
  f[kWireHeaderBytes] ^= 1;
  bad.push_back({"payload-checksum", f});
  f = good;  // lying length: the header promises 1 MB, the frame carries 16 bytes
  const std::uint32_t lie = 1 << 20;
  std::memcpy(f.data() + 44, &lie, 4);
  reseal(f);
  bad.push_back({"length", f});
  f = good;
  f[6] = 42;
  reseal(f);
  bad.push_back({"kind", f});
  f = good;
  f[36] = 5;  // src 5 in a group of 3
  reseal(f);
  bad.push_back({"rank", f});
  {
    MessageHeader h = plausible(run, 2, 3);
    h.offset = 2999;  // a 4-value segment that runs past the 3000 values
    bad.push_back({"range", frame(h, payload)});
    h = plausible(run + 1, 2, 3);  // another run
    bad.push_back({"run-id", frame(h, payload)});
    h = plausible(run, 2, 3);
    h.epoch = 9;  // a group that does not exist yet
    bad.push_back({"epoch", frame(h, payload)});
    h = plausible(run, 1, 3);  // claims to be rank 1 on rank 2's connection
    bad.push_back({"sender", frame(h, payload)});
    h = plausible(run, 2, 4);  // a group of 4
    h.world = 4;
    bad.push_back({"rank", frame(h, payload)});
  }
  std::mt19937 rng(3);
  std::vector<std::uint8_t> garbage(300);
  for (auto& b : garbage) b = static_cast<std::uint8_t>(rng());
  bad.push_back({"magic", garbage});
  for (const auto& [reason, bytes] : bad) ASSERT_TRUE(insider.send(bytes));
  // An oversize frame (above ZMQ_MAXMSGSIZE) makes libzmq drop that connection unread.
  Client big(m.members[0].endpoint, m.members[0].public_key, left);
  ASSERT_EQ(big.wait_for({ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s), ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  ASSERT_TRUE(big.send(std::vector<std::uint8_t>(zmq_max_message_bytes(test_options(keys.path())) + 4096, 0)));
  EXPECT_EQ(big.wait_for({ZMQ_EVENT_DISCONNECTED}, 5s), ZMQ_EVENT_DISCONNECTED);
  std::this_thread::sleep_for(200ms);  // the frames are queued at rank 0 before the collective starts

  testing::internal::CaptureStderr();
  std::vector<ZmqStats> stats;
  expect_correct_allreduce(g, 3000, &stats, /*extra_barriers=*/1);
  const std::string log = testing::internal::GetCapturedStderr();

  std::map<std::string, std::uint64_t> expected;
  for (const auto& [reason, bytes] : bad) ++expected[reason];
  EXPECT_EQ(stats[0].rejected_by_reason, expected);
  EXPECT_EQ(stats[0].messages_rejected, bad.size());
  for (const auto& [reason, count] : expected)
    EXPECT_NE(log.find("rejected a message (" + reason + ")"), std::string::npos) << reason << " not logged:\n" << log;
  EXPECT_EQ(stats[1].messages_rejected, 0u);
  EXPECT_EQ(stats[2].messages_rejected, 0u);
}

}  // namespace
}  // namespace pico::comm::test
