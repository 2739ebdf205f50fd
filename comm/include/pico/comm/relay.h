// pico/comm/relay.h — a relay for members that cannot accept connections (behind a NAT or a
// firewall): they dial the relay, and the relay accepts their peers' connections for them.
//
//   peer ──TCP──▶ relay:PORT ══ tunnel (ZeroMQ, CURVE) ══▶ member ──TCP──▶ its own node
//
// A member opens a tunnel to a relay (RelayTunnel: a DEALER that dials the relay's ROUTER,
// CURVE-encrypted to the relay's key) and registers. The relay opens a port for it
// (RelayServer) and names it in the endpoint it hands back (tcp://RELAY_HOST:PORT), which the
// member advertises instead of its own. Every TCP connection a peer opens to that port is
// carried through the tunnel, byte for byte, to a connection the member opens to its own node.
//
// What the relay can see: the bytes it carries are the two members' ZeroMQ stream, which is
// CURVE-encrypted end to end (the dialing peer checks the member's key, the member's ZAP
// handler checks the peer's): the relay learns who talks to whom, when and how much, never
// what, and cannot forge or alter a message without the handshake or the receiver's MAC check
// failing. The tunnel hop is CURVE-encrypted again, to the relay's key, so an eavesdropper on
// the member's link sees only that it talks to the relay.
//
// Tunnel frames, one ZeroMQ frame each: type (1 byte), connection id (4 bytes, little
// endian), payload.
//   member → relay: kRegister, kData, kClose, kPing
//   relay → member: kRegistered (payload: the endpoint peers dial), kOpen, kData, kClose,
//                   kPong, kRefused (payload: why)
// A registration whose member is silent for `silence` (no ping) is dropped with its port and
// connections; a tunnel that hears no pong for `silence` is down (alive() false) and its
// member needs another. Bounds: max_members registrations, max_connections per member, and
// max_buffered_bytes waiting to be written per connection (a connection past it is closed).
// Malformed frames are dropped and counted, never acted on.
//
// Not here: which relay a member uses and when (the broker offers its own: see
// docs/NETWORKING.md), hole punching.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "pico/comm/curve_keys.h"

namespace zmq {
class context_t;
}

namespace pico::comm {

struct RelayOptions {
  std::string listen_host = "0.0.0.0";  // where the tunnel socket and members' ports listen
  std::string advertise_host;           // the host in the endpoints handed out ("" = advertise_host_for(listen_host))
  int tunnel_port = 0;                  // the tunnel socket's port (0 = any free one)
  int max_members = 256;
  int max_connections_per_member = 16;
  std::size_t max_buffered_bytes = std::size_t{256} << 20;
  std::chrono::milliseconds silence{10'000};
};

struct RelayStats {
  int members = 0;                                             // registered now
  int connections = 0;                                         // open now
  std::uint64_t bytes_to_members = 0, bytes_from_members = 0;  // payload carried so far
  std::uint64_t frames_rejected = 0;                           // malformed or unexpected tunnel frames
};

class RelayServer {
 public:
  // Binds the tunnel socket (a CURVE server with `keys`, on `ctx`, whose ZAP handler must
  // authenticate `zap_domain`: registrations are per authenticated key) and starts serving on
  // a thread of its own. Throws pico::Error when it cannot bind.
  RelayServer(zmq::context_t& ctx, const CurveKeyPair& keys, const std::string& zap_domain, RelayOptions options);
  ~RelayServer();  // stops serving; members' ports and connections close
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  std::string tunnel_endpoint() const;  // what members dial: tcp://advertise_host:port
  RelayStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class RelayTunnel {
 public:
  // Dials the relay at `relay_endpoint` (its public key `relay_key`, Z85), registers with this
  // member's `keys`, and carries the connections peers open to the port it is given to
  // `local_endpoint` (tcp://127.0.0.1:PORT: this member's node). Blocks until registered;
  // throws pico::Error naming the relay if it does not answer within `timeout` or refuses.
  RelayTunnel(const std::string& relay_endpoint, const std::string& relay_key, const CurveKeyPair& keys,
              const std::string& local_endpoint, std::chrono::milliseconds silence = std::chrono::seconds(10),
              std::chrono::milliseconds timeout = std::chrono::seconds(15));
  ~RelayTunnel();
  RelayTunnel(const RelayTunnel&) = delete;
  RelayTunnel& operator=(const RelayTunnel&) = delete;

  const std::string& endpoint() const;  // the endpoint peers dial to reach this member
  bool alive() const;                   // false once the relay has not answered for `silence`
  RelayStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pico::comm
