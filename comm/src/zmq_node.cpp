// ZmqNode, options and membership: everything about the group but the collectives.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "pico/comm/address.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"
#include "zmq_node_impl.h"

namespace pico::comm {

namespace {
constexpr std::size_t kCurveFrameOverhead = 64;
}

std::size_t zmq_segment_elements(WireDtype wire, std::size_t segment_bytes) {
  if (wire == WireDtype::kUInt8) {
    const std::size_t block_bytes = encoded_size(WireDtype::kUInt8, kUInt8Block);
    return std::max<std::size_t>(1, segment_bytes / block_bytes) * kUInt8Block;
  }
  return std::max<std::size_t>(1, segment_bytes / encoded_size(wire, 1));
}

void ZmqOptions::validate() const {
  if (connections_per_peer < 1 || connections_per_peer > 64)
    throw Error(str("comm.connections_per_peer = ", connections_per_peer, " is out of range"), "use 1..64");
  if (segment_bytes > (std::size_t{256} << 20) || zmq_message_payload_bytes(*this) < 1024)
    throw Error(str("comm.segment_bytes = ", segment_bytes, " is out of range for ", connections_per_peer,
                    " connections per peer"),
                "use 1 KiB × connections_per_peer .. 256 MiB (e.g. 1 MiB)");
  if (tcp_send_buffer_bytes < -1)
    throw Error(str("comm.tcp_send_buffer_bytes = ", tcp_send_buffer_bytes, " is out of range"),
                "use -1 (auto), 0 (OS autotuning) or a size in bytes");
  if (io_threads < 1 || io_threads > 64)
    throw Error(str("comm.io_threads = ", io_threads, " is out of range"), "use 1..64");
  if (disconnect_grace.count() < 0 || heartbeat_interval.count() < 0 || heartbeat_timeout.count() < 0 ||
      close_linger.count() < 0 || connect_timeout.count() < 0)
    throw Error("comm timeouts must not be negative");
  if (zap_admit_wait.count() < 0 || zap_admit_wait > std::chrono::seconds(20))
    throw Error(str("comm.zap_admit_wait = ", zap_admit_wait.count(), " ms is out of range"),
                "use 0..20000 ms (libzmq drops handshakes that take 30 s)");
  if (bind_host.empty()) throw Error("comm.bind_host is empty", "use 127.0.0.1 for one machine, 0.0.0.0 for all");
  if (ipc_dir.size() > 80)
    throw Error(str("comm.ipc_dir '", ipc_dir, "' is too long for a Unix socket path"), "use a short directory");
  if ((bind_host == "0.0.0.0" || bind_host == "*") && advertise_host.empty())
    throw Error(str("comm.bind_host = ", bind_host, " needs comm.advertise_host"),
                "set advertise_host to the address peers can dial");
}

std::size_t zmq_message_payload_bytes(const ZmqOptions& o) {
  return o.segment_bytes / static_cast<std::size_t>(std::max(1, o.connections_per_peer));
}

std::size_t zmq_max_message_bytes(const ZmqOptions& o) {
  const std::size_t message = zmq_message_payload_bytes(o);
  std::size_t payload = std::max<std::size_t>(message, kWireMaxReasonBytes);
  for (WireDtype w : {WireDtype::kFloat32, WireDtype::kFloat16, WireDtype::kBFloat16, WireDtype::kUInt8})
    payload = std::max(payload, encoded_size(w, zmq_segment_elements(w, message)));
  return kWireHeaderBytes + payload;
}

void Membership::validate(bool require_keys) const {
  const int w = world_size();
  if (w < 1 || w > 65535) throw Error(str("membership of ", w, " members"), "a group has 1..65535 members");
  if (rank < 0 || rank >= w) throw Error(str("membership rank ", rank, " outside [0, ", w, ")"));
  std::set<std::string> keys, endpoints;
  for (int i = 0; i < w; ++i) {
    const Member& m = members[i];
    if (m.rank != i) throw Error(str("membership entry ", i, " has rank ", m.rank), "members must be in ring order");
    if (m.endpoint.empty()) throw Error(str("member ", i, " has no endpoint"));
    if (!endpoints.insert(m.endpoint).second) throw Error(str("members share the endpoint ", m.endpoint));
    if (require_keys) {
      if (!curve_is_valid_key(m.public_key))
        throw Error(str("member ", i, " has an invalid CURVE public key '", m.public_key, "'"),
                    "keys are 40 characters of Z85");
      if (!keys.insert(m.public_key).second)
        throw Error(str("members share the public key ", m.public_key),
                    "every member needs its own key pair (ZmqOptions::key_name, e.g. worker-<i>)");
    }
  }
}

Membership membership_of_survivors(const Membership& old, const std::vector<int>& surviving_old_ranks) {
  std::vector<int> s = surviving_old_ranks;
  std::sort(s.begin(), s.end());
  if (std::adjacent_find(s.begin(), s.end()) != s.end()) throw Error("survivor list names a rank twice");
  for (int r : s)
    if (r < 0 || r >= old.world_size()) throw Error(str("survivor ", r, " is not a rank of the old group"));
  const auto me = std::find(s.begin(), s.end(), old.rank);
  if (me == s.end())
    throw Error(str("rank ", old.rank, " is not among the survivors"), "a rank that was dropped must rejoin afresh");
  Membership m;
  m.run_id = old.run_id;
  m.epoch = old.epoch + 1;
  m.rank = static_cast<int>(me - s.begin());
  for (std::size_t i = 0; i < s.size(); ++i) {
    Member member = old.members[s[i]];
    member.rank = static_cast<int>(i);
    m.members.push_back(std::move(member));
  }
  return m;
}

ZmqNode::Impl::~Impl() {
  pull.close();
  zap.reset();
  ctx.close();
}

ZmqNode::ZmqNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ZmqNode::~ZmqNode() = default;

std::shared_ptr<ZmqNode> ZmqNode::create(const ZmqOptions& options) {
  options.validate();
  if (options.tune_malloc) {
    static std::once_flag once;
    std::call_once(once, [] {
#if defined(__GLIBC__)
      mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum; also stops the dynamic threshold
      mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    });
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const bool curve = options.security == ZmqSecurity::kCurve;
  if (curve) {
    curve_require_available();
    impl->keys = curve_load_or_create_keypair(options.key_dir.empty() ? curve_default_key_dir() : options.key_dir,
                                              options.key_name);
  } else {
    log_warn(
        "[zmq] PLAINTEXT mode: no encryption and no authentication. This mode exists only to measure "
        "what CURVE costs; never use it for training.");
  }
  impl->ctx.set(zmq::ctxopt::io_threads, options.io_threads);
  impl->ctx.set(zmq::ctxopt::blocky, 0);  // sockets default to linger 0; we set linger explicitly
  if (curve) impl->zap = std::make_unique<ZapHandler>(impl->ctx, options.zap_admit_wait);

  impl->pull = zmq::socket_t(impl->ctx, zmq::socket_type::pull);
  zmq::socket_t& s = impl->pull;
  s.set(zmq::sockopt::linger, 0);
  // libzmq checks the size of the frame on the wire, which CURVE makes larger than the message
  // by its command name, nonce and MAC (33 bytes in ZMTP 3.x); allow for that, no more.
  s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(zmq_max_message_bytes(options) + kCurveFrameOverhead));
  s.set(zmq::sockopt::rcvhwm, 1000);
  if (curve) {
    s.set(zmq::sockopt::curve_server, true);
    s.set(zmq::sockopt::curve_secretkey, impl->keys.secret_key);
    s.set(zmq::sockopt::zap_domain, kZapDomain);
  }
  if (options.heartbeat_interval.count() > 0) {
    s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(options.heartbeat_interval.count()));
    s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(options.heartbeat_timeout.count()));
  }
  static std::atomic<int> ipc_counter{0};
  const bool ipc = !options.ipc_dir.empty();
  const std::string bind =
      ipc ? str("ipc://", options.ipc_dir, "/pico-", ::getpid(), "-", ipc_counter.fetch_add(1), ".sock")
          : str("tcp://", options.bind_host, ":*");
  if (ipc) make_dirs(options.ipc_dir);
  try {
    s.bind(bind);
  } catch (const zmq::error_t& e) {
    throw Error(str("cannot bind the receive socket to ", bind, ": ", e.what()),
                ipc ? "use a short, writable comm.ipc_dir (Unix socket paths are limited to ~100 characters)"
                    : "check comm.bind_host names an address of this machine");
  }
  std::string last = s.get(zmq::sockopt::last_endpoint);
  if (!ipc && !options.advertise_host.empty()) {
    const auto colon = last.rfind(':');
    last = str("tcp://", options.advertise_host, last.substr(colon));
  }
  impl->endpoint = last;
  impl->local_endpoint = ipc ? last
                             : str("tcp://", is_wildcard_host(options.bind_host) ? "127.0.0.1" : options.bind_host,
                                   last.substr(last.rfind(':')));
  log_debug("[zmq] node listening on ", impl->endpoint, curve ? " (CURVE)" : " (PLAINTEXT)");
  return std::shared_ptr<ZmqNode>(new ZmqNode(std::move(impl)));
}

const ZmqOptions& ZmqNode::options() const {
  return impl_->options;
}
std::string ZmqNode::endpoint() const {
  std::lock_guard<std::mutex> lock(impl_->endpoint_mu);
  return impl_->endpoint;
}
std::string ZmqNode::local_endpoint() const {
  return impl_->local_endpoint;
}
void ZmqNode::reached_through(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(impl_->endpoint_mu);
  impl_->endpoint = endpoint;
}
std::string ZmqNode::public_key() const {
  return impl_->keys.public_key;
}

void ZmqNode::admit(const std::vector<std::string>& public_keys) {
  if (impl_->zap) impl_->zap->admit(public_keys);
}

void ZmqNode::cancel_collective(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(impl_->endpoint_mu);
    impl_->cancel_reason = why;
  }
  impl_->cancelled.store(true);
}

std::uint64_t ZmqNode::zap_refusals() const {
  return impl_->zap ? impl_->zap->refusals() : 0;
}

}  // namespace pico::comm
