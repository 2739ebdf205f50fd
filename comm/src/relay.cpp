// The relay and the member's tunnel to it (pico/comm/relay.h). Each runs one thread: a
// zmq_poll loop over its tunnel socket and the plain TCP sockets it carries (non-blocking; a
// connection's bytes wait in its `out` buffer until the socket takes them).
#include "pico/comm/relay.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "pico/comm/address.h"
#include "pico/common/error.h"
#include "pico/common/log.h"

namespace pico::comm {

namespace {

using Clock = std::chrono::steady_clock;

enum class Frame : std::uint8_t {
  kRegister = 1,
  kRegistered = 2,
  kOpen = 3,
  kData = 4,
  kClose = 5,
  kPing = 6,
  kPong = 7,
  kRefused = 8,
};
constexpr std::size_t kFrameHeader = 5;
constexpr std::size_t kReadChunk = 256 << 10;
constexpr std::chrono::milliseconds kPingEvery{1000};

zmq::message_t frame(Frame type, std::uint32_t conn, const void* data = nullptr, std::size_t n = 0) {
  zmq::message_t m(kFrameHeader + n);
  auto* p = m.data<std::uint8_t>();
  p[0] = static_cast<std::uint8_t>(type);
  for (int i = 0; i < 4; ++i) p[1 + i] = static_cast<std::uint8_t>(conn >> (8 * i));
  if (n > 0) std::memcpy(p + kFrameHeader, data, n);
  return m;
}

struct Decoded {
  Frame type;
  std::uint32_t conn;
  const std::uint8_t* payload;
  std::size_t size;
};

bool decode(const zmq::message_t& m, Decoded& d) {
  if (m.size() < kFrameHeader) return false;
  const auto* p = m.data<std::uint8_t>();
  if (p[0] < 1 || p[0] > 8) return false;
  d.type = static_cast<Frame>(p[0]);
  d.conn = 0;
  for (int i = 0; i < 4; ++i) d.conn |= static_cast<std::uint32_t>(p[1 + i]) << (8 * i);
  d.payload = p + kFrameHeader;
  d.size = m.size() - kFrameHeader;
  return true;
}

// One carried TCP connection.
struct Conn {
  int fd = -1;
  std::string out;          // bytes waiting for the socket
  bool connecting = false;  // (tunnel side) the connection to the local node is not up yet
  bool closing = false;     // the other side closed: close once `out` is written
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Writes what the socket takes; false when the connection failed.
bool flush(Conn& c) {
  while (!c.out.empty()) {
    const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  return true;
}

// host:port of tcp://HOST:PORT, resolved (IPv4 or IPv6).
bool resolve(const std::string& endpoint, sockaddr_storage& out, socklen_t& len) {
  std::string host, port;
  if (!split_tcp_endpoint(endpoint, host, port)) return false;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return false;
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return true;
}

}  // namespace

// ---- the relay ------------------------------------------------------------------------------

struct RelayServer::Impl {
  struct Registration {
    std::string route;  // ROUTER routing id of the member's tunnel
    int listen_fd = -1;
    std::string endpoint;
    std::map<std::uint32_t, Conn> conns;
    Clock::time_point last_heard;
  };

  RelayOptions o;
  zmq::socket_t router;
  std::string tunnel_endpoint;
  std::map<std::string, Registration> regs;  // by the member's key
  std::uint32_t next_conn = 1;
  std::atomic<bool> stop{false};
  std::thread thread;
  mutable std::mutex stats_mu;
  RelayStats stats;

  void send(const Registration& r, zmq::message_t&& m) {
    try {
      router.send(zmq::buffer(r.route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router.send(m, zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {  // the tunnel is gone (EHOSTUNREACH): its silence drops it
    }
  }

  void rejected(const std::string& why) {
    std::uint64_t n;
    {
      std::lock_guard<std::mutex> lock(stats_mu);
      n = ++stats.frames_rejected;
    }
    if (n <= 20 || n % 1000 == 0) log_warn("relay: dropped a tunnel frame: ", why, " [", n, " so far]");
  }

  void drop(const std::string& key, const char* why) {
    auto it = regs.find(key);
    if (it == regs.end()) return;
    log_info("relay: member ", key.substr(0, 8), "… (", it->second.endpoint, ") dropped: ", why);
    for (auto& [id, c] : it->second.conns) close_fd(c.fd);
    close_fd(it->second.listen_fd);
    regs.erase(it);
  }

  void on_register(const std::string& route, const std::string& key) {
    if (auto it = regs.find(key); it != regs.end()) drop(key, "registered again");
    if (static_cast<int>(regs.size()) >= o.max_members) {
      const std::string why = "this relay serves its maximum of members";
      zmq::message_t m = frame(Frame::kRefused, 0, why.data(), why.size());
      router.send(zmq::buffer(route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router.send(m, zmq::send_flags::dontwait);
      return;
    }
    Registration r;
    r.route = route;
    r.last_heard = Clock::now();
    sockaddr_storage addr{};
    socklen_t len = 0;
    const std::string bind_host = is_wildcard_host(o.listen_host) ? "0.0.0.0" : o.listen_host;
    if (!resolve(str("tcp://", bind_host, ":0"), addr, len)) return;
    r.listen_fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(r.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (r.listen_fd < 0 || ::bind(r.listen_fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(r.listen_fd, 16) != 0) {
      log_warn("relay: cannot open a port for member ", key.substr(0, 8), "…: ", std::strerror(errno));
      close_fd(r.listen_fd);
      return;
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(r.listen_fd, reinterpret_cast<sockaddr*>(&bound), &blen);
    const int port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                       : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    const std::string host = o.advertise_host.empty() ? advertise_host_for(o.listen_host) : o.advertise_host;
    r.endpoint = str("tcp://", host, ":", port);
    log_info("relay: member ", key.substr(0, 8), "… reachable through ", r.endpoint);
    send(r, frame(Frame::kRegistered, 0, r.endpoint.data(), r.endpoint.size()));
    regs.emplace(key, std::move(r));
  }

  void on_frame(const std::string& route, const std::string& key, const zmq::message_t& m) {
    Decoded d;
    if (!decode(m, d)) return rejected(str("malformed frame of ", m.size(), " bytes from ", key.substr(0, 8), "…"));
    if (d.type == Frame::kRegister) return on_register(route, key);
    auto it = regs.find(key);
    if (it == regs.end() || it->second.route != route)
      return rejected(str("frame from ", key.substr(0, 8), "…, which has not registered on this tunnel"));
    Registration& r = it->second;
    r.last_heard = Clock::now();
    switch (d.type) {
      case Frame::kPing:
        send(r, frame(Frame::kPong, 0));
        return;
      case Frame::kData: {
        auto c = r.conns.find(d.conn);
        if (c == r.conns.end()) return;  // closed meanwhile: its kClose is on the way
        if (c->second.out.size() + d.size > o.max_buffered_bytes) {
          log_warn("relay: connection ", d.conn, " to ", r.endpoint, " holds more than ", o.max_buffered_bytes,
                   " unwritten bytes: closed");
          close_fd(c->second.fd);
          r.conns.erase(c);
          send(r, frame(Frame::kClose, d.conn));
          return;
        }
        c->second.out.append(reinterpret_cast<const char*>(d.payload), d.size);
        {
          std::lock_guard<std::mutex> lock(stats_mu);
          stats.bytes_from_members += d.size;
        }
        if (!flush(c->second)) {
          close_fd(c->second.fd);
          r.conns.erase(c);
          send(r, frame(Frame::kClose, d.conn));
        }
        return;
      }
      case Frame::kClose: {
        auto c = r.conns.find(d.conn);
        if (c == r.conns.end()) return;
        c->second.closing = true;
        if (c->second.out.empty()) {
          close_fd(c->second.fd);
          r.conns.erase(c);
        }
        return;
      }
      default:
        return rejected(str("unexpected frame type ", static_cast<int>(d.type), " from a member"));
    }
  }

  void loop() {
    std::vector<zmq::pollitem_t> items;
    struct Slot {
      std::string key;
      std::uint32_t conn;  // 0: the registration's listening socket
    };
    std::vector<Slot> slots;
    while (!stop.load()) {
      items.clear();
      slots.clear();
      items.push_back({router.handle(), 0, ZMQ_POLLIN, 0});
      slots.push_back({"", 0});
      for (auto& [key, r] : regs) {
        items.push_back({nullptr, r.listen_fd, ZMQ_POLLIN, 0});
        slots.push_back({key, 0});
        for (auto& [id, c] : r.conns) {
          const short ev = static_cast<short>((c.closing ? 0 : ZMQ_POLLIN) | (c.out.empty() ? 0 : ZMQ_POLLOUT));
          items.push_back({nullptr, c.fd, ev, 0});
          slots.push_back({key, id});
        }
      }
      try {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) return;
        continue;
      }
      for (std::size_t i = 1; i < items.size(); ++i) {
        if (!items[i].revents) continue;
        auto it = regs.find(slots[i].key);
        if (it == regs.end()) continue;
        Registration& r = it->second;
        if (slots[i].conn == 0) {  // a peer connects to the member's port
          const int fd = ::accept4(r.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) continue;
          if (static_cast<int>(r.conns.size()) >= o.max_connections_per_member) {
            ::close(fd);
            continue;
          }
          const int one = 1;
          ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          const std::uint32_t id = next_conn++;
          r.conns[id].fd = fd;
          send(r, frame(Frame::kOpen, id));
          continue;
        }
        auto c = r.conns.find(slots[i].conn);
        if (c == r.conns.end()) continue;
        bool failed = false;
        if (items[i].revents & ZMQ_POLLOUT) failed = !flush(c->second);
        if (!failed && (items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
          char buf[kReadChunk];
          const ssize_t n = ::recv(c->second.fd, buf, sizeof buf, 0);
          if (n > 0) {
            send(r, frame(Frame::kData, c->first, buf, static_cast<std::size_t>(n)));
            std::lock_guard<std::mutex> lock(stats_mu);
            stats.bytes_to_members += static_cast<std::uint64_t>(n);
          } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            failed = true;
          }
        }
        if (failed || (c->second.closing && c->second.out.empty())) {
          if (!c->second.closing) send(r, frame(Frame::kClose, c->first));
          close_fd(c->second.fd);
          r.conns.erase(c);
        }
      }
      // The tunnel socket last: its frames may close connections polled above.
      for (int budget = 0; budget < 4096 && (items[0].revents & ZMQ_POLLIN); ++budget) {
        zmq::message_t route, m;
        try {
          if (!router.recv(route, zmq::recv_flags::dontwait)) break;
          if (!route.more() || !router.recv(m, zmq::recv_flags::dontwait)) continue;
          while (m.more()) {  // extra frames: drop them
            zmq::message_t extra;
            if (!router.recv(extra, zmq::recv_flags::dontwait)) break;
          }
        } catch (const zmq::error_t& e) {
          if (e.num() == ETERM) return;
          break;
        }
        const char* user = m.gets("User-Id");
        if (user == nullptr) continue;
        on_frame(route.to_string(), user, m);
      }
      const auto now = Clock::now();
      std::vector<std::string> silent;
      for (auto& [key, r] : regs)
        if (now - r.last_heard > o.silence) silent.push_back(key);
      for (auto& key : silent) drop(key, "no ping from its tunnel");
      std::lock_guard<std::mutex> lock(stats_mu);
      stats.members = static_cast<int>(regs.size());
      stats.connections = 0;
      for (auto& [key, r] : regs) stats.connections += static_cast<int>(r.conns.size());
    }
  }
};

RelayServer::RelayServer(zmq::context_t& ctx, const CurveKeyPair& keys, const std::string& zap_domain,
                         RelayOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.o = std::move(options);
  s.router = zmq::socket_t(ctx, zmq::socket_type::router);
  s.router.set(zmq::sockopt::curve_server, 1);
  s.router.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  s.router.set(zmq::sockopt::zap_domain, zap_domain);
  s.router.set(zmq::sockopt::router_mandatory, 1);
  // A tunnel that reconnects (a brief drop) keeps its routing id: it takes over its registration.
  s.router.set(zmq::sockopt::router_handover, 1);
  s.router.set(zmq::sockopt::sndhwm, 0);
  s.router.set(zmq::sockopt::rcvhwm, 0);
  s.router.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kFrameHeader + kReadChunk + 1024));
  s.router.set(zmq::sockopt::linger, 0);
  s.router.set(zmq::sockopt::heartbeat_ivl, 1000);
  s.router.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(s.o.silence.count()));
  const std::string bind_host = is_wildcard_host(s.o.listen_host) ? "*" : s.o.listen_host;
  try {
    s.router.bind(str("tcp://", bind_host, ":", s.o.tunnel_port == 0 ? std::string("*") : str(s.o.tunnel_port)));
  } catch (const zmq::error_t& e) {
    throw Error(str("the relay cannot listen on ", s.o.listen_host, ":", s.o.tunnel_port, ": ", e.what()),
                "choose a free port, or an address of this machine");
  }
  const std::string last = s.router.get(zmq::sockopt::last_endpoint);
  const std::string host = s.o.advertise_host.empty() ? advertise_host_for(s.o.listen_host) : s.o.advertise_host;
  s.tunnel_endpoint = str("tcp://", host, last.substr(last.rfind(':')));
  s.thread = std::thread([&s] {
    try {
      s.loop();
    } catch (const std::exception& e) {
      log_error("relay stopped: ", e.what());
    }
  });
}

RelayServer::~RelayServer() {
  impl_->stop.store(true);
  if (impl_->thread.joinable()) impl_->thread.join();
  for (auto& [key, r] : impl_->regs) {
    for (auto& [id, c] : r.conns) close_fd(c.fd);
    close_fd(r.listen_fd);
  }
}

std::string RelayServer::tunnel_endpoint() const {
  return impl_->tunnel_endpoint;
}

RelayStats RelayServer::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->stats;
}

// ---- the member's tunnel ------------------------------------------------------------------

struct RelayTunnel::Impl {
  zmq::context_t ctx{1};
  zmq::socket_t dealer;
  std::string endpoint, relay;
  sockaddr_storage local{};
  socklen_t local_len = 0;
  std::chrono::milliseconds silence{10'000};
  std::map<std::uint32_t, Conn> conns;
  std::atomic<bool> stop{false}, alive{true};
  std::thread thread;
  mutable std::mutex stats_mu;
  RelayStats stats;

  void send(zmq::message_t&& m) {
    try {
      dealer.send(m, zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }

  void close_conn(std::uint32_t id, bool tell) {
    auto c = conns.find(id);
    if (c == conns.end()) return;
    close_fd(c->second.fd);
    conns.erase(c);
    if (tell) send(frame(Frame::kClose, id));
  }

  void on_frame(const zmq::message_t& m, Clock::time_point& last_heard) {
    Decoded d;
    if (!decode(m, d)) {
      std::lock_guard<std::mutex> lock(stats_mu);
      ++stats.frames_rejected;
      return;
    }
    last_heard = Clock::now();
    switch (d.type) {
      case Frame::kPong:
        return;
      case Frame::kOpen: {
        if (conns.count(d.conn)) return;
        Conn c;
        c.fd = ::socket(local.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        const int one = 1;
        ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (c.fd < 0 ||
            (::connect(c.fd, reinterpret_cast<const sockaddr*>(&local), local_len) != 0 && errno != EINPROGRESS)) {
          close_fd(c.fd);
          send(frame(Frame::kClose, d.conn));
          return;
        }
        c.connecting = true;
        conns.emplace(d.conn, std::move(c));
        return;
      }
      case Frame::kData: {
        auto c = conns.find(d.conn);
        if (c == conns.end()) return;
        c->second.out.append(reinterpret_cast<const char*>(d.payload), d.size);
        {
          std::lock_guard<std::mutex> lock(stats_mu);
          stats.bytes_to_members += d.size;
        }
        if (!c->second.connecting && !flush(c->second)) close_conn(d.conn, true);
        return;
      }
      case Frame::kClose: {
        auto c = conns.find(d.conn);
        if (c == conns.end()) return;
        c->second.closing = true;
        if (c->second.out.empty()) close_conn(d.conn, false);
        return;
      }
      default: {
        std::lock_guard<std::mutex> lock(stats_mu);
        ++stats.frames_rejected;
        return;
      }
    }
  }

  void loop() {
    auto last_heard = Clock::now(), last_ping = Clock::now();
    std::vector<zmq::pollitem_t> items;
    std::vector<std::uint32_t> ids;
    while (!stop.load()) {
      items.clear();
      ids.clear();
      items.push_back({dealer.handle(), 0, ZMQ_POLLIN, 0});
      ids.push_back(0);
      for (auto& [id, c] : conns) {
        const short ev = static_cast<short>((c.connecting || c.closing ? 0 : ZMQ_POLLIN) |
                                            (c.connecting || !c.out.empty() ? ZMQ_POLLOUT : 0));
        items.push_back({nullptr, c.fd, ev, 0});
        ids.push_back(id);
      }
      try {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) return;
        continue;
      }
      for (std::size_t i = 1; i < items.size(); ++i) {
        if (!items[i].revents) continue;
        auto c = conns.find(ids[i]);
        if (c == conns.end()) continue;
        Conn& conn = c->second;
        bool failed = false;
        if (conn.connecting && (items[i].revents & (ZMQ_POLLOUT | ZMQ_POLLERR))) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) failed = true;
          conn.connecting = false;
        }
        if (!failed && !conn.connecting && !conn.out.empty()) failed = !flush(conn);
        if (!failed && !conn.connecting && (items[i].revents & ZMQ_POLLIN)) {
          char buf[kReadChunk];
          const ssize_t n = ::recv(conn.fd, buf, sizeof buf, 0);
          if (n > 0) {
            send(frame(Frame::kData, ids[i], buf, static_cast<std::size_t>(n)));
            std::lock_guard<std::mutex> lock(stats_mu);
            stats.bytes_from_members += static_cast<std::uint64_t>(n);
          } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            failed = true;
          }
        }
        if (failed)
          close_conn(ids[i], !conn.closing);
        else if (conn.closing && conn.out.empty())
          close_conn(ids[i], false);
      }
      for (int budget = 0; budget < 4096 && (items[0].revents & ZMQ_POLLIN); ++budget) {
        zmq::message_t m;
        try {
          if (!dealer.recv(m, zmq::recv_flags::dontwait)) break;
        } catch (const zmq::error_t& e) {
          if (e.num() == ETERM) return;
          break;
        }
        on_frame(m, last_heard);
      }
      const auto now = Clock::now();
      if (now - last_ping >= kPingEvery) {
        send(frame(Frame::kPing, 0));
        last_ping = now;
      }
      if (now - last_heard > silence && alive.exchange(false)) {
        log_warn("relay ", relay, " has not answered for ", silence.count(), " ms: peers cannot reach this member at ",
                 endpoint, " any more");
        for (auto& [id, c] : conns) close_fd(c.fd);
        conns.clear();
      }
      std::lock_guard<std::mutex> lock(stats_mu);
      stats.connections = static_cast<int>(conns.size());
      stats.members = alive.load() ? 1 : 0;
    }
  }
};

RelayTunnel::RelayTunnel(const std::string& relay_endpoint, const std::string& relay_key, const CurveKeyPair& keys,
                         const std::string& local_endpoint, std::chrono::milliseconds silence,
                         std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  auto& t = *impl_;
  t.relay = relay_endpoint;
  t.silence = silence;
  if (!resolve(local_endpoint, t.local, t.local_len))
    throw Error(str("the relay tunnel cannot carry connections to '", local_endpoint, "'"),
                "give it this node's tcp://HOST:PORT");
  t.dealer = zmq::socket_t(t.ctx, zmq::socket_type::dealer);
  t.dealer.set(zmq::sockopt::curve_serverkey, relay_key);
  t.dealer.set(zmq::sockopt::curve_publickey, keys.public_key);
  t.dealer.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  t.dealer.set(zmq::sockopt::sndhwm, 0);
  t.dealer.set(zmq::sockopt::rcvhwm, 0);
  t.dealer.set(zmq::sockopt::linger, 0);
  // A routing id of its own, kept across reconnections, so that the relay knows the tunnel again.
  std::string id(16, '\0');
  std::ifstream("/dev/urandom", std::ios::binary).read(id.data(), static_cast<std::streamsize>(id.size()));
  id[0] = 'T';  // ids starting with a zero byte are reserved by libzmq
  t.dealer.set(zmq::sockopt::routing_id, zmq::buffer(id));
  t.dealer.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kFrameHeader + kReadChunk + 1024));
  t.dealer.set(zmq::sockopt::heartbeat_ivl, 1000);
  t.dealer.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(silence.count()));
  t.dealer.connect(relay_endpoint);
  t.send(frame(Frame::kRegister, 0));
  const auto deadline = Clock::now() + timeout;
  while (t.endpoint.empty()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      throw Error(str("the relay at ", relay_endpoint, " did not answer within ", timeout.count(), " ms"),
                  "check that the broker (or relay) is running and reachable from this machine");
    zmq::pollitem_t item{t.dealer.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::min(left, std::chrono::milliseconds(100)));
    zmq::message_t m;
    if (!(item.revents & ZMQ_POLLIN) || !t.dealer.recv(m, zmq::recv_flags::dontwait)) continue;
    Decoded d;
    if (!decode(m, d)) continue;
    const std::string text(reinterpret_cast<const char*>(d.payload), d.size);
    if (d.type == Frame::kRefused)
      throw Error(str("the relay at ", relay_endpoint, " refused this member: ", text), "try again later");
    if (d.type == Frame::kRegistered) t.endpoint = text;
  }
  t.thread = std::thread([&t] {
    try {
      t.loop();
    } catch (const std::exception& e) {
      log_error("relay tunnel stopped: ", e.what());
      t.alive.store(false);
    }
  });
}

RelayTunnel::~RelayTunnel() {
  impl_->stop.store(true);
  if (impl_->thread.joinable()) impl_->thread.join();
  for (auto& [id, c] : impl_->conns) close_fd(c.fd);
}

const std::string& RelayTunnel::endpoint() const {
  return impl_->endpoint;
}

bool RelayTunnel::alive() const {
  return impl_->alive.load();
}

RelayStats RelayTunnel::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace pico::comm
