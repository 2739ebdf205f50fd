// SIGINT/SIGTERM on a dedicated thread (pico/common/interrupt.h).
#include "pico/common/interrupt.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace pico {
namespace {

std::atomic<bool> g_graceful{false};
std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
std::atomic<bool> g_ignore_sigint{false};
std::mutex g_mu;  // guards g_notice and g_on_stop
std::string g_notice;
std::function<void()> g_on_stop;

// Held while on_stop runs, so that disable_graceful_stop() (a scope ending) waits for it
// and the object it refers to outlives the call.
std::mutex g_call_mu;

void run_on_stop() {
  std::lock_guard<std::mutex> call(g_call_mu);
  std::function<void()> f;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    f = g_on_stop;
  }
  if (f) f();
}

// The handler runs on whichever thread the kernel picks (one that does not block the
// signal: the thread below, or one a library started before main()) and only hands the
// signal number to the thread below through a pipe — the one async-signal-safe thing to do.
int g_pipe_write = -1;

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!::write(g_pipe_write, &b, 1);
  errno = saved;
}

void handle(int sig) {
  if (sig == SIGINT && g_ignore_sigint.load()) return;
  const bool first = !g_stop.load();
  if (g_graceful.load() && first) {
    g_signal.store(sig);
    g_stop.store(true);
    std::string notice;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      notice = g_notice;
    }
    std::fprintf(stderr, "\n[%s] %s\n", sig == SIGINT ? "Ctrl-C" : "SIGTERM", notice.c_str());
    std::fflush(stderr);
    run_on_stop();
    return;
  }
  // Not stoppable, or a second signal: exit now with the status a shell shows for the
  // signal, without running destructors that might wait.
  if (!first) std::fprintf(stderr, "\n[%s] exiting at once\n", sig == SIGINT ? "Ctrl-C" : "SIGTERM");
  std::fflush(stderr);
  ::_exit(128 + sig);
}

void signal_loop(int read_fd) {
  // This thread is the one that never blocks the signals (every thread started after
  // install_signal_thread() does), so a signal always has somewhere to land.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  for (;;) {
    unsigned char b = 0;
    const ssize_t n = ::read(read_fd, &b, 1);
    if (n == 1)
      handle(b);
    else if (n < 0 && errno == EINTR)
      continue;
    else
      return;
  }
}

}  // namespace

void install_signal_thread() {
  static std::once_flag once;
  std::call_once(once, [] {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;  // no graceful stop; signals keep their default action
    g_pipe_write = fds[1];
    // Signals blocked in this thread and so in every thread it starts from now on: no
    // system call of theirs (ZeroMQ's polls, disk writes) is ever interrupted (EINTR).
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    for (int sig : {SIGINT, SIGTERM}) {
      struct sigaction old {};
      ::sigaction(sig, nullptr, &old);
      // A shell that started us in the background with SIGINT ignored meant it.
      if (old.sa_handler == SIG_IGN) continue;
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      ::sigaction(sig, &sa, nullptr);
    }
    std::thread(signal_loop, fds[0]).detach();
  });
}

void enable_graceful_stop(const char* notice, std::function<void()> on_stop, SigintMode mode) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_notice = notice;
    g_on_stop = std::move(on_stop);
  }
  g_ignore_sigint.store(mode == SigintMode::kIgnore);
  g_graceful.store(true);
}

void disable_graceful_stop() {
  g_graceful.store(false);
  std::lock_guard<std::mutex> call(g_call_mu);
  std::lock_guard<std::mutex> lock(g_mu);
  g_on_stop = nullptr;
}

bool stop_requested() {
  return g_stop.load(std::memory_order_relaxed);
}
int stop_signal() {
  return g_signal.load();
}

void request_stop() {
  if (g_stop.exchange(true)) return;
  run_on_stop();
}

}  // namespace pico
