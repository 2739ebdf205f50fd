// pico — the command-line entry point: parse, dispatch, and turn errors into exit codes.
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "pico/common/cpu_env.h"
#include "pico/common/error.h"
#include "pico/common/interrupt.h"

int main(int argc, char** argv) {
  // OpenMP and OpenBLAS read their settings when they are loaded: set them and re-execute
  // once if needed (pico/common/cpu_env.h; measured in experiments/inner_throughput).
  pico::ensure_cpu_environment(argv);
  // Before any thread exists: SIGINT/SIGTERM go to one thread (pico/common/interrupt.h).
  pico::install_signal_thread();
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
