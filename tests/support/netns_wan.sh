#!/usr/bin/env bash
# tests/support/netns_wan.sh up|down PREFIX — an emulated internet in network namespaces, for
# the NAT tests (tests/broker/nat_test.cpp). Needs root, iproute2 and nftables.
#
#   PREFIXi      the "internet": a bridge, 198.51.100.0/24 (TEST-NET-2)
#   PREFIXpub1   a public host, 198.51.100.11
#   PREFIXpub2   a public host, 198.51.100.12
#   PREFIXhK     a home (K = 1, 2, 3), 10.K.0.2/24, behind
#   PREFIXrK     its router, 198.51.100.2K on the internet, masquerading (nftables) the home's
#                connections; r3 also drops every packet from the internet that is not part of
#                a connection the home opened.
#
# Nothing outside these namespaces is touched; `down` deletes them all.
set -euo pipefail
cmd=${1:?up or down}
P=${2:?prefix}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^${P}" || true); do ip netns del "$ns" 2>/dev/null || true; done
}

# connect NS ADDRESS: a veth from NS to the internet's bridge, ADDRESS/24 on NS's end.
connect() {
  local ns=$1 address=$2
  ip link add "${ns}w" type veth peer name "${ns}b"
  ip link set "${ns}w" netns "$ns"
  ip link set "${ns}b" netns "${P}i"
  ip -n "${P}i" link set "${ns}b" master br0 up
  ip -n "$ns" addr add "$address/24" dev "${ns}w"
  ip -n "$ns" link set "${ns}w" up
}

up() {
  down
  for ns in i pub1 pub2 r1 r2 r3 h1 h2 h3; do
    ip netns add "${P}$ns"
    ip -n "${P}$ns" link set lo up
  done
  ip -n "${P}i" link add br0 type bridge
  ip -n "${P}i" link set br0 up
  connect "${P}pub1" 198.51.100.11
  connect "${P}pub2" 198.51.100.12
  for k in 1 2 3; do
    local r="${P}r$k" h="${P}h$k"
    connect "$r" "198.51.100.2$k"
    ip link add "${r}l" type veth peer name "${h}l"
    ip link set "${r}l" netns "$r"
    ip link set "${h}l" netns "$h"
    ip -n "$r" addr add "10.$k.0.1/24" dev "${r}l"
    ip -n "$r" link set "${r}l" up
    ip -n "$h" addr add "10.$k.0.2/24" dev "${h}l"
    ip -n "$h" link set "${h}l" up
    ip -n "$h" route add default via "10.$k.0.1"
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    {
      echo "table ip nat {"
      echo "  chain postrouting { type nat hook postrouting priority 100; oifname \"${r}w\" masquerade; }"
      echo "}"
      if [[ $k == 3 ]]; then
        echo "table ip filter {"
        echo "  chain forward { type filter hook forward priority 0;"
        echo "    ct state established,related accept"
        echo "    iifname \"${r}w\" drop"
        echo "  }"
        echo "}"
      fi
    } | ip netns exec "$r" nft -f -
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down PREFIX" >&2; exit 2 ;;
esac
