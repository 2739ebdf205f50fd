#include "support/test_util.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace pico::test {
namespace {

// A test binary that crashes loses its buffered output (ctest pipes stdout), and with it the
// assertion that failed first. Unbuffered output and a backtrace on a fatal signal keep both.
void on_fatal_signal(int sig) {
  static const char kHead[] = "\n*** fatal signal in test process; backtrace:\n";
  (void)!::write(STDERR_FILENO, kHead, sizeof kHead - 1);
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, STDERR_FILENO);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

const bool kCrashReporting = [] {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(sig, on_fatal_signal);
  return true;
}();

}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/pico-test-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  if (std::getenv("PICO_TEST_KEEP_TMP") != nullptr) return;  // keep logs for debugging a failure
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string python() {
  return "/usr/bin/python3";
}
std::string source_dir() {
  return PICO_SOURCE_DIR;
}
std::string pico_binary() {
  return PICO_BINARY;
}
std::string seams_binary() {
  return PICO_SEAMS_BINARY;
}
std::string test_data(const std::string& name) {
  return std::string(PICO_TEST_DATA) + "/" + name;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace pico::test
