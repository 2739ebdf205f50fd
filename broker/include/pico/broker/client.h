// pico/broker/client.h — a contributor's connection to the broker.
//
// One DEALER socket (CURVE client: the broker's public key from the join code, this
// contributor's long-term key pair) owned by a background thread that also sends the
// heartbeat every `heartbeat_interval`. Requests are retried with the same request id
// until answered, so a broker that restarts meanwhile still answers them (its handlers are
// idempotent). Messages the broker pushes (round_start, snapshot_request, snapshot_ready,
// resync, evicted) queue up for next_push().
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "pico/broker/protocol.h"

namespace pico::broker {

struct BrokerClientOptions {
  std::string endpoint;           // tcp://HOST:PORT of the broker
  std::string broker_public_key;  // Z85
  std::string public_key, secret_key;  // this contributor's CURVE key pair (Z85)
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds retry_interval{2000};  // re-send an unanswered request this often
};

class BrokerClient {
 public:
  explicit BrokerClient(BrokerClientOptions options);
  ~BrokerClient();
  BrokerClient(const BrokerClient&) = delete;
  BrokerClient& operator=(const BrokerClient&) = delete;

  // Sends a request and blocks until its reply. A kError reply throws pico::Error with the
  // broker's reason and hint; no reply within `timeout` throws pico::Error (HINT: is the
  // broker up?). Other replies (kAck, kResync) are returned.
  Message request(MessageType type, nlohmann::json body, std::string blob = "",
                  std::chrono::milliseconds timeout = std::chrono::seconds(120));
  // Sends and forgets.
  void send(MessageType type, nlohmann::json body);
  // The next message the broker pushed, waiting up to `wait`.
  std::optional<Message> next_push(std::chrono::milliseconds wait);
  // What the heartbeat says from now on (an empty object stops heartbeats).
  void set_heartbeat(nlohmann::json body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
