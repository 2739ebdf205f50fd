// This machine's addresses (pico/comm/address.h).
#include "pico/comm/address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>

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

std::string advertise_host_for(const std::string& bind_host) {
  if (bind_host != "0.0.0.0" && bind_host != "*" && bind_host != "::" && !bind_host.empty()) return bind_host;
  const auto all = local_ipv4_addresses();
  const auto it = std::find_if(all.begin(), all.end(), [](const std::string& a) { return !is_loopback_host(a); });
  return it != all.end() ? *it : std::string("127.0.0.1");
}

}  // namespace pico::comm
