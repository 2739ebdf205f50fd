// pico/broker/service.h — the broker process: BrokerCore behind a CURVE ROUTER socket.
//
// `pico broker` runs one; `pico train` without --broker runs one embedded on a thread. The
// service owns the sockets and the clock: a ROUTER socket (CURVE server with the broker's
// long-term key; a ZAP handler authenticates every client's key and hands it to the core,
// which decides per run who is admitted), a once-a-second tick, and optionally an HTTP
// listener: the dashboard page, its JSON API, /metrics and /status (src/dashboard_http.h),
// with operator actions for holders of a token made at start. Malformed messages are
// dropped with a logged reason. stop() (or a signal handled by the caller) ends run().
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "pico/broker/core.h"

namespace pico::broker {

struct ServiceOptions {
  std::string listen = "tcp://127.0.0.1:0";  // tcp://ADDR:PORT; port 0 picks a free one
  std::string state_path;                    // SQLite file
  std::string http;                          // dashboard: "PORT" (127.0.0.1), "ADDR:PORT", or "" for none
  std::string key_dir;                       // where the broker's key pair lives ("" = pico home)
  std::string key_name = "broker";
  // Run a relay (comm/relay.h) for members behind a NAT: a tunnel socket on the listen
  // address (a port of its own) and one port per relayed member. The host in the endpoints it
  // hands out is advertise_host ("" = the listen address, or this machine's first
  // non-loopback address when that is 0.0.0.0).
  bool relay = true;
  std::string advertise_host;
  BrokerOptions core;
};

class BrokerService {
 public:
  // Opens the state, loads (or creates) the key pair, binds the sockets. Throws pico::Error
  // naming the address or file on failure.
  explicit BrokerService(ServiceOptions options);
  ~BrokerService();
  BrokerService(const BrokerService&) = delete;
  BrokerService& operator=(const BrokerService&) = delete;

  // The bound endpoint (with the real port) and the broker's public key (Z85).
  const std::string& endpoint() const;
  const std::string& public_key() const;
  // The HTTP port actually bound (0 without --http), the dashboard's URL ("" without) and
  // the operator token that HTTP requests must carry to act (Authorization: Bearer TOKEN).
  int http_port() const;
  std::string dashboard_url() const;
  const std::string& operator_token() const;
  // Members of `run_id` still active (thread-safe).
  std::size_t active_members(const std::string& run_id) const;

  // Serves until stop() is called (from another thread or a signal handler).
  void run();
  // Runs run() on a background thread (the embedded broker).
  void start_background();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::broker
