// comm/src/zap_handler.h — the ZAP (ZeroMQ authentication protocol, RFC 27) handler of a node.
//
// libzmq asks it, over inproc://zeromq.zap.01 of the node's context, whether a client that
// completed the CURVE handshake may connect. It admits exactly the keys of the current
// members (set by ZmqNode::admit) on the domain "pico" and refuses everything else with a
// logged reason. The admitted key, in Z85, becomes the connection's User-Id, so every
// message received on that connection names the member that sent it.
#pragma once

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

namespace pico::comm {

inline constexpr const char* kZapDomain = "pico";

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 on `ctx` and starts the handler thread. Must exist before any
  // CURVE server socket of the context accepts a connection: without a handler libzmq admits all.
  explicit ZapHandler(zmq::context_t& ctx);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  void admit(const std::vector<std::string>& z85_keys);
  std::uint64_t refusals() const { return refusals_.load(); }

 private:
  void run();
  zmq::context_t& ctx_;
  zmq::socket_t rep_;
  zmq::socket_t stop_rx_, stop_tx_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::set<std::string> admitted_;  // Z85 public keys
  std::atomic<std::uint64_t> refusals_{0};
};

}  // namespace pico::comm
