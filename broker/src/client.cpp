#include "pico/broker/client.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "pico/common/error.h"
#include "pico/common/log.h"

namespace pico::broker {

using Clock = std::chrono::steady_clock;

struct BrokerClient::Impl {
  BrokerClientOptions opt;
  zmq::context_t ctx{1};
  std::thread io;
  std::atomic<bool> stop{false};

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> outbox;                // encoded messages to send
  std::map<std::uint64_t, std::string> pending;  // request id → encoded request (for re-sends)
  std::map<std::uint64_t, Clock::time_point> sent_at;
  std::map<std::uint64_t, Message> replies;
  std::deque<Message> pushes;
  std::function<void(const Message&)> on_push;  // sees each push first, on this thread
  std::optional<nlohmann::json> heartbeat;      // its body; none: not a member (yet, or any more)
  bool beat_now = false;  // send the heartbeat at once (its content changed in a way the broker must know)
  std::uint64_t next_id = 1;
  // Connection state from the socket monitor: since when the broker is unreachable.
  std::atomic<bool> connected{false};
  std::atomic<std::int64_t> lost_at_ns{Clock::now().time_since_epoch().count()};

  void on_monitor_event(std::uint16_t event) {
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      connected.store(true);
    } else if (event == ZMQ_EVENT_DISCONNECTED || event == ZMQ_EVENT_CLOSED) {
      if (connected.exchange(false)) lost_at_ns.store(Clock::now().time_since_epoch().count());
    }
  }

  void run() {
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::curve_serverkey, opt.broker_public_key);
    sock.set(zmq::sockopt::curve_publickey, opt.public_key);
    sock.set(zmq::sockopt::curve_secretkey, opt.secret_key);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMessageBytes));
    sock.set(zmq::sockopt::reconnect_ivl, 200);
    sock.set(zmq::sockopt::reconnect_ivl_max, 2000);
    sock.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(opt.link_ping_interval.count()));
    sock.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(opt.link_timeout.count()));
    const std::string monitor_ep = str("inproc://broker-client-monitor-", reinterpret_cast<std::uintptr_t>(this));
    if (zmq_socket_monitor(sock.handle(), monitor_ep.c_str(),
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CLOSED) != 0)
      throw Error(str("cannot monitor the broker connection: ", zmq_strerror(zmq_errno())));
    zmq::socket_t monitor(ctx, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    monitor.connect(monitor_ep);
    sock.connect(opt.endpoint);
    auto last_beat = Clock::now() - opt.heartbeat_interval;
    while (!stop.load()) {
      std::vector<std::string> to_send;
      {
        std::lock_guard<std::mutex> lock(mu);
        while (!outbox.empty()) {
          to_send.push_back(std::move(outbox.front()));
          outbox.pop_front();
        }
        const auto now = Clock::now();
        for (auto& [id, bytes] : pending) {
          if (now - sent_at[id] >= opt.retry_interval) {
            to_send.push_back(bytes);
            sent_at[id] = now;
          }
        }
        if (heartbeat && (beat_now || now - last_beat >= opt.heartbeat_interval)) {
          beat_now = false;
          Message hb;
          hb.type = MessageType::kHeartbeat;
          hb.body = *heartbeat;
          to_send.push_back(encode_message(hb));
          last_beat = now;
        }
      }
      for (auto& bytes : to_send) sock.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
      zmq::pollitem_t items[2] = {{sock.handle(), 0, ZMQ_POLLIN, 0}, {monitor.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(20));
      while (true) {  // monitor events: two frames, (event id u16 + value u32) and the address
        zmq::message_t event, address;
        if (!monitor.recv(event, zmq::recv_flags::dontwait)) break;
        if (event.more()) (void)monitor.recv(address, zmq::recv_flags::dontwait);
        if (event.size() >= 2) {
          std::uint16_t id = 0;
          std::memcpy(&id, event.data(), sizeof id);
          on_monitor_event(id);
        }
      }
      while (true) {
        zmq::message_t frame;
        if (!sock.recv(frame, zmq::recv_flags::dontwait)) break;
        std::string why;
        auto m = decode_message(static_cast<const std::uint8_t*>(frame.data()), frame.size(), why);
        if (!m) {
          log_warn("broker client: dropped a malformed message from the broker: ", why);
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        if (m->request_id != 0 && pending.count(m->request_id)) {
          pending.erase(m->request_id);
          sent_at.erase(m->request_id);
          replies[m->request_id] = std::move(*m);
        } else if (m->request_id == 0) {
          if (on_push) on_push(*m);
          pushes.push_back(std::move(*m));
        }  // else: a duplicate reply to a request already answered
        cv.notify_all();
      }
    }
  }
};

BrokerClient::BrokerClient(BrokerClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  impl_->io = std::thread([this] { impl_->run(); });
}

BrokerClient::~BrokerClient() {
  impl_->stop.store(true);
  if (impl_->io.joinable()) impl_->io.join();
}

Message BrokerClient::request(MessageType type, nlohmann::json body, std::string blob,
                              std::chrono::milliseconds timeout) {
  Message m;
  m.type = type;
  m.body = std::move(body);
  m.blob = std::move(blob);
  std::unique_lock<std::mutex> lock(impl_->mu);
  m.request_id = impl_->next_id++;
  const std::uint64_t id = m.request_id;
  impl_->pending[id] = encode_message(m);
  impl_->sent_at[id] = Clock::now();
  impl_->outbox.push_back(impl_->pending[id]);
  const auto deadline = Clock::now() + timeout;
  while (!impl_->replies.count(id)) {
    if (impl_->cv.wait_until(lock, deadline) == std::cv_status::timeout && !impl_->replies.count(id)) {
      impl_->pending.erase(id);
      impl_->sent_at.erase(id);
      throw Error(str("the broker at ", impl_->opt.endpoint, " did not answer ", to_string(type), " within ",
                      timeout.count() / 1000, " s"),
                  "check that the broker is running and reachable, and that the join code's key is its key");
    }
  }
  Message reply = std::move(impl_->replies[id]);
  impl_->replies.erase(id);
  if (reply.type == MessageType::kError) {
    ErrorReply e{"(unreadable reason)", ""};
    try {
      e = parse<ErrorReply>(reply);
    } catch (const ProtocolError&) {
    }
    throw Error(str("the broker refused ", to_string(type), ": ", e.reason), e.hint);
  }
  return reply;
}

void BrokerClient::send(MessageType type, nlohmann::json body) {
  Message m;
  m.type = type;
  m.body = std::move(body);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->outbox.push_back(encode_message(m));
}

void BrokerClient::watch_pushes(std::function<void(const Message&)> fn) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->on_push = std::move(fn);
}

std::optional<Message> BrokerClient::next_push(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait_for(lock, wait, [&] { return !impl_->pushes.empty(); });
  if (impl_->pushes.empty()) return std::nullopt;
  Message m = std::move(impl_->pushes.front());
  impl_->pushes.pop_front();
  return m;
}

void BrokerClient::set_heartbeat(const Heartbeat& heartbeat, bool send_now) {
  nlohmann::json body = heartbeat.to_json();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->heartbeat = std::move(body);
  impl_->beat_now = impl_->beat_now || send_now;
}

void BrokerClient::stop_heartbeat() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->heartbeat.reset();
}

}  // namespace pico::broker

namespace pico::broker {

double BrokerClient::seconds_without_broker() const {
  if (impl_->connected.load()) return 0;
  const auto lost = Clock::time_point(Clock::duration(impl_->lost_at_ns.load()));
  return std::chrono::duration<double>(Clock::now() - lost).count();
}

}  // namespace pico::broker
