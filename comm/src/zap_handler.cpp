#include "zap_handler.h"

#include <array>

#include "pico/common/log.h"

namespace pico::comm {

namespace {
std::atomic<int> g_stop_counter{0};
}

ZapHandler::ZapHandler(zmq::context_t& ctx)
    : ctx_(ctx), rep_(ctx, zmq::socket_type::rep), stop_rx_(ctx, zmq::socket_type::pair),
      stop_tx_(ctx, zmq::socket_type::pair) {
  rep_.set(zmq::sockopt::linger, 0);
  rep_.bind("inproc://zeromq.zap.01");
  const std::string stop = str("inproc://pico-zap-stop-", g_stop_counter.fetch_add(1));
  stop_rx_.bind(stop);
  stop_tx_.connect(stop);
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  try {
    stop_tx_.send(zmq::buffer("stop", 4), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
  }
  thread_.join();
}

void ZapHandler::admit(const std::vector<std::string>& z85_keys) {
  std::lock_guard<std::mutex> lock(mu_);
  admitted_ = std::set<std::string>(z85_keys.begin(), z85_keys.end());
}

void ZapHandler::run() {
  std::array<zmq::pollitem_t, 2> items = {{{rep_.handle(), 0, ZMQ_POLLIN, 0}, {stop_rx_.handle(), 0, ZMQ_POLLIN, 0}}};
  while (true) {
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return;
    }
    if (items[1].revents & ZMQ_POLLIN) return;
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    // Request: version, request id, domain, address, routing id, mechanism, credentials…
    std::vector<zmq::message_t> frames;
    bool more = true;
    while (more) {
      zmq::message_t f;
      if (!rep_.recv(f, zmq::recv_flags::none)) break;
      more = f.more();
      if (frames.size() < 16) frames.push_back(std::move(f));
    }
    const auto text = [&](std::size_t i) { return i < frames.size() ? frames[i].to_string() : std::string(); };
    std::string code = "400", status = "refused", user_id;
    const std::string domain = text(2), address = text(3), mechanism = text(5);
    if (frames.size() < 6 || text(0) != "1.0") {
      status = "malformed ZAP request";
    } else if (domain != kZapDomain) {
      status = "unknown domain";
    } else if (mechanism != "CURVE" || frames.size() < 7 || frames[6].size() != 32) {
      status = "CURVE required";
    } else {
      std::array<char, 41> z85{};
      zmq_z85_encode(z85.data(), frames[6].data<std::uint8_t>(), 32);
      std::lock_guard<std::mutex> lock(mu_);
      if (admitted_.count(z85.data())) {
        code = "200";
        status = "OK";
        user_id = z85.data();
      } else {
        status = "key not admitted";
        user_id = z85.data();  // for the log line only; not sent back
      }
    }
    if (code != "200") {
      refusals_.fetch_add(1);
      log_warn("[zmq] refused a ", mechanism.empty() ? "?" : mechanism, " connection from ", address,
               user_id.empty() ? "" : " with key " + user_id, ": ", status,
               " (only the keys of the group's current members are admitted)");
      user_id.clear();
    }
    const std::array<std::string, 6> reply = {"1.0", text(1), code, status, user_id, ""};
    try {
      for (std::size_t i = 0; i < reply.size(); ++i)
        rep_.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

}  // namespace pico::comm
