// The ring collectives over ZeroMQ. See zmq_communicator.h for the contract.
//
// Topology. Rank r owns K+2 PUSH sockets: K data connections and one control connection to
// its right neighbour (r+1), and one control connection to its left neighbour (r−1), each
// with a monitor. Everything a rank receives arrives on its node's PULL socket. All
// collectives move data rightwards only; the leftward control connection exists so that an
// abort travels both ways around the ring, and so that each neighbour of a dead rank has a
// connection that breaks when it dies.
//
// Engine. A collective is a state machine fed with messages: start() sends what needs no
// input, handle() consumes one accepted message (and may send), complete() says when this
// rank has everything. It then tells its left neighbour "done", and the round is over for it
// once its right neighbour has said "done" too: nothing of the round is left in flight.
// The loop receives without blocking, validates (wire_decode, then run/epoch/sender/round,
// then the collective's own checks), dispatches, flushes send queues, and polls. Sends
// never block: a full socket queues in an outbox. libzmq's I/O threads move bytes while
// this thread sums, so receiving, summing and sending overlap segment by segment.
//
// Messages of later rounds (a fast neighbour may start the next round before this rank has
// finished the current one; a broadcast root may run several rounds ahead) wait in a bounded
// stash; earlier rounds and epochs are dropped as stale.
#include <zmq.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <zmq.hpp>

#include "pico/comm/address.h"
#include "pico/comm/ring.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "zmq_node_impl.h"

namespace pico::comm {

namespace {

using Clock = std::chrono::steady_clock;

// How long a closing communicator tries to deliver its goodbye or abort.
constexpr std::chrono::milliseconds kControlLinger{200};
// Send buffer towards loopback peers when ZmqOptions::tcp_send_buffer_bytes is auto (-1).
constexpr int kLoopbackSendBuffer = 256 << 10;
// At most this many messages of later rounds are held (besides the byte bound).
constexpr std::size_t kMaxStashMessages = std::size_t{1} << 20;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// ---- sockets to neighbours ------------------------------------------------------------------

struct PeerSocket {
  zmq::socket_t sock;
  zmq::socket_t monitor;  // PAIR receiving this socket's monitor events
  int peer = 0;
  std::string role;  // "data 2", "control (right)", …
  bool control = false;
  enum class State { kConnecting, kUp, kDown } state = State::kConnecting;
  Clock::time_point opened_at = Clock::now();
  bool tcp_connected = false;    // a TCP connection was made at least once (ZMQ_EVENT_CONNECTED)
  Clock::time_point down_since;  // when it first dropped since the last completed collective
  bool disrupted = false;        // dropped since the last completed collective
  std::string last_error;
  std::deque<zmq::message_t> outbox;  // messages libzmq would not take yet (high-water mark)
};

// The message being sent: header fields + payload size; payload written by the caller.
zmq::message_t new_message(std::size_t payload_bytes) {
  return zmq::message_t(kWireHeaderBytes + payload_bytes);
}
std::uint8_t* payload_of(zmq::message_t& m) {
  return m.data<std::uint8_t>() + kWireHeaderBytes;
}

// ---- collectives as state machines --------------------------------------------------------

// What the engine gives a collective: sending, and rejecting a message with a reason.
struct Engine {
  virtual ~Engine() = default;
  virtual void send_data(zmq::message_t&& m) = 0;     // to the right neighbour, data connections
  virtual void send_control(zmq::message_t&& m) = 0;  // to the right neighbour, control connection
  virtual void reject(const char* reason, const MessageHeader& h, const std::string& detail) = 0;
  virtual void invalid(const std::string& why) = 0;            // ranks disagree: the collective fails with kInvalid
  virtual MessageHeader header(MessageKind kind) const = 0;    // run, epoch, round, src, world filled
  virtual void forward(zmq::message_t&& m, bool control) = 0;  // resend as is, with src = this rank
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual const char* name() const = 0;
  virtual void start(Engine& e) = 0;
  // h was decoded, authenticated and belongs to this round; payload = payload_of(m).
  virtual void handle(Engine& e, const MessageHeader& h, zmq::message_t&& m) = 0;
  virtual bool complete() const = 0;
  virtual std::string progress() const = 0;  // for timeout messages
};

// Per-segment bookkeeping: which segments arrived.
struct SegmentSet {
  std::vector<std::uint8_t> seen;
  std::size_t count = 0;
  void reset(std::size_t n) {
    seen.assign(n, 0);
    count = 0;
  }
  bool insert(std::size_t j) {
    if (seen[j]) return false;
    seen[j] = 1;
    ++count;
    return true;
  }
};

// Ring all-reduce: reduce-scatter then all-gather, each chunk cut into segments of S values.
class AllReduce final : public Collective {
 public:
  AllReduce(float* data, std::size_t n, const AllreduceOptions& o, int world, int rank, std::size_t segment_bytes)
      : data_(data),
        n_(n),
        wire_(o.wire),
        tag_(o.tag),
        w_(world),
        r_(rank),
        s_(zmq_segment_elements(o.wire, segment_bytes)) {
    chunks_.resize(w_);
    rs_.resize(w_);
    ag_.resize(w_);
    for (int c = 0; c < w_; ++c) {
      chunks_[c] = ring_chunk(n, w_, c);
      const std::size_t len = chunks_[c].second - chunks_[c].first;
      const std::size_t segs = (len + s_ - 1) / s_;
      rs_[c].reset(segs);
      ag_[c].reset(segs);
      if (c != r_) rs_expected_ += segs;
      if (ring_owner(c, w_) != r_) ag_expected_ += segs;
    }
    if (wire_ != WireDtype::kFloat32) scratch_.resize(std::min(s_, n_ / std::max(1, w_) + 1));
  }
  const char* name() const override { return "all-reduce"; }

  void start(Engine& e) override {
    if (w_ == 1) {
      // The reference re-quantizes even a lone rank's values (ring.h: result ← decode(encode(a))).
      if (wire_ != WireDtype::kFloat32) {
        std::vector<std::uint8_t> buf(encoded_size(wire_, std::min(kUInt8Block, n_)));
        for (std::size_t off = 0; off < n_; off += kUInt8Block) {
          const std::size_t m = std::min(kUInt8Block, n_ - off);
          encode(wire_, data_ + off, m, buf.data());
          decode(wire_, buf.data(), m, data_ + off);
        }
      }
      return;
    }
    // Reduce-scatter hop 0: this rank starts its own chunk r.
    const auto [b, e_] = chunks_[r_];
    for (std::size_t off = b; off < e_; off += s_) {
      const std::size_t m = std::min(s_, e_ - off);
      zmq::message_t msg = new_message(encoded_size(wire_, m));
      encode(wire_, data_ + off, m, payload_of(msg));
      seal(e, msg, MessageKind::kReduceScatter, r_, off, m);
      e.send_data(std::move(msg));
    }
  }

  void handle(Engine& e, const MessageHeader& h, zmq::message_t&& msg) override {
    if (h.kind != MessageKind::kReduceScatter && h.kind != MessageKind::kAllGatherChunk)
      return e.invalid(str("left neighbour sent ", to_string(h.kind), " during an all-reduce of the same round"));
    if (h.tag != tag_ || h.total != n_ || h.dtype != wire_)
      return e.invalid(str("left neighbour's all-reduce has tag ", h.tag, ", ", h.total, " values, wire ",
                           to_string(h.dtype), "; this rank's: tag ", tag_, ", ", n_, " values, wire ",
                           to_string(wire_)));
    const int c = static_cast<int>(h.chunk);
    const auto [b, end] = chunks_[c];
    if (h.offset < b || h.offset >= end || (h.offset - b) % s_ != 0)
      return e.reject("segment", h,
                      str("offset ", h.offset, " is not a segment start of chunk ", c, " [", b, ", ", end,
                          ") with segments of ", s_,
                          " values (do all ranks use the same "
                          "segment_bytes?)"));
    const std::size_t j = (h.offset - b) / s_;
    const std::size_t m = std::min(s_, end - h.offset);
    if (h.count != m) return e.reject("segment", h, str("segment of ", h.count, " values, expected ", m));
    const int owner = ring_owner(c, w_);
    const std::uint8_t* in = payload_of(msg);
    float* own = data_ + h.offset;

    if (h.kind == MessageKind::kReduceScatter) {
      if (c == r_) return e.reject("unexpected", h, str("reduce-scatter of this rank's own chunk ", c));
      if (!rs_[c].insert(j)) return e.reject("duplicate", h, str("reduce-scatter segment ", j, " of chunk ", c));
      // a ← own + decode(a_received); the owner's result is decode(encode(a)) (ring.h)
      zmq::message_t out = new_message(encoded_size(wire_, m));
      std::uint8_t* wire_out = payload_of(out);
      if (wire_ == WireDtype::kFloat32) {
        const float* a = reinterpret_cast<const float*>(in);
        float* sum = reinterpret_cast<float*>(wire_out);
        for (std::size_t i = 0; i < m; ++i) sum[i] = own[i] + a[i];
        if (r_ == owner) std::memcpy(own, sum, m * sizeof(float));
      } else {
        if (scratch_.size() < m) scratch_.resize(m);
        std::memcpy(scratch_.data(), own, m * sizeof(float));
        decode_add(wire_, in, m, scratch_.data());
        encode(wire_, scratch_.data(), m, wire_out);
        if (r_ == owner) decode(wire_, wire_out, m, own);
      }
      seal(e, out, r_ == owner ? MessageKind::kAllGatherChunk : MessageKind::kReduceScatter, c, h.offset, m);
      e.send_data(std::move(out));
      return;
    }
    // All-gather: the owner's encoded bytes, decoded here and passed on unchanged.
    if (owner == r_) return e.reject("unexpected", h, str("all-gather of chunk ", c, " which this rank owns"));
    if (!ag_[c].insert(j)) return e.reject("duplicate", h, str("all-gather segment ", j, " of chunk ", c));
    decode(wire_, in, m, own);
    if ((r_ + 1) % w_ != owner) e.forward(std::move(msg), false);
  }

  bool complete() const override {
    std::size_t rs = 0, ag = 0;
    for (int c = 0; c < w_; ++c) {
      rs += rs_[c].count;
      ag += ag_[c].count;
    }
    return rs == rs_expected_ && ag == ag_expected_;
  }

  std::string progress() const override {
    std::size_t rs = 0, ag = 0;
    for (int c = 0; c < w_; ++c) {
      rs += rs_[c].count;
      ag += ag_[c].count;
    }
    return str("reduce-scatter ", rs, "/", rs_expected_, " and all-gather ", ag, "/", ag_expected_,
               " segments received");
  }

 private:
  void seal(Engine& e, zmq::message_t& msg, MessageKind kind, int chunk, std::size_t offset, std::size_t m) {
    MessageHeader h = e.header(kind);
    h.tag = tag_;
    h.dtype = wire_;
    h.chunk = static_cast<std::uint32_t>(chunk);
    h.length = static_cast<std::uint32_t>(msg.size() - kWireHeaderBytes);
    h.offset = offset;
    h.total = n_;
    h.count = m;
    wire_seal(h, payload_of(msg), msg.data<std::uint8_t>());
  }

  float* data_;
  std::size_t n_;
  WireDtype wire_;
  std::uint64_t tag_;
  int w_, r_;
  std::size_t s_;  // values per segment
  std::vector<std::pair<std::size_t, std::size_t>> chunks_;
  std::vector<SegmentSet> rs_, ag_;
  std::size_t rs_expected_ = 0, ag_expected_ = 0;
  std::vector<float> scratch_;
};

// Ring all-gather of byte payloads (sizes differ): each payload travels W−1 hops rightwards.
// Also the broadcast (only the root's payload travels) and the barrier (empty payloads).
class Gather final : public Collective {
 public:
  enum class Mode { kAllGather, kBroadcast, kBarrier };
  Gather(Mode mode, int world, int rank, std::uint64_t tag, std::size_t segment_bytes, std::uint64_t max_bytes,
         int root, std::vector<std::vector<std::uint8_t>*> outs, const std::vector<std::uint8_t>* mine)
      : mode_(mode),
        w_(world),
        r_(rank),
        tag_(tag),
        seg_(segment_bytes),
        max_bytes_(max_bytes),
        root_(root),
        outs_(std::move(outs)),
        mine_(mine),
        sized_(world, 0),
        segs_(world) {}

  const char* name() const override {
    return mode_ == Mode::kAllGather ? "all-gather" : mode_ == Mode::kBroadcast ? "broadcast" : "barrier";
  }
  MessageKind kind() const {
    return mode_ == Mode::kAllGather   ? MessageKind::kGather
           : mode_ == Mode::kBroadcast ? MessageKind::kBroadcast
                                       : MessageKind::kBarrier;
  }
  // How many origins this rank waits for.
  int expected_origins() const { return mode_ == Mode::kBroadcast ? (r_ == root_ ? 0 : 1) : w_ - 1; }

  void start(Engine& e) override {
    if (w_ == 1) return;
    if (mode_ == Mode::kBroadcast && r_ != root_) return;
    if (mode_ == Mode::kBarrier) {
      MessageHeader h = e.header(MessageKind::kBarrier);
      h.tag = tag_;
      h.chunk = static_cast<std::uint32_t>(r_);
      zmq::message_t msg = new_message(0);
      wire_seal(h, payload_of(msg), msg.data<std::uint8_t>());
      e.send_control(std::move(msg));
      return;
    }
    const std::size_t size = mine_->size();
    std::size_t off = 0;
    do {
      const std::size_t len = std::min(seg_, size - off);
      zmq::message_t msg = new_message(len);
      if (len) std::memcpy(payload_of(msg), mine_->data() + off, len);
      MessageHeader h = e.header(kind());
      h.tag = tag_;
      h.chunk = static_cast<std::uint32_t>(r_);
      h.length = static_cast<std::uint32_t>(len);
      h.offset = off;
      h.total = size;
      wire_seal(h, payload_of(msg), msg.data<std::uint8_t>());
      e.send_data(std::move(msg));
      off += len;
    } while (off < size);
  }

  void handle(Engine& e, const MessageHeader& h, zmq::message_t&& msg) override {
    if (h.kind != kind())
      return e.invalid(str("left neighbour sent ", to_string(h.kind), " during a ", name(), " of the same round"));
    if (h.tag != tag_) return e.invalid(str("left neighbour's ", name(), " has tag ", h.tag, ", this rank's ", tag_));
    const int origin = static_cast<int>(h.chunk);
    if (mode_ == Mode::kBroadcast && origin != root_)
      return e.invalid(str("left neighbour broadcasts from root ", origin, ", this rank from root ", root_));
    if (origin == r_) return e.reject("unexpected", h, str(name(), " payload of this rank's own origin"));
    if (mode_ == Mode::kBarrier) {
      if (sized_[origin]) return e.reject("duplicate", h, str("barrier token of rank ", origin));
      sized_[origin] = 1;
      ++origins_done_;
    } else {
      if (!sized_[origin]) {
        if (h.total > max_bytes_)
          return e.reject("oversize-allocation", h,
                          str(name(), " payload of ", h.total, " bytes exceeds the bound of ", max_bytes_,
                              " (ZmqOptions::max_", mode_ == Mode::kAllGather ? "gather" : "broadcast", "_bytes)"));
        std::vector<std::uint8_t>& out = *outs_[mode_ == Mode::kBroadcast ? 0 : origin];
        out.assign(h.total, 0);
        segs_[origin].reset(h.total == 0 ? 1 : (h.total + seg_ - 1) / seg_);
        totals_.resize(w_);
        totals_[origin] = h.total;
        sized_[origin] = 1;
      } else if (h.total != totals_[origin]) {
        return e.reject("segment", h,
                        str("size ", h.total, " but earlier segments of rank ", origin, " said ", totals_[origin]));
      }
      if (h.offset % seg_ != 0 || h.length != std::min<std::uint64_t>(seg_, h.total - h.offset))
        return e.reject(
            "segment", h,
            str("byte segment [", h.offset, ", +", h.length, ") of ", h.total, " is not one of segment size ", seg_));
      if (!segs_[origin].insert(h.total == 0 ? 0 : h.offset / seg_))
        return e.reject("duplicate", h, str("segment at ", h.offset, " of rank ", origin));
      std::vector<std::uint8_t>& out = *outs_[mode_ == Mode::kBroadcast ? 0 : origin];
      if (h.length) std::memcpy(out.data() + h.offset, payload_of(msg), h.length);
      if (segs_[origin].count == segs_[origin].seen.size()) ++origins_done_;
    }
    if ((r_ + 1) % w_ != origin) e.forward(std::move(msg), mode_ == Mode::kBarrier);
  }

  bool complete() const override { return origins_done_ == expected_origins(); }
  std::string progress() const override {
    return str(origins_done_, " of ", expected_origins(), " ranks' ", name(), " payloads complete");
  }

 private:
  Mode mode_;
  int w_, r_;
  std::uint64_t tag_;
  std::size_t seg_;
  std::uint64_t max_bytes_;
  int root_;
  std::vector<std::vector<std::uint8_t>*> outs_;
  const std::vector<std::uint8_t>* mine_;
  std::vector<std::uint8_t> sized_;
  std::vector<SegmentSet> segs_;
  std::vector<std::uint64_t> totals_;
  int origins_done_ = 0;
};

// ---- the communicator -----------------------------------------------------------------------

class ZmqCommunicatorImpl final : public ZmqCommunicator, private Engine {
 public:
  ZmqCommunicatorImpl(std::shared_ptr<ZmqNode> node, const Membership& m)
      : node_(std::move(node)),
        n_(node_->impl()),
        m_(m),
        w_(m.world_size()),
        r_(m.rank),
        left_((m.rank + w_ - 1) % w_),
        right_((m.rank + 1) % w_),
        curve_(n_.options.security == ZmqSecurity::kCurve),
        departed_(w_, 0) {
    n_.cancelled.store(false);
    for (int i = 0; i < w_; ++i) key_rank_.emplace(m_.members[i].public_key, i);
    std::vector<std::string> keys;
    for (const auto& mem : m_.members) keys.push_back(mem.public_key);
    node_->admit(keys);
    limits_.max_payload_bytes = static_cast<std::uint32_t>(zmq_max_message_bytes(n_.options) - kWireHeaderBytes);
    tag_ = str("[zmq r", r_, "/", w_, " e", m_.epoch, "] ");
    if (w_ > 1) {
      for (int k = 0; k < n_.options.connections_per_peer; ++k) data_.push_back(open(right_, str("data ", k)));
      ctl_right_ = open(right_, "control (right)");
      ctl_left_ = open(left_, "control (left)");
    }
  }

  ~ZmqCommunicatorImpl() override {
    const bool clean = broken_ == Status::kOk;
    if (clean && w_ > 1) {
      send_text(MessageKind::kGoodbye, "closing after the last collective");
      flush_outboxes();
    }
    // Data still queued after success is what the right neighbour needs to finish: wait for
    // it to leave (a neighbour that finished has taken everything, so usually nothing waits).
    // Goodbyes and aborts are best effort: a neighbour that is gone must not hold up closing.
    const int data_linger = clean ? static_cast<int>(n_.options.close_linger.count()) : 0;
    const int control_linger = static_cast<int>(std::min(n_.options.close_linger, kControlLinger).count());
    for (PeerSocket* p : all_sockets()) {
      try {
        // Messages libzmq did not take yet (never with an unlimited high-water mark) get the
        // linger time to go too.
        if (clean && !p->outbox.empty()) {
          p->sock.set(zmq::sockopt::sndtimeo, p->control ? control_linger : data_linger);
          for (auto& m : p->outbox)
            if (!p->sock.send(m, zmq::send_flags::none)) break;
        }
        p->outbox.clear();
        zmq_socket_monitor(p->sock.handle(), nullptr, 0);
        p->sock.set(zmq::sockopt::linger, p->control ? control_linger : data_linger);
        p->sock.close();
        p->monitor.close();
      } catch (const zmq::error_t&) {
      }
    }
    n_.in_use.store(false);
  }

  int rank() const override { return r_; }
  int world_size() const override { return w_; }
  const Membership& membership() const override { return m_; }
  ZmqStats stats() const override { return stats_; }
  bool broken() const override { return broken_ != Status::kOk; }
  std::vector<int> unreachable() const override { return unreachable_; }

  CollectiveResult all_reduce(float* data, std::size_t n, const AllreduceOptions& o) override {
    AllReduce op(data, n, o, w_, r_, zmq_message_payload_bytes(n_.options));
    return run(op, o.timeout);
  }

  CollectiveResult all_gather(const std::vector<std::uint8_t>& mine, std::vector<std::vector<std::uint8_t>>& out,
                              const AllgatherOptions& o) override {
    out.assign(static_cast<std::size_t>(w_), {});
    std::vector<std::vector<std::uint8_t>*> outs;
    for (auto& v : out) outs.push_back(&v);
    Gather op(Gather::Mode::kAllGather, w_, r_, o.tag, zmq_message_payload_bytes(n_.options),
              n_.options.max_gather_bytes, 0, outs, &mine);
    CollectiveResult r = run(op, o.timeout);
    if (r.ok()) out[r_] = mine;
    return r;
  }

  CollectiveResult broadcast(std::vector<std::uint8_t>& data, const BroadcastOptions& o) override {
    if (o.root < 0 || o.root >= w_) {
      CollectiveResult r;
      r.status = Status::kInvalid;
      r.error = str("broadcast root ", o.root, " outside [0, ", w_, ")");
      r.world_size = w_;
      return r;
    }
    std::vector<std::uint8_t> received;
    Gather op(Gather::Mode::kBroadcast, w_, r_, o.tag, zmq_message_payload_bytes(n_.options),
              n_.options.max_broadcast_bytes, o.root, {&received}, &data);
    CollectiveResult r = run(op, o.timeout);
    if (r.ok() && r_ != o.root) data = std::move(received);
    return r;
  }

  CollectiveResult barrier(const BarrierOptions& o) override {
    Gather op(Gather::Mode::kBarrier, w_, r_, o.tag, zmq_message_payload_bytes(n_.options), 0, 0, {}, nullptr);
    return run(op, o.timeout);
  }

 private:
  // ---- sockets ----
  std::unique_ptr<PeerSocket> open(int peer, const std::string& role) {
    auto p = std::make_unique<PeerSocket>();
    p->peer = peer;
    p->role = role;
    p->control = role.rfind("control", 0) == 0;
    p->sock = zmq::socket_t(n_.ctx, zmq::socket_type::push);
    zmq::socket_t& s = p->sock;
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndhwm, 0);  // our own messages, bounded by the collective's size
    if (const int sndbuf = send_buffer_bytes(m_.members[peer].endpoint); sndbuf > 0)
      s.set(zmq::sockopt::sndbuf, sndbuf);
    s.set(zmq::sockopt::reconnect_ivl, 100);
    s.set(zmq::sockopt::reconnect_ivl_max, 1000);
    if (n_.options.heartbeat_interval.count() > 0) {
      s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(n_.options.heartbeat_interval.count()));
      s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(n_.options.heartbeat_timeout.count()));
    }
    if (curve_) {
      s.set(zmq::sockopt::curve_serverkey, m_.members[peer].public_key);
      s.set(zmq::sockopt::curve_publickey, n_.keys.public_key);
      s.set(zmq::sockopt::curve_secretkey, n_.keys.secret_key);
    }
    const std::string mon = str("inproc://pico-monitor-", n_.monitor_counter.fetch_add(1));
    if (zmq_socket_monitor(s.handle(), mon.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
      throw Error(str("zmq_socket_monitor failed: ", zmq_strerror(zmq_errno())));
    p->monitor = zmq::socket_t(n_.ctx, zmq::socket_type::pair);
    p->monitor.set(zmq::sockopt::linger, 0);
    p->monitor.connect(mon);
    s.connect(m_.members[peer].endpoint);
    return p;
  }

  int send_buffer_bytes(const std::string& endpoint) const {
    const int configured = n_.options.tcp_send_buffer_bytes;
    if (configured >= 0) return configured;
    // A peer on this machine (loopback, or one of this machine's own addresses) is reached over lo.
    if (endpoint.rfind("tcp://", 0) != 0) return 0;
    const std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);
    if (host.empty() || host.front() == '[') return host == "[::1]" ? kLoopbackSendBuffer : 0;
    static const std::vector<std::string> own = local_ipv4_addresses();
    const bool local = is_loopback_host(host) || std::find(own.begin(), own.end(), host) != own.end();
    return local ? kLoopbackSendBuffer : 0;
  }

  std::vector<PeerSocket*> all_sockets() {
    std::vector<PeerSocket*> v;
    for (auto& d : data_) v.push_back(d.get());
    if (ctl_right_) v.push_back(ctl_right_.get());
    if (ctl_left_) v.push_back(ctl_left_.get());
    return v;
  }

  // Sends now if the socket takes it, else queues (order per socket is kept).
  void push(PeerSocket& p, zmq::message_t&& m) {
    result_.bytes_sent += m.size();
    if (p.outbox.empty()) {
      try {
        if (p.sock.send(m, zmq::send_flags::dontwait)) return;
      } catch (const zmq::error_t& e) {
        fail(Status::kAborted, str("send to rank ", p.peer, " failed: ", e.what()));
        return;
      }
    }
    p.outbox.push_back(std::move(m));
  }

  void flush_outboxes() {
    for (PeerSocket* p : all_sockets()) {
      while (!p->outbox.empty()) {
        try {
          if (!p->sock.send(p->outbox.front(), zmq::send_flags::dontwait)) break;
        } catch (const zmq::error_t&) {
          break;
        }
        p->outbox.pop_front();
      }
    }
  }

  // ---- Engine ----
  void send_data(zmq::message_t&& m) override { push(*data_[next_data_++ % data_.size()], std::move(m)); }
  void send_control(zmq::message_t&& m) override { push(*ctl_right_, std::move(m)); }
  void forward(zmq::message_t&& m, bool control) override {
    wire_reseal_header(m.data<std::uint8_t>(), static_cast<std::uint16_t>(r_));
    control ? send_control(std::move(m)) : send_data(std::move(m));
  }
  MessageHeader header(MessageKind kind) const override {
    MessageHeader h;
    h.kind = kind;
    h.run_id = m_.run_id;
    h.round = round_;
    h.epoch = m_.epoch;
    h.src = static_cast<std::uint16_t>(r_);
    h.world = static_cast<std::uint16_t>(w_);
    return h;
  }
  void reject(const char* reason, const MessageHeader& h, const std::string& detail) override {
    count_reject(reason, str(to_string(h.kind), " message from rank ", h.src, " (round ", h.round, "): ", detail));
  }
  void invalid(const std::string& why) override { fail(Status::kInvalid, str("ranks disagree: ", why)); }

  void count_reject(const std::string& reason, const std::string& detail) {
    ++stats_.messages_rejected;
    ++stats_.rejected_by_reason[reason];
    // A hostile or broken peer must not flood the log: the first 50, then every 1000th.
    if (stats_.messages_rejected <= 50 || stats_.messages_rejected % 1000 == 0)
      log_warn(tag_, "rejected a message (", reason, "): ", detail, " [", stats_.messages_rejected,
               " rejected so far]");
  }

  void send_text(MessageKind kind, const std::string& text) {
    const std::string t = text.substr(0, kWireMaxReasonBytes);
    for (PeerSocket* p : {ctl_right_.get(), ctl_left_.get()}) {
      if (!p) continue;
      zmq::message_t msg = new_message(t.size());
      std::memcpy(payload_of(msg), t.data(), t.size());
      MessageHeader h = header(kind);
      h.length = static_cast<std::uint32_t>(t.size());
      wire_seal(h, payload_of(msg), msg.data<std::uint8_t>());
      try {
        p->sock.send(msg, zmq::send_flags::dontwait);
      } catch (const zmq::error_t&) {
      }
    }
  }

  void send_done() {
    zmq::message_t msg = new_message(0);
    MessageHeader h = header(MessageKind::kDone);
    wire_seal(h, payload_of(msg), msg.data<std::uint8_t>());
    push(*ctl_left_, std::move(msg));
  }

  // Breaks the group: this collective and all later ones fail; both neighbours are told.
  void fail(Status s, const std::string& why) {
    if (broken_ != Status::kOk) return;
    broken_ = s;
    broken_reason_ = why;
    send_text(MessageKind::kAbort, str("rank ", r_, ": ", why));
  }

  // ---- receiving ----
  // Classifies one received frame; dispatches it to `op`, stashes, or drops it.
  void receive(Collective& op, zmq::message_t&& msg) {
    result_.bytes_received += msg.size();
    MessageHeader h;
    std::string detail;
    const WireError err = wire_decode(msg.data<std::uint8_t>(), msg.size(), limits_, h, &detail);
    if (err != WireError::kOk)
      return count_reject(to_string(err), str("malformed frame of ", msg.size(), " bytes: ", detail));
    if (h.run_id != m_.run_id)
      return count_reject("run-id",
                          str(to_string(h.kind), " message for run ", h.run_id, ", this group is run ", m_.run_id));
    if (h.epoch < m_.epoch) {
      ++stats_.messages_stale;
      return;
    }
    if (h.epoch > m_.epoch)
      return count_reject("epoch",
                          str(to_string(h.kind), " message of epoch ", h.epoch, ", this group is epoch ", m_.epoch));
    if (h.world != w_)
      return count_reject("rank", str(to_string(h.kind), " message for a group of ", h.world, ", this one has ", w_));
    int sender = h.src;
    if (curve_) {
      // The ZAP handler named the connection by its admitted key: that, not the header, says who sent it.
      const char* uid = zmq_msg_gets(msg.handle(), "User-Id");
      const auto it = uid ? key_rank_.find(std::string_view(uid)) : key_rank_.end();
      if (it == key_rank_.end())
        return count_reject(
            "sender", str(to_string(h.kind), " message on a connection of a non-member key ", uid ? uid : "(none)"));
      if (it->second != h.src)
        return count_reject("sender", str(to_string(h.kind), " message claims rank ", h.src, " but arrived on rank ",
                                          it->second, "'s connection"));
      sender = it->second;
    }
    if (h.kind == MessageKind::kAbort || h.kind == MessageKind::kGoodbye) {
      if (sender != left_ && sender != right_)
        return count_reject("sender", str(to_string(h.kind), " from rank ", sender, ", not a neighbour"));
      const std::string text(reinterpret_cast<const char*>(payload_of(msg)), h.length);
      if (h.kind == MessageKind::kGoodbye) {
        departed_[sender] = 1;
        log_debug(tag_, "rank ", sender, " left the group: ", text);
      } else {
        fail(Status::kPeerFailed, str("neighbour rank ", sender, " reports the group broke: ", text));
      }
      return;
    }
    if (h.kind == MessageKind::kDone) {
      if (sender != right_)
        return count_reject("sender", str("done from rank ", sender, ", expected only the right neighbour ", right_));
      if (h.round < round_) {
        ++stats_.messages_stale;
        return;
      }
      if (done_rounds_.size() >= 1024)
        return count_reject("round", str("done for round ", h.round, " beyond the bound of 1024 rounds held"));
      done_rounds_.insert(h.round);
      return;
    }
    if (sender != left_)
      return count_reject("sender", str(to_string(h.kind), " from rank ", sender,
                                        ", expected only the left "
                                        "neighbour ",
                                        left_));
    if (h.round < round_) {
      ++stats_.messages_stale;
      return;
    }
    if (h.round > round_) {
      // A neighbour may run ahead: by one round in general, by many through broadcasts whose
      // root it is. Keep its messages for their round, within a bound on memory.
      if (stash_bytes_ + msg.size() > stash_limit_ || stash_count_ >= kMaxStashMessages)
        return count_reject("round", str(to_string(h.kind), " message for round ", h.round, " (this rank is in round ",
                                         round_, ") beyond the bound of ", stash_limit_,
                                         " bytes held for later "
                                         "rounds"));
      stash_bytes_ += msg.size();
      ++stash_count_;
      result_.bytes_received -= msg.size();  // counted when its round takes it
      stash_[h.round].push_back(std::move(msg));
      return;
    }
    ++stats_.messages_accepted;
    ++processed_;
    op.handle(*this, h, std::move(msg));
    if (n_.options.on_message) n_.options.on_message(round_, h.kind, processed_);
  }

  // ---- monitors ----
  void read_monitors() {
    for (PeerSocket* p : all_sockets()) {
      while (true) {
        zmq::message_t ev, addr;
        try {
          if (!p->monitor.recv(ev, zmq::recv_flags::dontwait)) break;
          if (ev.more()) (void)p->monitor.recv(addr, zmq::recv_flags::dontwait);
        } catch (const zmq::error_t&) {
          break;
        }
        if (ev.size() < 6) continue;
        std::uint16_t id;
        std::memcpy(&id, ev.data(), 2);
        switch (id) {
          case ZMQ_EVENT_CONNECTED:
            p->tcp_connected = true;
            break;
          case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            if (p->disrupted) log_warn(tag_, "connection to rank ", p->peer, " (", p->role, ") re-established");
            p->state = PeerSocket::State::kUp;
            p->last_error.clear();
            break;
          case ZMQ_EVENT_DISCONNECTED:
            // Only a connection that was up can be lost; failed handshakes are retried by
            // libzmq and surface, if they persist, in the timeout's message. A connection that
            // dropped may have lost messages in flight even if libzmq reconnects at once: it
            // counts as disrupted until a collective completes.
            if (p->state == PeerSocket::State::kUp) {
              p->state = PeerSocket::State::kDown;
              p->last_error = "disconnected";
              if (!p->disrupted) p->down_since = Clock::now();
              p->disrupted = true;
              log_warn(tag_, "connection to rank ", p->peer, " (", m_.members[p->peer].endpoint, ", ", p->role,
                       ") dropped");
            }
            break;
          case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            p->last_error = "the peer refused our key (not admitted by its ZAP handler)";
            break;
          case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
          case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            p->last_error = "handshake failed (wrong server key, or the peer does not speak CURVE)";
            break;
          default:
            break;
        }
      }
    }
  }

  // A neighbour connection down longer than the grace period fails the collective, and so
  // does a neighbour that could not be connected to at all within the connect timeout.
  void check_connections() {
    const auto grace = n_.options.disconnect_grace;
    const auto connect_timeout = n_.options.connect_timeout;
    std::string unreachable_why;
    for (PeerSocket* p : all_sockets()) {
      if (connect_timeout.count() > 0 && p->state == PeerSocket::State::kConnecting && !p->tcp_connected &&
          !departed_[p->peer] && Clock::now() - p->opened_at >= connect_timeout) {
        if (std::find(unreachable_.begin(), unreachable_.end(), p->peer) == unreachable_.end()) {
          unreachable_.push_back(p->peer);
          unreachable_why += str(unreachable_why.empty() ? "" : "; ", "cannot reach rank ", p->peer, " at ",
                                 m_.members[p->peer].endpoint, " (", p->role, ")");
        }
      }
    }
    if (!unreachable_why.empty())
      return fail(Status::kPeerFailed,
                  str(unreachable_why, ": no connection within ", connect_timeout.count(),
                      " ms (behind a NAT or firewall, or an advertised address others cannot reach)"));
    for (PeerSocket* p : all_sockets()) {
      if (!p->disrupted || departed_[p->peer]) continue;
      if (Clock::now() - p->down_since >= grace)
        return fail(Status::kPeerFailed,
                    str(p->state == PeerSocket::State::kDown ? "lost the connection to rank "
                                                             : "messages may have been lost: the connection to rank ",
                        p->peer, " (", m_.members[p->peer].endpoint, ", ", p->role, ") ",
                        p->state == PeerSocket::State::kDown ? "dropped " : "dropped and came back, ",
                        static_cast<long>(ms_since(p->down_since)), " ms ago"));
    }
  }

  std::string connection_report() const {
    std::string s;
    auto add = [&](const PeerSocket* p) {
      if (!p) return;
      const char* st = p->state == PeerSocket::State::kUp     ? "up"
                       : p->state == PeerSocket::State::kDown ? "down"
                                                              : "never connected";
      s += str("; rank ", p->peer, " ", p->role, ": ", st, p->last_error.empty() ? "" : " (" + p->last_error + ")");
    };
    add(ctl_right_.get());
    add(ctl_left_.get());
    if (!data_.empty()) add(data_.front().get());
    return s;
  }

  // ---- the loop ----
  CollectiveResult run(Collective& op, std::chrono::milliseconds timeout) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + timeout;
    result_ = {};
    result_.world_size = w_;
    processed_ = 0;
    auto finish = [&](Status s, std::string why) {
      CollectiveResult r = result_;
      r.status = s;
      r.error = std::move(why);
      r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return r;
    };
    if (broken_ != Status::kOk)
      return finish(Status::kPeerFailed, str("this group broke earlier: ", broken_reason_,
                                             " (HINT: build a new group from the survivors and retry)"));
    for (int p : {left_, right_})
      if (w_ > 1 && departed_[p]) fail(Status::kPeerFailed, str("rank ", p, " has left the group (said goodbye)"));

    // Messages that arrived early for this round are its first messages.
    std::vector<zmq::message_t> stashed;
    if (auto it = stash_.find(round_); it != stash_.end()) {
      stashed = std::move(it->second);
      stash_.erase(it);
      for (const auto& m : stashed) stash_bytes_ -= m.size();
      stash_count_ -= stashed.size();
    }
    if (broken_ == Status::kOk) op.start(*this);
    for (auto& m : stashed)
      if (broken_ == Status::kOk) receive(op, std::move(m));

    std::vector<zmq::pollitem_t> items;
    std::vector<PeerSocket*> sockets = all_sockets();
    bool monitor_ready = true;
    auto last_monitor_read = Clock::now();
    // A round is over for this rank when it has everything it needs and its right neighbour
    // says it has everything it needed from this rank: nothing of the round is then in flight,
    // so closing or failing later cannot lose a message someone still waits for.
    bool done_sent = false;
    auto finished = [&] {
      if (!done_sent && op.complete() && broken_ == Status::kOk && w_ > 1) {
        send_done();
        done_sent = true;
      }
      return op.complete() && (w_ == 1 || done_rounds_.count(round_) > 0);
    };
    while (broken_ == Status::kOk && !finished()) {
      // Drain what has arrived (bounded, so that queued sends keep moving). Everything queued
      // is read, even once the collective is complete: aborts and garbage are dealt with now,
      // and the next round's early messages wait in the stash.
      for (int i = 0; i < 256 && broken_ == Status::kOk; ++i) {
        zmq::message_t msg;
        zmq::recv_result_t got;
        try {
          got = n_.pull.recv(msg, zmq::recv_flags::dontwait);
        } catch (const zmq::error_t& e) {
          fail(Status::kAborted, str("receive failed: ", e.what()));
          break;
        }
        if (!got) break;
        receive(op, std::move(msg));
      }
      flush_outboxes();
      // Monitor events are rare: read them when poll saw one, or every few milliseconds.
      if (monitor_ready || Clock::now() - last_monitor_read > std::chrono::milliseconds(20)) {
        read_monitors();
        last_monitor_read = Clock::now();
        monitor_ready = false;
      }
      check_connections();
      if (n_.cancelled.load()) {
        std::string why;
        {
          std::lock_guard<std::mutex> lock(n_.endpoint_mu);
          why = n_.cancel_reason;
        }
        fail(Status::kAborted, str("cancelled: ", why));
      }
      if (broken_ != Status::kOk || finished()) break;
      const auto now = Clock::now();
      if (now >= deadline) {
        fail(Status::kTimeout,
             str(op.name(), " round ", round_, " did not complete within ", timeout.count(), " ms: ", op.progress(),
                 op.complete() ? " (the right neighbour has not confirmed receipt)" : "", connection_report()));
        break;
      }
      items.clear();
      items.push_back({n_.pull.handle(), 0, ZMQ_POLLIN, 0});
      for (PeerSocket* p : sockets) {
        items.push_back({p->monitor.handle(), 0, ZMQ_POLLIN, 0});
        if (!p->outbox.empty()) items.push_back({p->sock.handle(), 0, ZMQ_POLLOUT, 0});
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1);
      wait = std::min(wait, std::chrono::milliseconds(50));
      try {
        zmq::poll(items.data(), items.size(), wait);
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) fail(Status::kAborted, str("poll failed: ", e.what()));
      }
      for (std::size_t i = 1; i < items.size(); ++i)
        if ((items[i].events & ZMQ_POLLIN) && (items[i].revents & ZMQ_POLLIN)) monitor_ready = true;
    }
    if (broken_ != Status::kOk) {
      log_warn(tag_, op.name(), " round ", round_, " failed (", to_string(broken_), "): ", broken_reason_);
      return finish(broken_ == Status::kInvalid || broken_ == Status::kTimeout || broken_ == Status::kAborted
                        ? broken_
                        : Status::kPeerFailed,
                    broken_reason_);
    }
    done_rounds_.erase(round_);
    flush_outboxes();
    // Everything this round needed arrived: earlier drops lost nothing that mattered.
    for (PeerSocket* p : sockets) p->disrupted = false;
    // Early messages of later rounds may add up to a few rounds' traffic.
    stash_limit_ = std::max<std::uint64_t>(stash_limit_, 4 * result_.bytes_received);
    ++round_;
    return finish(Status::kOk, "");
  }

  std::shared_ptr<ZmqNode> node_;
  ZmqNode::Impl& n_;
  Membership m_;
  int w_, r_, left_, right_;
  bool curve_;
  std::string tag_;
  WireLimits limits_;
  std::unordered_map<std::string_view, int> key_rank_;
  std::vector<std::unique_ptr<PeerSocket>> data_;
  std::unique_ptr<PeerSocket> ctl_right_, ctl_left_;
  std::size_t next_data_ = 0;
  std::uint64_t round_ = 0;
  std::uint64_t processed_ = 0;
  Status broken_ = Status::kOk;
  std::string broken_reason_;
  std::vector<int> unreachable_;  // neighbours never connected to within the connect timeout
  std::vector<std::uint8_t> departed_;
  std::map<std::uint64_t, std::vector<zmq::message_t>> stash_;  // round → messages
  std::set<std::uint64_t> done_rounds_;                         // rounds the right neighbour has received everything of
  std::uint64_t stash_bytes_ = 0, stash_limit_ = std::uint64_t{1} << 30;
  std::size_t stash_count_ = 0;
  CollectiveResult result_;
  ZmqStats stats_;
};

}  // namespace

std::unique_ptr<ZmqCommunicator> make_zmq_communicator(std::shared_ptr<ZmqNode> node, const Membership& membership) {
  PICO_CHECK(node != nullptr);
  const bool curve = node->options().security == ZmqSecurity::kCurve;
  membership.validate(curve);
  const Member& me = membership.members[membership.rank];
  if (me.endpoint != node->endpoint() || (curve && me.public_key != node->public_key()))
    throw Error(str("membership says rank ", membership.rank, " is ", me.endpoint, " with key ", me.public_key,
                    ", but this node is ", node->endpoint(), " with key ", node->public_key()),
                "make the communicator on the node whose endpoint and key the membership lists");
  bool expected = false;
  if (!node->impl().in_use.compare_exchange_strong(expected, true))
    throw Error("this node already has a communicator", "destroy the previous (e.g. broken) communicator first");
  try {
    return std::make_unique<ZmqCommunicatorImpl>(node, membership);
  } catch (...) {
    node->impl().in_use.store(false);
    throw;
  }
}

}  // namespace pico::comm
