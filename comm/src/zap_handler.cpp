#include "zap_handler.h"

#include <array>

#include "pico/common/log.h"

namespace pico::comm {

namespace {
std::atomic<int> g_wake_counter{0};
using Clock = std::chrono::steady_clock;
}  // namespace

ZapHandler::ZapHandler(zmq::context_t& ctx, std::chrono::milliseconds admit_wait)
    : ctx_(ctx),
      admit_wait_(admit_wait),
      router_(ctx, zmq::socket_type::router),
      wake_rx_(ctx, zmq::socket_type::pair),
      wake_tx_(ctx, zmq::socket_type::pair) {
  // A ROUTER (not a REP) so that held requests do not block the ones behind them.
  router_.set(zmq::sockopt::linger, 0);
  router_.bind("inproc://zeromq.zap.01");
  const std::string wake = str("inproc://pico-zap-wake-", g_wake_counter.fetch_add(1));
  wake_rx_.bind(wake);
  wake_tx_.connect(wake);
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      wake_tx_.send(zmq::buffer("stop", 4), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }
  thread_.join();
}

void ZapHandler::admit(const std::vector<std::string>& z85_keys) {
  std::lock_guard<std::mutex> lock(mu_);
  admitted_ = std::set<std::string>(z85_keys.begin(), z85_keys.end());
  try {
    wake_tx_.send(zmq::buffer("admit", 5), zmq::send_flags::dontwait);  // a full pipe already has a wake-up
  } catch (const zmq::error_t&) {
  }
}

bool ZapHandler::admitted(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return admitted_.count(key) > 0;
}

void ZapHandler::reply(std::vector<zmq::message_t>& route, const std::string& request_id, bool ok,
                       const std::string& status, const std::string& user_id) {
  const std::array<std::string, 6> body = {"1.0", request_id, ok ? "200" : "400", status, ok ? user_id : "", ""};
  try {
    for (auto& f : route) router_.send(f, zmq::send_flags::sndmore);
    for (std::size_t i = 0; i < body.size(); ++i)
      router_.send(zmq::buffer(body[i]), i + 1 < body.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  } catch (const zmq::error_t&) {
    // The session that asked is gone (its connection closed): nothing to answer.
  }
}

void ZapHandler::refuse(std::vector<zmq::message_t>& route, const std::string& request_id, const std::string& mechanism,
                        const std::string& address, const std::string& key, const std::string& status) {
  refusals_.fetch_add(1);
  log_warn("[zmq] refused a ", mechanism.empty() ? "?" : mechanism, " connection from ", address,
           key.empty() ? "" : " with key " + key, ": ", status,
           " (only the keys of the group's current members are admitted)");
  reply(route, request_id, false, status, "");
}

void ZapHandler::run() {
  std::array<zmq::pollitem_t, 2> items = {
      {{router_.handle(), 0, ZMQ_POLLIN, 0}, {wake_rx_.handle(), 0, ZMQ_POLLIN, 0}}};
  while (true) {
    // Sleep until a request, an admit() or the next held request's deadline.
    auto wait = std::chrono::milliseconds(-1);
    if (!pending_.empty())
      wait = std::max(std::chrono::milliseconds(0),
                      std::chrono::duration_cast<std::chrono::milliseconds>(pending_.front().deadline - Clock::now()) +
                          std::chrono::milliseconds(1));
    try {
      zmq::poll(items.data(), items.size(), wait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      bool stop = false;
      zmq::message_t m;
      while (wake_rx_.recv(m, zmq::recv_flags::dontwait)) stop = stop || m.to_string() == "stop";
      if (stop) return;
    }
    // Held requests: accept those admitted meanwhile, refuse those past their deadline.
    const auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (admitted(it->key)) {
        log_debug("[zmq] admitted the held connection from ", it->address, " with key ", it->key);
        reply(it->route, it->request_id, true, "OK", it->key);
      } else if (now >= it->deadline) {
        refuse(it->route, it->request_id, "CURVE", it->address, it->key,
               str("key not admitted (waited ", admit_wait_.count(), " ms)"));
      } else {
        ++it;
        continue;
      }
      it = pending_.erase(it);
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    // Request: [routing id, empty] version, request id, domain, address, routing id, mechanism, credentials…
    std::vector<zmq::message_t> route, frames;
    bool more = true, in_route = true;
    while (more) {
      zmq::message_t f;
      if (!router_.recv(f, zmq::recv_flags::dontwait)) break;
      more = f.more();
      if (in_route) {
        in_route = f.size() != 0;
        if (route.size() < 4) route.push_back(std::move(f));
      } else if (frames.size() < 16) {
        frames.push_back(std::move(f));
      }
    }
    if (in_route) continue;  // no envelope: not from a libzmq session, nobody to answer
    const auto text = [&](std::size_t i) { return i < frames.size() ? frames[i].to_string() : std::string(); };
    const std::string request_id = text(1), domain = text(2), address = text(3), mechanism = text(5);
    if (frames.size() < 6 || text(0) != "1.0") {
      refuse(route, request_id, mechanism, address, "", "malformed ZAP request");
    } else if (domain != kZapDomain) {
      refuse(route, request_id, mechanism, address, "", "unknown domain");
    } else if (mechanism != "CURVE" || frames.size() < 7 || frames[6].size() != 32) {
      refuse(route, request_id, mechanism, address, "", "CURVE required");
    } else {
      std::array<char, 41> z85{};
      zmq_z85_encode(z85.data(), frames[6].data<std::uint8_t>(), 32);
      const std::string key = z85.data();
      if (admitted(key)) {
        reply(route, request_id, true, "OK", key);
      } else if (admit_wait_.count() <= 0) {
        refuse(route, request_id, mechanism, address, key, "key not admitted");
      } else {
        if (pending_.size() >= kMaxPendingZap) {
          Pending& old = pending_.front();
          refuse(old.route, old.request_id, "CURVE", old.address, old.key,
                 str("key not admitted (more than ", kMaxPendingZap, " connections waiting)"));
          pending_.pop_front();
        }
        log_debug("[zmq] holding a connection from ", address, " with key ", key, " for up to ", admit_wait_.count(),
                  " ms until its key is admitted");
        pending_.push_back({std::move(route), request_id, address, key, Clock::now() + admit_wait_});
      }
    }
  }
}

}  // namespace pico::comm
