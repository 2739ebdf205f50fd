// This machine's addresses (pico/comm/address.h).
#include "pico/comm/address.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pico/common/error.h"

namespace pico::comm {

std::vector<std::string> local_ipv4_addresses() {
  std::vector<std::string> up, loopback;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET || !(a->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf) == nullptr) continue;
    ((a->ifa_flags & IFF_LOOPBACK) ? loopback : up).push_back(buf);
  }
  ::freeifaddrs(list);
  for (auto& l : loopback) up.push_back(std::move(l));
  return up;
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

bool is_wildcard_host(const std::string& host) {
  return host == "0.0.0.0" || host == "*" || host == "::" || host.empty();
}

bool split_tcp_endpoint(const std::string& endpoint, std::string& host, std::string& port) {
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  const std::string rest = endpoint.substr(6);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  port = rest.substr(colon + 1);
  return true;
}

std::string advertise_host_for(const std::string& bind_host) {
  if (!is_wildcard_host(bind_host)) return bind_host;
  const auto all = local_ipv4_addresses();
  const auto it = std::find_if(all.begin(), all.end(), [](const std::string& a) { return !is_loopback_host(a); });
  return it != all.end() ? *it : std::string("127.0.0.1");
}

std::string tcp_dial_check(const std::string& endpoint, std::chrono::milliseconds timeout) {
  if (endpoint.rfind("tcp://", 0) != 0) return "";
  std::string host, port;
  if (!split_tcp_endpoint(endpoint, host, port)) return str("'", endpoint, "' is not tcp://HOST:PORT");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return str("cannot resolve ", host, ": ", ::gai_strerror(rc));
  std::string why = "no address";
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int err = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
      socklen_t len = sizeof err;
      if (n == 1) {
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    ::close(fd);
    if (err == 0) {
      ::freeaddrinfo(res);
      return "";
    }
    why = err == ETIMEDOUT ? str("no answer within ", timeout.count(), " ms") : std::string(std::strerror(err));
  }
  ::freeaddrinfo(res);
  return why;
}

}  // namespace pico::comm
