// comm/src/zmq_node_impl.h — what a ZmqNode owns; shared by the node and its communicator.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <zmq.hpp>

#include "pico/comm/curve_keys.h"
#include "pico/comm/zmq_communicator.h"
#include "zap_handler.h"

namespace pico::comm {

// Elements per all-reduce segment for `wire`: whole uint8 blocks for uint8 (so segments start
// at multiples of kUInt8Block from the chunk start, as ring.h requires), else segment_bytes of values.
std::size_t zmq_segment_elements(WireDtype wire, std::size_t segment_bytes);

struct ZmqNode::Impl {
  ZmqOptions options;
  CurveKeyPair keys;  // empty in plaintext mode
  zmq::context_t ctx;
  std::unique_ptr<ZapHandler> zap;     // null in plaintext mode
  zmq::socket_t pull;                  // the receive socket: every peer's messages arrive here
  std::string endpoint;                // what peers dial (ZmqNode::endpoint)
  std::mutex endpoint_mu;              // guards `endpoint` (reached_through may change it)
  std::string local_endpoint;          // where this machine reaches the socket itself
  std::atomic<bool> in_use{false};     // one communicator at a time
  std::atomic<bool> cancelled{false};  // ZmqNode::cancel_collective
  std::string cancel_reason;           // guarded by endpoint_mu
  std::atomic<int> monitor_counter{0};

  ~Impl();
};

}  // namespace pico::comm
