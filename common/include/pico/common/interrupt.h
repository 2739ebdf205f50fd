// pico/common/interrupt.h — Ctrl-C and SIGTERM: a graceful stop, then an immediate one.
//
// main() calls install_signal_thread() first thing: SIGINT and SIGTERM are blocked in main
// and every thread it starts later, so none of their system calls is ever interrupted (no
// EINTR surfaces from ZeroMQ or the disk); the signals land on one dedicated thread (or a
// thread a library started before main(), whose handler passes them on through a pipe),
// which decides what they do.
//
// What a signal does depends on the command. By default (data prepare, analyze, eval, …)
// the first signal exits at once with status 128 + signal, as without a handler. A command
// that can stop cleanly calls enable_graceful_stop(): the first signal then only sets a
// flag that its loops poll at safe points (stop_requested()), and prints what will happen;
// a second signal exits at once. On a spot instance that sends SIGTERM, training finishes
// its step, saves a checkpoint and exits 0.
//
// What this is not: it does not decide where it is safe to stop; the training loops do.
#pragma once

#include <functional>

namespace pico {

enum class SigintMode {
  kStop,    // SIGINT and SIGTERM both request a stop
  kIgnore,  // SIGINT is ignored (a --comm zmq contributor process: its launcher handles
            // the terminal's Ctrl-C and forwards a SIGTERM)
};

// Blocks SIGINT/SIGTERM in the calling thread (and so in every thread created later) and
// starts the thread that receives them. Call once, first thing in main().
void install_signal_thread();

// The first signal from now on requests a stop instead of exiting. `notice` is printed on
// stderr when it arrives (e.g. "stopping after this step; Ctrl-C again to exit at once").
// `on_stop` (may be empty) runs on the signal thread when the stop is requested, e.g. to
// stop a service loop; it must be thread-safe.
void enable_graceful_stop(const char* notice, std::function<void()> on_stop = {}, SigintMode mode = SigintMode::kStop);

// Back to the default (the first signal exits at once) and forgets `on_stop`.
void disable_graceful_stop();

// enable_graceful_stop() for a scope: the destructor calls disable_graceful_stop(), so an
// `on_stop` that refers to a local object never outlives it.
class GracefulStopScope {
 public:
  GracefulStopScope(const char* notice, std::function<void()> on_stop = {}, SigintMode mode = SigintMode::kStop) {
    enable_graceful_stop(notice, std::move(on_stop), mode);
  }
  ~GracefulStopScope() { disable_graceful_stop(); }
  GracefulStopScope(const GracefulStopScope&) = delete;
  GracefulStopScope& operator=(const GracefulStopScope&) = delete;
};

// True once a stop was requested (by a signal or request_stop()).
bool stop_requested();
// The signal that requested the stop (SIGINT, SIGTERM), or 0.
int stop_signal();
// Requests a stop as a signal would (tests; a component that must wind the process down).
void request_stop();

}  // namespace pico
