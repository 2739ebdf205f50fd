#include "support/process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <vector>

#include "support/test_util.h"

namespace pico::test {
namespace {
std::vector<pid_t> g_spawned;
}  // namespace

bool Proc::alive() const {
  if (pid <= 0 || status != -1) return false;
  int st = 0;
  if (::waitpid(pid, &st, WNOHANG) == 0) return true;
  status = st;
  return false;
}

int Proc::wait() const {
  if (status == -1 && pid > 0) {
    int st = 0;
    if (::waitpid(pid, &st, 0) == pid) status = st;
  }
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int Proc::wait_for(double seconds) const {
  if (!wait_until([&] { return !alive(); }, seconds)) return -1;
  return wait();
}

void Proc::signal(int sig) const {
  if (alive()) ::kill(pid, sig);
}

void Proc::kill9() const {
  if (alive()) ::kill(pid, SIGKILL);
  wait();
}

Proc spawn_pico(const std::string& args, const std::string& log, const std::string& binary) {
  Proc p;
  p.log = log;
  p.pid = ::fork();
  if (p.pid == 0) {
    ::setpgid(0, 0);
    const std::string cmd = "exec " + (binary.empty() ? pico_binary() : binary) + " " + args + " > " + log + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  g_spawned.push_back(p.pid);
  return p;
}

void kill_spawned() {
  for (pid_t pid : g_spawned) {
    if (::kill(pid, 0) == 0) ::kill(-pid, SIGKILL);  // its own process group (setpgid in spawn_pico)
    ::waitpid(pid, nullptr, WNOHANG);
  }
  g_spawned.clear();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool wait_for_log(const std::string& log, const std::regex& pattern, std::initializer_list<std::string*> groups,
                  double seconds) {
  return wait_until(
      [&] {
        const std::string text = slurp(log);
        std::smatch m;
        if (!std::regex_search(text, m, pattern)) return false;
        std::size_t i = 1;
        for (std::string* g : groups) *g = m[i++];
        return true;
      },
      seconds);
}

}  // namespace pico::test
