// experiments/allreduce/delay_relay.cpp — an Ethernet "cable" with one-way delay, for
// kernels without netem.
//
//   delay_relay HOST_SIDE_IF NET_SIDE_IF DELAY_MS
//
// Copies every frame between two interfaces of one network namespace with packet sockets:
// frames arriving on HOST_SIDE_IF (sent by the host's stack through a veth pair) leave on
// NET_SIDE_IF after DELAY_MS; frames arriving on NET_SIDE_IF leave on HOST_SIDE_IF at once.
// bench.py runs one per emulated host, between the host's shaped veth and the bridge, and
// turns offloads off so that frames are MTU-sized with complete checksums. Runs until killed.
// Not part of pico: a measuring aid for experiments/allreduce only.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;

long long now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec;
}

int open_packet_socket(const char* ifname) {
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) {
    std::perror("socket(AF_PACKET)");
    std::exit(1);
  }
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = static_cast<int>(if_nametoindex(ifname));
  if (addr.sll_ifindex == 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "delay_relay: cannot bind to %s: %s\n", ifname, std::strerror(errno));
    std::exit(1);
  }
  // Our own transmissions must not come back to us as "outgoing" copies.
  const int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) std::perror("PACKET_IGNORE_OUTGOING");
  const int buf = 16 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  return fd;
}

struct Frame {
  long long due_ns;
  std::vector<unsigned char> bytes;
};

void send_frame(int fd, const unsigned char* p, std::size_t n, unsigned long long& drops) {
  while (send(fd, p, n, 0) < 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ENOBUFS) {  // device queue full: wait for it briefly
      pollfd w{fd, POLLOUT, 0};
      if (poll(&w, 1, 5) <= 0) {
        ++drops;
        return;
      }
      continue;
    }
    ++drops;
    return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: delay_relay HOST_SIDE_IF NET_SIDE_IF DELAY_MS\n");
    return 2;
  }
  const long long delay_ns = std::atoll(argv[3]) * 1'000'000LL;
  const int host = open_packet_socket(argv[1]);
  const int net = open_packet_socket(argv[2]);
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGINT, [](int) { g_stop = 1; });
  std::deque<Frame> delayed;  // host → net, in arrival order (so due times are monotonic)
  std::vector<unsigned char> buf(65536);
  unsigned long long up = 0, down = 0, drops = 0;
  std::fprintf(stderr, "delay_relay: %s -> %s delayed %lld ms, %s -> %s immediate\n", argv[1], argv[2],
               delay_ns / 1'000'000, argv[2], argv[1]);
  while (!g_stop) {
    long long wait_ns = 100'000'000;
    if (!delayed.empty()) wait_ns = std::max(0LL, delayed.front().due_ns - now_ns());
    pollfd fds[2] = {{host, POLLIN, 0}, {net, POLLIN, 0}};
    timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000LL), static_cast<long>(wait_ns % 1'000'000'000LL)};
    if (ppoll(fds, 2, &ts, nullptr) < 0 && errno != EINTR) break;
    // Host → net: hold each frame for the delay.
    for (int i = 0; i < 256; ++i) {
      const ssize_t n = recv(host, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      delayed.push_back({now_ns() + delay_ns, std::vector<unsigned char>(buf.begin(), buf.begin() + n)});
    }
    // Net → host: at once.
    for (int i = 0; i < 256; ++i) {
      const ssize_t n = recv(net, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      send_frame(host, buf.data(), static_cast<std::size_t>(n), drops);
      ++down;
    }
    const long long t = now_ns();
    while (!delayed.empty() && delayed.front().due_ns <= t) {
      send_frame(net, delayed.front().bytes.data(), delayed.front().bytes.size(), drops);
      delayed.pop_front();
      ++up;
    }
  }
  std::fprintf(stderr, "delay_relay: %llu frames delayed, %llu passed back, %llu dropped\n", up, down, drops);
  return 0;
}
