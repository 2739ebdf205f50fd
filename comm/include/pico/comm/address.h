// pico/comm/address.h — which address of this machine other machines can dial.
//
// A process that listens on every interface (0.0.0.0) must still print an address in its
// join code. These helpers pick one from the machine's interfaces. They do not talk to the
// network: an address behind a NAT is printed as it is (the broker learns the address a
// member is seen from when it joins).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace pico::comm {

// IPv4 addresses of the interfaces that are up, loopback last.
std::vector<std::string> local_ipv4_addresses();

// True for 127.0.0.0/8, "localhost" and ::1.
bool is_loopback_host(const std::string& host);

// True for the hosts that mean "every interface": 0.0.0.0, *, :: and "".
bool is_wildcard_host(const std::string& host);

// HOST and PORT of tcp://HOST:PORT (brackets of [IPv6] removed); false for anything else.
bool split_tcp_endpoint(const std::string& endpoint, std::string& host, std::string& port);

// The address to print for a socket bound to `bind_host`: `bind_host` itself unless it is
// a wildcard (0.0.0.0, *, ::), then the first non-loopback IPv4 address (or 127.0.0.1 when
// the machine has none).
std::string advertise_host_for(const std::string& bind_host);

// Whether a TCP connection to `endpoint` (tcp://HOST:PORT) can be opened within `timeout`:
// "" if it can, else why not ("connection refused", "no answer within 3000 ms", …). Closes
// the connection at once; sends nothing. Blocks (name lookup included) for at most about
// `timeout`. Endpoints of other transports (ipc://) are not checked: "".
std::string tcp_dial_check(const std::string& endpoint, std::chrono::milliseconds timeout);

}  // namespace pico::comm
