#include "pico/broker/service.h"

#include <chrono>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "dashboard_http.h"
#include "pico/comm/address.h"
#include "pico/comm/curve_keys.h"
#include "pico/comm/relay.h"
#include "pico/common/error.h"
#include "pico/common/log.h"

namespace pico::broker {
namespace {

// Dial-backs to joiners: at most this many at once, each waiting this long for a connection.
constexpr int kMaxDials = 8;
constexpr std::chrono::milliseconds kDialTimeout{3000};

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ZAP (RFC 27): every client that completed the CURVE handshake is admitted, and its public
// key becomes the User-Id of its messages. Which run a key may join is the core's decision.
void serve_zap(zmq::context_t& ctx, std::atomic<bool>& stop, std::atomic<bool>& ready) {
  zmq::socket_t rep(ctx, zmq::socket_type::rep);
  rep.set(zmq::sockopt::linger, 0);
  rep.bind("inproc://zeromq.zap.01");
  ready.store(true);
  while (!stop.load()) {
    zmq::pollitem_t item{rep.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> parts;
    while (true) {
      zmq::message_t part;
      if (!rep.recv(part)) break;
      const bool more = part.more();
      parts.push_back(std::move(part));
      if (!more) break;
    }
    // version, request id, domain, address, identity, mechanism, credentials...
    const std::string request_id = parts.size() > 1 ? parts[1].to_string() : "";
    std::string status = "400", text = "bad ZAP request", user;
    if (parts.size() >= 7 && parts[0].to_string() == "1.0" && parts[5].to_string() == "CURVE" &&
        parts[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const std::uint8_t*>(parts[6].data()), 32);
      user = z85;
      status = "200";
      text = "OK";
    }
    rep.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(status), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(text), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(user), zmq::send_flags::sndmore);
    rep.send(zmq::str_buffer(""), zmq::send_flags::none);
  }
}

// 128 random bits, hex: the operator token of the HTTP listener.
std::string random_token() {
  unsigned char raw[16] = {};
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  urandom.read(reinterpret_cast<char*>(raw), sizeof raw);
  if (!urandom) throw Error("cannot read /dev/urandom for the dashboard's operator token", "is /dev mounted?");
  static const char* kHex = "0123456789abcdef";
  std::string t;
  for (auto b : raw) t += {kHex[b >> 4], kHex[b & 15]};
  return t;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" || host == "[::1]";
}

}  // namespace

struct BrokerService::Impl {
  ServiceOptions opt;
  std::unique_ptr<Store> store;
  std::unique_ptr<BrokerCore> core;
  std::mutex core_mu;  // the HTTP threads read views (and act) while the loop handles messages
  comm::CurveKeyPair keys;
  zmq::context_t ctx{1};
  zmq::socket_t router;
  std::string endpoint;
  std::unique_ptr<comm::RelayServer> relay;  // for members behind a NAT (ServiceOptions::relay)
  std::atomic<bool> stop{false};
  std::atomic<bool> zap_ready{false};
  std::thread zap_thread, loop_thread;
  std::unique_ptr<DashboardHttp> http;
  std::string operator_token;
  // What operator actions (HTTP threads) produced, for the loop to send: sockets are the
  // loop's alone.
  std::mutex pending_mu;
  std::vector<Outgoing> pending;
  // Dial-backs to joiners (BrokerCore::take_dial_backs) run on detached threads, at most
  // kMaxDials at once (the rest wait in dial_queue, the loop's alone); what they find is
  // shared with them through `dials`, which outlives the service if they do.
  struct Dials {
    std::mutex mu;
    int running = 0;
    std::vector<std::pair<BrokerCore::DialBack, std::string>> done;
  };
  std::shared_ptr<Dials> dials = std::make_shared<Dials>();
  std::deque<BrokerCore::DialBack> dial_queue;
};

BrokerService::BrokerService(ServiceOptions options) : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.opt = std::move(options);
  comm::curve_require_available();
  if (s.opt.state_path.empty()) throw Error("the broker needs a state file", "pass --state FILE.db");
  s.store = Store::open(s.opt.state_path);
  s.core = std::make_unique<BrokerCore>(*s.store, s.opt.core, wall_seconds());
  s.keys = comm::curve_load_or_create_keypair(s.opt.key_dir.empty() ? comm::curve_default_key_dir() : s.opt.key_dir,
                                              s.opt.key_name);
  s.zap_thread = std::thread([&s] { serve_zap(s.ctx, s.stop, s.zap_ready); });
  while (!s.zap_ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.router = zmq::socket_t(s.ctx, zmq::socket_type::router);
  s.router.set(zmq::sockopt::curve_server, 1);
  s.router.set(zmq::sockopt::curve_secretkey, s.keys.secret_key);
  s.router.set(zmq::sockopt::zap_domain, "pico-broker");
  s.router.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMessageBytes));
  s.router.set(zmq::sockopt::router_mandatory, 0);
  s.router.set(zmq::sockopt::linger, 0);
  try {
    s.router.bind(s.opt.listen);
  } catch (const zmq::error_t& e) {
    s.stop.store(true);
    s.zap_thread.join();
    throw Error(str("the broker cannot listen on ", s.opt.listen, ": ", e.what()),
                "use --listen tcp://ADDR:PORT with a free port (0 picks one), and an address of this machine");
  }
  s.endpoint = s.router.get(zmq::sockopt::last_endpoint);
  if (s.opt.relay) {
    comm::RelayOptions ro;
    ro.listen_host = s.endpoint.substr(6, s.endpoint.rfind(':') - 6);
    ro.advertise_host = s.opt.advertise_host;
    try {
      s.relay = std::make_unique<comm::RelayServer>(s.ctx, s.keys, "pico-broker", ro);
    } catch (const Error&) {
      s.stop.store(true);
      s.zap_thread.join();
      throw;
    }
    s.core->set_relay_endpoint(s.relay->tunnel_endpoint());
  }
  if (!s.opt.http.empty()) {
    s.operator_token = random_token();
    DashboardHttp::Hooks hooks;
    hooks.with_core = [&s](const std::function<void(BrokerCore&)>& fn) {
      std::lock_guard<std::mutex> lock(s.core_mu);
      fn(*s.core);
    };
    hooks.deliver = [&s](std::vector<Outgoing> out) {
      std::lock_guard<std::mutex> lock(s.pending_mu);
      for (auto& o : out) s.pending.push_back(std::move(o));
    };
    hooks.now = wall_seconds;
    s.http = std::make_unique<DashboardHttp>(s.opt.http, s.operator_token, std::move(hooks));
    s.http->start();
    if (!is_loopback(s.http->host()))
      log_warn("broker: the dashboard listens on ", s.http->host(),
               ": anyone who can reach it sees the runs, and HTTP is "
               "not encrypted (the operator token travels in clear): prefer 127.0.0.1 and an SSH tunnel");
  }
  log_info("broker listening on ", s.endpoint, " (key ", s.keys.public_key, "), state ", s.opt.state_path,
           s.http ? str(", status http://", s.http->host(), ":", s.http->port(), "/status") : "");
  if (s.http)
    log_info("dashboard: ", dashboard_url(), " — operator token ", s.operator_token, " (read-only without it; ",
             "open ", dashboard_url(), "#token=", s.operator_token, " to pause, resume and evict)");
}

BrokerService::~BrokerService() {
  stop();
  if (impl_->loop_thread.joinable()) impl_->loop_thread.join();
  if (impl_->http) impl_->http->stop();
  if (impl_->relay) {
    const auto st = impl_->relay->stats();
    if (st.bytes_to_members + st.bytes_from_members > 0)
      log_info("relay: carried ", st.bytes_to_members, " bytes to relayed members and ", st.bytes_from_members,
               " bytes from them");
    impl_->relay.reset();
  }
  impl_->stop.store(true);
  if (impl_->zap_thread.joinable()) impl_->zap_thread.join();
}

std::size_t BrokerService::active_members(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(impl_->core_mu);
  return impl_->core->active_members(run_id);
}

const std::string& BrokerService::endpoint() const {
  return impl_->endpoint;
}
const std::string& BrokerService::public_key() const {
  return impl_->keys.public_key;
}
int BrokerService::http_port() const {
  return impl_->http ? impl_->http->port() : 0;
}
const std::string& BrokerService::operator_token() const {
  return impl_->operator_token;
}
std::string BrokerService::dashboard_url() const {
  return impl_->http ? str("http://", impl_->http->host(), ":", impl_->http->port(), "/") : "";
}

void BrokerService::stop() {
  impl_->stop.store(true);
}

void BrokerService::start_background() {
  impl_->loop_thread = std::thread([this] {
    try {
      run();
    } catch (const std::exception& e) {
      log_error("embedded broker stopped: ", e.what());
    }
  });
}

void BrokerService::run() {
  auto& s = *impl_;
  auto last_tick = std::chrono::steady_clock::now();
  auto deliver = [&](std::vector<Outgoing> out) {
    for (auto& o : out) {
      if (o.peer.empty()) continue;  // a member whose connection the broker has not seen since a restart
      const std::string bytes = encode_message(o.message);
      s.router.send(zmq::buffer(o.peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      s.router.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    }
  };
  // Starts the dial-backs the core asked for, and hands the core those that finished.
  auto run_dial_backs = [&s] {
    std::vector<std::pair<BrokerCore::DialBack, std::string>> done;
    {
      std::lock_guard<std::mutex> lock(s.core_mu);
      for (auto& d : s.core->take_dial_backs()) s.dial_queue.push_back(std::move(d));
    }
    {
      std::lock_guard<std::mutex> lock(s.dials->mu);
      done.swap(s.dials->done);
      while (!s.dial_queue.empty() && s.dials->running < kMaxDials) {
        ++s.dials->running;
        std::thread([dials = s.dials, d = s.dial_queue.front()] {
          std::string error = comm::tcp_dial_check(d.endpoint, kDialTimeout);
          std::lock_guard<std::mutex> lock(dials->mu);
          dials->done.emplace_back(d, std::move(error));
          --dials->running;
        }).detach();
        s.dial_queue.pop_front();
      }
    }
    if (done.empty()) return;
    std::lock_guard<std::mutex> lock(s.core_mu);
    for (auto& [d, error] : done) s.core->note_dial_back(d, error, wall_seconds());
  };
  while (!s.stop.load()) {
    zmq::pollitem_t item{s.router.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    while (true) {
      zmq::message_t id, frame;
      if (!s.router.recv(id, zmq::recv_flags::dontwait)) break;
      if (!id.more() || !s.router.recv(frame, zmq::recv_flags::dontwait)) continue;
      while (frame.more()) {  // a client that sent extra frames: drain and drop them
        zmq::message_t extra;
        if (!s.router.recv(extra, zmq::recv_flags::dontwait)) break;
        frame = std::move(extra);
      }
      const char* user = frame.gets("User-Id");
      const char* address = frame.gets("Peer-Address");
      std::string why;
      auto m = decode_message(static_cast<const std::uint8_t*>(frame.data()), frame.size(), why);
      if (!m) {
        log_warn("broker: dropped a malformed message from ", user ? std::string(user).substr(0, 8) : "?", "…: ", why);
        continue;
      }
      std::vector<Outgoing> out;
      {
        std::lock_guard<std::mutex> lock(s.core_mu);
        out = s.core->handle({id.to_string(), user ? user : "", std::move(*m), address ? address : ""}, wall_seconds());
      }
      deliver(std::move(out));
    }
    run_dial_backs();
    {
      std::vector<Outgoing> acted;
      {
        std::lock_guard<std::mutex> lock(s.pending_mu);
        acted.swap(s.pending);
      }
      if (!acted.empty()) deliver(std::move(acted));
    }
    if (std::chrono::steady_clock::now() - last_tick >= std::chrono::seconds(1)) {
      last_tick = std::chrono::steady_clock::now();
      std::vector<Outgoing> out;
      {
        std::lock_guard<std::mutex> lock(s.core_mu);
        out = s.core->tick(wall_seconds());
      }
      deliver(std::move(out));
    }
  }
}

}  // namespace pico::broker
