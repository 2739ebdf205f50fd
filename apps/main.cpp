// pico — the command-line entry point: parse, dispatch, and turn errors into exit codes.
#include <c10/util/Exception.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "pico/common/error.h"

namespace {

// LibTorch's OpenMP threads and OpenBLAS's pthreads share the cores. With libgomp's default
// wait policy, idle OpenMP threads spin for a while after every parallel op and steal the
// cores OpenBLAS is about to use: 3x slower training on 2 cores (measured in
// experiments/inner_throughput). libgomp reads OMP_WAIT_POLICY when it is loaded, before
// main(), so set it and re-execute once. PICO_NO_REEXEC=1 disables this.
void ensure_thread_environment(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("PICO_NO_REEXEC") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);
  // exec failed: carry on with the slower default
}

}  // namespace

int main(int argc, char** argv) {
  ensure_thread_environment(argv);
  CLI::App app{
      "pico — decentralized, low-communication training of language models.\n"
      "Many contributors train a LLaMA-style decoder on their own data shards and meet every\n"
      "few hundred steps to average compressed pseudo-gradients (DiLoCo), or exchange a tiny\n"
      "top-k of momentum every step (DeMo).",
      "pico"};
  app.set_version_flag("--version", PICO_VERSION);
  app.require_subcommand(1);
  app.footer("Run `pico COMMAND --help` for the options of a command.");
  pico::apps::register_all_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const pico::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "HINT: %s\n", e.hint().c_str());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error (LibTorch): %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
