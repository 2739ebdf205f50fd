// tests/support/process.h — pico processes in the background, for multi-process tests.
//
// spawn() runs `pico ARGS` in its own process group with its output in a log file; the test
// waits on what the logs say. kill_spawned() (call it in TearDown) kills every group still
// running, so that a failed assertion leaves no process behind.
#pragma once

#include <chrono>
#include <initializer_list>
#include <regex>
#include <string>
#include <thread>

namespace pico::test {

// A background process. The exit status is kept when the child is reaped, so alive()
// followed by wait() still reports how it ended.
struct Proc {
  int pid = -1;
  std::string log;
  mutable int status = -1;  // raw waitpid status once reaped
  bool alive() const;
  // The exit code (128 + signal when killed), waiting for the end.
  int wait() const;
  void kill9() const;
};

// `pico ARGS > LOG 2>&1` in the background.
Proc spawn(const std::string& args, const std::string& log);
// SIGKILLs the process group of everything spawn() started, and forgets them.
void kill_spawned();

std::string slurp(const std::string& path);

// Waits until `pred` holds or `seconds` pass; returns whether it held.
template <typename Pred>
bool wait_for(Pred pred, double seconds) {
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
