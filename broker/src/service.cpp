#include "pico/broker/service.h"

#include <httplib.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "pico/comm/curve_keys.h"
#include "pico/common/error.h"
#include "pico/common/log.h"

namespace pico::broker {
namespace {

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
    if (parts.size() >= 7 && parts[0].to_string() == "1.0" && parts[5].to_string() == "CURVE" && parts[6].size() == 32) {
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

}  // namespace

struct BrokerService::Impl {
  ServiceOptions opt;
  std::unique_ptr<Store> store;
  std::unique_ptr<BrokerCore> core;
  std::mutex core_mu;  // the HTTP thread reads status while the loop handles messages
  comm::CurveKeyPair keys;
  zmq::context_t ctx{1};
  zmq::socket_t router;
  std::string endpoint;
  std::atomic<bool> stop{false};
  std::atomic<bool> zap_ready{false};
  std::thread zap_thread, loop_thread, http_thread;
  std::unique_ptr<httplib::Server> http;
  int http_port = 0;
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
  if (!s.opt.http.empty()) {
    const auto colon = s.opt.http.rfind(':');
    if (colon == std::string::npos) throw Error(str("bad --http '", s.opt.http, "'"), "write ADDR:PORT, e.g. 127.0.0.1:8080");
    const std::string host = s.opt.http.substr(0, colon);
    const int port = std::atoi(s.opt.http.substr(colon + 1).c_str());
    s.http = std::make_unique<httplib::Server>();
    s.http->Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json j;
      {
        std::lock_guard<std::mutex> lock(impl_->core_mu);
        j = impl_->core->status(wall_seconds());
      }
      res.set_content(j.dump(2), "application/json");
    });
    s.http->Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("pico broker: GET /status for runs, members, rounds and recent losses (JSON)\n", "text/plain");
    });
    s.http_port = port == 0 ? s.http->bind_to_any_port(host) : (s.http->bind_to_port(host, port) ? port : -1);
    if (s.http_port <= 0) throw Error(str("the broker cannot serve HTTP on ", s.opt.http), "choose a free ADDR:PORT for --http");
    s.http_thread = std::thread([&s] { s.http->listen_after_bind(); });
  }
  log_info("broker listening on ", s.endpoint, " (key ", s.keys.public_key, "), state ", s.opt.state_path,
           s.http ? str(", status http://", s.opt.http.substr(0, s.opt.http.rfind(':')), ":", s.http_port, "/status") : "");
}

BrokerService::~BrokerService() {
  stop();
  if (impl_->loop_thread.joinable()) impl_->loop_thread.join();
  if (impl_->http) impl_->http->stop();
  if (impl_->http_thread.joinable()) impl_->http_thread.join();
  impl_->stop.store(true);
  if (impl_->zap_thread.joinable()) impl_->zap_thread.join();
}

const std::string& BrokerService::endpoint() const { return impl_->endpoint; }
const std::string& BrokerService::public_key() const { return impl_->keys.public_key; }
int BrokerService::http_port() const { return impl_->http_port; }

void BrokerService::stop() { impl_->stop.store(true); }

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
      std::string why;
      auto m = decode_message(static_cast<const std::uint8_t*>(frame.data()), frame.size(), why);
      if (!m) {
        log_warn("broker: dropped a malformed message from ", user ? std::string(user).substr(0, 8) : "?", "…: ", why);
        continue;
      }
      std::vector<Outgoing> out;
      {
        std::lock_guard<std::mutex> lock(s.core_mu);
        out = s.core->handle({id.to_string(), user ? user : "", std::move(*m)}, wall_seconds());
      }
      deliver(std::move(out));
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
