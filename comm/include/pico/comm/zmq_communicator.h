// pico/comm/zmq_communicator.h — the Communicator over ZeroMQ: encrypted ring collectives
// between processes (one machine or the internet), failing fast and cleanly when a peer dies.
//
// Three layers, as in gloo/c10d:
//   ZmqNode        this process's end of the network: a libzmq context, its CURVE key pair,
//                  a ZAP handler that admits only the current members' keys, and one bound
//                  receive socket (tcp://HOST:ephemeral). Outlives groups: survivors of a
//                  failure build the next group on the same node (same endpoint, same key).
//   Membership     who is in the group, in ring order: (rank, endpoint, public key) per member,
//                  the run id and an epoch. Made by a rendezvous (rendezvous.h: files on one
//                  machine) or handed out by the broker; rebuilt from a survivor list after
//                  a failure (membership_of_survivors).
//   ZmqCommunicator the collectives (communicator.h) over one membership: ring all-reduce
//                  (reduce-scatter + all-gather, segmented and pipelined, K connections to the
//                  right neighbour), ring all-gather, chain broadcast, ring barrier.
//
// Arithmetic: all_reduce gives exactly the bits of ring.h's ring_reduce_reference (and of
// InProcessGroup) for every wire dtype; segments start at multiples of kUInt8Block from
// their chunk's start.
//
// Blocking: every collective returns when this rank has received all it needs AND its right
// neighbour has confirmed it received all it needed from this rank (so a successful return
// means nothing of the collective is still in flight), or on failure (see below).
//
// Failures are values. A collective fails (kTimeout, kPeerFailed, kInvalid) when it does not
// complete within its timeout, when a connection to a neighbour drops and stays down longer
// than `disconnect_grace`, or when a neighbour reports that its group broke (the failing rank
// tells both neighbours, which tell theirs, so every survivor learns within milliseconds of
// a crash; a stalled peer is found by the timeout). After a failure the communicator is
// broken: every later call returns kPeerFailed at once. The caller builds a new group from
// the survivors (membership_of_survivors + make_zmq_communicator on the same node) and
// retries. Malformed or unexpected messages are dropped with a logged reason (stats()),
// never acted on.
//
// Security: CURVE on every socket with long-term keys (curve_keys.h); the receive socket
// admits only keys in the current membership (ZAP), caps messages at ZMQ_MAXMSGSIZE, and
// every message carries a checksummed, versioned header (wire.h). The plaintext mode exists
// only for the benchmark's "CURVE off" arm.
//
// Local workers (pico train --local-workers N --comm zmq), in each worker process i:
//
//   ZmqOptions o;  o.key_name = "worker-" + std::to_string(i);  o.ipc_dir = run_dir + "/sock";
//   auto node = ZmqNode::create(o);                                         // does not block
//   Membership m = rendezvous_files(*node, {.dir = run_dir + "/rdv", .world_size = N,
//                                           .rank = i, .run_id = run_id}); // blocks for all N
//   auto comm = make_zmq_communicator(node, m);                             // does not block
//   … comm->all_reduce(…) on every worker, same order …
//   on failure: the supervisor reaps the dead worker and calls publish_survivors(rdv, m.epoch + 1,
//   old ranks); each survivor: m = membership_of_survivors(m, wait_for_survivors(rdv, m.epoch + 1,
//   timeout)); comm.reset(); comm = make_zmq_communicator(node, m); retry (rendezvous.h).
//
// A communicator is used by one thread at a time. A failed all_reduce leaves `data` a mix of
// inputs and partial sums: keep a copy of the input to retry with.
//
// Not here: the broker protocol, relays for peers behind NAT, choosing the ring order.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pico/comm/communicator.h"
#include "pico/comm/wire.h"

namespace pico::comm {

enum class ZmqSecurity {
  kCurve,                   // CURVE encryption + ZAP authentication on every socket (the default)
  kPlaintextBenchmarkOnly,  // NO encryption, NO authentication: only for measuring what CURVE costs
};

struct ZmqOptions {
  ZmqSecurity security = ZmqSecurity::kCurve;
  // The interface the node listens on (port: ephemeral, chosen by the OS).
  std::string bind_host = "127.0.0.1";
  // The host peers dial to reach this node ("" = bind_host); e.g. a public address when binding 0.0.0.0.
  std::string advertise_host = "";
  // Members on one machine only: listen on a Unix socket in this directory instead of TCP
  // (ipc://DIR/pico-<pid>-<n>.sock; "" = TCP). Skips the TCP stack (no ACK clocking or
  // retransmission timers), about twice the loopback throughput on a busy machine. CURVE and
  // ZAP apply as over TCP. The path must stay under ~100 characters.
  std::string ipc_dir = "";
  // Where the key pair lives ("" = curve_default_key_dir(), i.e. pico_home()/keys) and its name.
  // Processes on one machine that join the same group need different names (e.g. worker-0, worker-1).
  std::string key_dir = "";
  std::string key_name = "contributor";
  // Data connections to the right neighbour; segments are dealt round-robin over them.
  // Several TCP streams can fill a long-RTT link whose bandwidth × RTT exceeds one stream's
  // window, but where one stream's window suffices they only compete: measured on 100 Mbit/s
  // links with a 50 ms RTT, 4 connections reached 60% of the ring bound against 82% for one
  // (experiments/allreduce/RESULTS.md). Raise it only for links whose bandwidth × RTT is
  // beyond the OS's TCP window limit (net.ipv4.tcp_wmem / tcp_rmem maximum).
  int connections_per_peer = 1;
  // The unit of pipelining: payload bytes in flight per turn of the data connections. Each
  // message carries segment_bytes / connections_per_peer (zmq_message_payload_bytes), so that
  // a message crosses a shared link as fast as with one connection (a ring hop forwards only
  // whole messages). Rounded to whole uint8 blocks for the uint8 wire. Every member of a group
  // must use the same value (and the same connections_per_peer).
  std::size_t segment_bytes = std::size_t{1} << 20;
  // libzmq I/O threads of the node (they do the socket I/O and CURVE encryption). Two let the
  // connection that receives and the ones that send run in parallel.
  int io_threads = 2;
  // SO_SNDBUF of the sending TCP connections. -1 (auto): 256 KiB towards loopback peers
  // (127.0.0.0/8, localhost), the OS's autotuning otherwise; 0: always autotuning; > 0: bytes.
  // On loopback an autotuned send queue grows to megabytes, a busy machine then inflates the
  // RTT until TCP's loss probes fire spuriously and throughput halves; a shallow queue keeps
  // the ring pipelined. Over a WAN the window must cover bandwidth × RTT: keep autotuning.
  int tcp_send_buffer_bytes = -1;
  // A neighbour connection that drops during a collective may stay down this long (a peer
  // that finished and left says goodbye within it) before the collective fails with kPeerFailed.
  std::chrono::milliseconds disconnect_grace{300};
  // A neighbour this rank cannot open a TCP connection to within connect_timeout of the
  // communicator's creation is unreachable (behind a NAT or firewall, or a wrong advertised
  // address): the collective fails at once with kPeerFailed instead of waiting out its timeout,
  // and unreachable() names the neighbour. 0 = wait for the collective's timeout.
  std::chrono::milliseconds connect_timeout{5'000};
  // ZMTP heartbeats: a connection whose peer stops answering for heartbeat_timeout is dropped
  // (finds peers that vanished without closing their TCP connections).
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10'000};
  // A peer whose key this node has not admitted yet is held this long (its CURVE handshake
  // waits) in case admit() names its key meanwhile, and refused only then. Members of a new
  // group learn the member list at slightly different moments and connect at once; libzmq
  // does not retry a refused handshake, so refusing a member that was only early would cost
  // the collective. 0 = refuse at once. Must stay below libzmq's handshake timeout (30 s).
  std::chrono::milliseconds zap_admit_wait{2'000};
  // How long closing a communicator after success waits for queued messages to leave.
  std::chrono::milliseconds close_linger{5'000};
  // Raise glibc's mmap and trim thresholds (mallopt, process-wide, once) so that message
  // buffers of a few MiB are recycled by malloc instead of being mapped, zeroed and unmapped
  // for every message: that churn halves loopback throughput. Large tensors (≥ 32 MiB) are
  // still mmapped. Turn off if the process manages malloc itself.
  bool tune_malloc = true;
  // Bounds on what a peer can make this rank allocate: one rank's all_gather payload, and a broadcast.
  std::uint64_t max_gather_bytes = std::uint64_t{1} << 32;
  std::uint64_t max_broadcast_bytes = std::uint64_t{1} << 36;
  // Called on the collective's thread after each message this rank accepts and processes
  // (round, kind, messages processed so far in this collective). For tracing and for tests
  // that need to act in the middle of a collective. Default: none.
  std::function<void(std::uint64_t round, MessageKind kind, std::uint64_t processed)> on_message;

  void validate() const;  // throws pico::Error naming the bad field and value
};

// Target payload bytes of one message: segment_bytes / connections_per_peer.
std::size_t zmq_message_payload_bytes(const ZmqOptions& options);
// The largest message (header + payload) a node with these options sends or accepts: the
// receive socket's ZMQ_MAXMSGSIZE.
std::size_t zmq_max_message_bytes(const ZmqOptions& options);

struct Member {
  int rank = 0;
  std::string endpoint;    // "tcp://127.0.0.1:41234": where this member's node listens
  std::string public_key;  // Z85 CURVE public key ("" in plaintext mode)
};

struct Membership {
  std::uint64_t run_id = 0;     // every member agrees; messages of other runs are rejected
  std::uint32_t epoch = 0;      // generation of the group; bumped on every rebuild
  int rank = 0;                 // this process's rank: members[rank] is this node
  std::vector<Member> members;  // ring order: members[i].rank == i; i sends to i+1 (mod W)

  int world_size() const { return static_cast<int>(members.size()); }
  // Throws pico::Error when ranks are not 0..W−1 in order, keys are invalid or repeated,
  // endpoints are empty, or rank is out of range.
  void validate(bool require_keys) const;
};

// The group formed by the survivors of `old`: members whose old ranks are listed (any
// order, no duplicates) keep their ring order and are renumbered 0..W'−1; the epoch is
// old.epoch + 1. Pure function: every survivor computes the same membership from the same
// list (the list comes from the broker, or from whoever supervises local workers). Throws
// pico::Error if this rank is not a survivor or the list names unknown ranks.
Membership membership_of_survivors(const Membership& old, const std::vector<int>& surviving_old_ranks);

class ZmqNode {
 public:
  // Checks zmq_has("curve") (unless plaintext), loads or creates the key pair, starts the
  // ZAP handler and binds the receive socket on options.bind_host with an ephemeral port.
  // Does not block on the network. Throws pico::Error (no CURVE, unreadable key file, bind failure).
  static std::shared_ptr<ZmqNode> create(const ZmqOptions& options);
  ~ZmqNode();
  ZmqNode(const ZmqNode&) = delete;
  ZmqNode& operator=(const ZmqNode&) = delete;

  const ZmqOptions& options() const;
  std::string endpoint() const;  // what peers dial: tcp://advertise_host:port
  // Where a process on this machine reaches the socket (tcp://127.0.0.1:port when it listens
  // on every interface): what a relay tunnel carries connections to (relay.h).
  std::string local_endpoint() const;
  // Peers reach this node at `endpoint` from now on (a relay's port for it, relay.h): what
  // endpoint() returns and memberships must name.
  void reached_through(const std::string& endpoint);
  std::string public_key() const;  // Z85 ("" in plaintext mode)
  // Replaces the set of keys the ZAP handler admits (thread-safe; affects new connections, and
  // those held because their key was not admitted yet: see ZmqOptions::zap_admit_wait).
  // make_zmq_communicator admits the membership's keys itself; rendezvous calls this before
  // telling peers it is ready, so no peer is refused during start-up.
  void admit(const std::vector<std::string>& public_keys);
  // Connection attempts the ZAP handler refused (keys not admitted, wrong domain).
  std::uint64_t zap_refusals() const;
  // Makes the collective in progress on this node's communicator (if any) fail at once with
  // kAborted and `why` (thread-safe: for a thread that learns the group is gone, e.g. from
  // the broker, while the collective waits for peers that cannot reach it). The next
  // communicator made on the node starts uncancelled.
  void cancel_collective(const std::string& why);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit ZmqNode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What a communicator dropped, by reason (wire.h's WireError names, plus "run-id", "epoch",
// "sender", "round", "unexpected", "duplicate", "segment", "oversize-allocation").
struct ZmqStats {
  std::uint64_t messages_accepted = 0;
  std::uint64_t messages_rejected = 0;  // malformed or unexpected: dropped with a logged reason
  std::uint64_t messages_stale = 0;     // of an earlier epoch or round (left over from a failure)
  std::map<std::string, std::uint64_t> rejected_by_reason;
};

class ZmqCommunicator : public Communicator {
 public:
  virtual const Membership& membership() const = 0;
  virtual ZmqStats stats() const = 0;
  // Whether an earlier collective failed (every later one then returns kPeerFailed at once).
  virtual bool broken() const = 0;
  // Neighbours (ranks) this rank could not open a connection to within
  // ZmqOptions::connect_timeout: why the group broke, when it is not empty.
  virtual std::vector<int> unreachable() const = 0;
};

// The communicator of `membership` on `node` (membership.members[membership.rank] must be
// this node: same endpoint and key). Admits the members' keys and starts connecting to the
// neighbours in the background; does not block (connection problems surface in the first
// collective, as values). One communicator per node at a time: destroy the previous one
// (e.g. a broken group's) before making the next. Every member makes its communicator and
// then calls the same collectives in the same order (communicator.h).
// Destroying it after success tells the neighbours goodbye and lets queued messages leave
// (up to options.close_linger); after a failure it closes at once.
std::unique_ptr<ZmqCommunicator> make_zmq_communicator(std::shared_ptr<ZmqNode> node, const Membership& membership);

}  // namespace pico::comm
