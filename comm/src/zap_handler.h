// comm/src/zap_handler.h — the ZAP (ZeroMQ authentication protocol, RFC 27) handler of a node.
//
// libzmq asks it, over inproc://zeromq.zap.01 of the node's context, whether a client that
// completed the CURVE handshake may connect. It admits exactly the keys of the current
// members (set by ZmqNode::admit) on the domain "pico" and refuses everything else with a
// logged reason. The admitted key, in Z85, becomes the connection's User-Id, so every
// message received on that connection names the member that sent it.
//
// A key that is not admitted yet is not refused at once: its request is held for up to
// `admit_wait`, and answered as soon as admit() names the key. A group's members learn the
// member list at slightly different moments (the broker's round start reaches each one on its
// own connection) and each starts connecting as soon as it has made its communicator, so a
// neighbour's first handshake often arrives before this node has admitted its key. libzmq
// does not reconnect after a refused handshake: refusing it would lose the connection for the
// whole collective. Requests that are malformed, of another domain or mechanism are refused at
// once; at most kMaxPendingZap requests are held (the oldest is refused beyond that).
//
// Not here: the CURVE handshake itself (libzmq), which keys are members (the caller).
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

namespace pico::comm {

inline constexpr const char* kZapDomain = "pico";
inline constexpr std::size_t kMaxPendingZap = 256;

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 on `ctx` and starts the handler thread. Must exist before any
  // CURVE server socket of the context accepts a connection: without a handler libzmq admits all.
  ZapHandler(zmq::context_t& ctx, std::chrono::milliseconds admit_wait);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Replaces the admitted keys; held requests of keys now admitted are accepted at once.
  void admit(const std::vector<std::string>& z85_keys);
  std::uint64_t refusals() const { return refusals_.load(); }

 private:
  // A request whose key was not admitted when it arrived.
  struct Pending {
    std::vector<zmq::message_t> route;  // ROUTER envelope: routing id + empty delimiter
    std::string request_id, address, key;
    std::chrono::steady_clock::time_point deadline;
  };
  void run();
  void reply(std::vector<zmq::message_t>& route, const std::string& request_id, bool ok, const std::string& status,
             const std::string& user_id);
  void refuse(std::vector<zmq::message_t>& route, const std::string& request_id, const std::string& mechanism,
              const std::string& address, const std::string& key, const std::string& status);
  bool admitted(const std::string& key) const;

  zmq::context_t& ctx_;
  std::chrono::milliseconds admit_wait_;
  zmq::socket_t router_;
  zmq::socket_t wake_rx_, wake_tx_;  // "admit" / "stop" to the handler thread (wake_tx_ under mu_)
  std::thread thread_;
  mutable std::mutex mu_;
  std::set<std::string> admitted_;  // Z85 public keys
  std::deque<Pending> pending_;     // handler thread only
  std::atomic<std::uint64_t> refusals_{0};
};

}  // namespace pico::comm
