// tests/support/process.h — pico processes in the background, their logs, and waiting.
//
// Multi-process tests start real `pico` processes (each in its own process group, output
// to a log file), wait for lines in their logs, send them signals, and reap them. Every
// process spawned is remembered; kill_spawned() (call it from TearDown) kills what a
// failing test left behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <initializer_list>
#include <regex>
#include <string>
#include <thread>

namespace pico::test {

// A background process whose output goes to a log file. The exit status is kept when the
// child is reaped, so alive() followed by wait() still reports how it ended.
struct Proc {
  pid_t pid = -1;
  std::string log;
  mutable int status = -1;  // raw waitpid status once reaped
  bool alive() const;
  // Blocks until it exits; its exit code, or 128 + signal.
  int wait() const;
  // Like wait() but gives up after `seconds` (returns -1 and leaves it running).
  int wait_for(double seconds) const;
  void signal(int sig) const;  // the process itself (not its group)
  void kill9() const;
};

// Starts `pico ARGS` (through /bin/sh, so ARGS may quote), stdout and stderr to `log`;
// `binary` replaces pico (e.g. seams_binary() for a misbehaving member).
Proc spawn_pico(const std::string& args, const std::string& log, const std::string& binary = "");
// Kills every process spawn_pico started that is still running (their whole groups).
void kill_spawned();

std::string slurp(const std::string& path);

// Waits until `pred` holds or `seconds` pass; returns pred().
template <typename Pred>
bool wait_until(Pred pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

// Waits until `pattern` matches in the log file; its groups go to `groups`, in order.
bool wait_for_log(const std::string& log, const std::regex& pattern, std::initializer_list<std::string*> groups,
                  double seconds);

}  // namespace pico::test
