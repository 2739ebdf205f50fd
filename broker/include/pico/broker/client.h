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
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "pico/broker/protocol.h"

namespace pico::broker {

struct BrokerClientOptions {
  std::string endpoint;                // tcp://HOST:PORT of the broker
  std::string broker_public_key;       // Z85
  std::string public_key, secret_key;  // this contributor's CURVE key pair (Z85)
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds retry_interval{2000};  // re-send an unanswered request this often
  // ZMTP heartbeats: a PING this often; no traffic for `link_timeout` drops the connection
  // (libzmq reconnects on its own when the broker is back).
  std::chrono::milliseconds link_ping_interval{1000};
  std::chrono::milliseconds link_timeout{5000};
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
  // The same for a typed message (protocol.h): request(Join{…}) and so on.
  template <typename T>
  Message request(const T& msg, std::string blob = "", std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
    return request(T::kType, msg.to_json(), std::move(blob), timeout);
  }
  // Sends and forgets.
  void send(MessageType type, nlohmann::json body);
  // The next message the broker pushed, waiting up to `wait`.
  std::optional<Message> next_push(std::chrono::milliseconds wait);
  // `fn` sees every pushed message as it arrives, on the client's thread, before it queues
  // for next_push (for acting while the caller is busy, e.g. cancelling a collective the
  // broker has given up on). It must be quick and must not call this client.
  void watch_pushes(std::function<void(const Message&)> fn);
  // What the heartbeat says from now on. `send_now`: send it at once rather than at the
  // next interval (a member that just loaded θ_g must be counted in the next round before
  // it starts).
  void set_heartbeat(const Heartbeat& heartbeat, bool send_now = false);
  // No more heartbeats (the member left the run).
  void stop_heartbeat();
  // Seconds since the connection to the broker was lost (ZMTP heartbeats notice a broker
  // that died or a link that went silent within a few seconds), 0 while connected. Counts
  // from construction until the first connection.
  double seconds_without_broker() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
