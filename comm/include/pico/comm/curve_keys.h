// pico/comm/curve_keys.h — long-term CURVE key pairs: created once, stored 0600, reloaded.
//
// A contributor (and later the broker) identifies itself on every socket by a Curve25519
// key pair. The pair is generated on first use and kept in `<dir>/<name>.key` (mode 0600,
// the directory 0700); the public half is what rendezvous and the broker hand to peers and
// what the ZAP handler admits. Keys travel as Z85 text (40 characters for 32 bytes).
// This file does not talk to the network.
#pragma once

#include <string>
#include <utility>

namespace pico::comm {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; never logged, never sent
};

// Throws pico::Error with a HINT when this libzmq was built without CURVE (libsodium).
void curve_require_available();

// The key directory used when none is configured: pico_home()/keys.
std::string curve_default_key_dir();

// Loads `<dir>/<name>.key`, or creates it (and `dir`, mode 0700) with a fresh key pair when
// it does not exist. Two processes racing to create the same name end up with the same pair.
// Throws pico::Error naming the path when the file is unreadable, malformed, its public key
// does not belong to its secret key, or it is readable by group/others (HINT: chmod 600).
// `name` may contain [A-Za-z0-9._-] only.
CurveKeyPair curve_load_or_create_keypair(const std::string& dir, const std::string& name);

// An identity (a named key pair) that this process holds while the lease lives, so two pico
// processes on one machine never take part in a run as the same contributor: an exclusive
// flock on `<dir>/<name>.key.lock`, released when the lease is destroyed or the process exits
// however it exits (the kernel drops the lock; a stale lock file is never a problem).
class IdentityLease {
 public:
  IdentityLease(std::string name, CurveKeyPair keys, int lock_fd)
      : name_(std::move(name)), keys_(std::move(keys)), fd_(lock_fd) {}
  IdentityLease(IdentityLease&& o) noexcept : name_(std::move(o.name_)), keys_(std::move(o.keys_)), fd_(o.fd_) {
    o.fd_ = -1;
  }
  IdentityLease& operator=(IdentityLease&&) = delete;
  IdentityLease(const IdentityLease&) = delete;
  ~IdentityLease();
  const std::string& name() const { return name_; }
  const CurveKeyPair& keys() const { return keys_; }

 private:
  std::string name_;
  CurveKeyPair keys_;
  int fd_ = -1;
};

// Leases identity `name` in `dir` (its key pair loaded or created as
// curve_load_or_create_keypair does). When another process holds it: with `exact` (the user
// named the identity), pico::Error naming that process and a HINT; otherwise the first free
// one of NAME-2, NAME-3, … NAME-64 (the caller says which it got).
IdentityLease lease_identity(const std::string& dir, const std::string& name, bool exact);

// A fresh pair that is never stored (tests, throw-away clients).
CurveKeyPair curve_generate_keypair();

// True when `key` is 40 characters of valid Z85.
bool curve_is_valid_key(const std::string& key);

// A public key as 64 lowercase hex digits: what pico prints for people to copy (Z85 has
// characters such as & ? $ that a shell would take). Throws pico::Error for an invalid key.
std::string curve_key_to_hex(const std::string& z85);
// A public key typed by a person: 64 hex digits or 40 Z85 characters → Z85. Throws
// pico::Error naming `what` (e.g. "--broker-key") and the value when it is neither.
std::string curve_key_from_text(const std::string& text, const std::string& what);

}  // namespace pico::comm
