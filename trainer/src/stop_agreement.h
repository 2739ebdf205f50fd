// trainer/src/stop_agreement.h — local contributors agree on the step to stop at (internal).
//
// When Ctrl-C or SIGTERM asks a run to stop, every contributor of a local run (threads of
// this process, or the --comm zmq processes of one machine) must stop after the same step:
// one that stops earlier would leave the others waiting in a collective, and a checkpoint
// taken at different steps could not be resumed. A collective cannot carry the decision
// (a contributor already inside the next step's collective would not take part), so they
// agree through a small board in memory they share — the heap for threads, a MAP_SHARED
// file for processes — with Dekker's handshake:
//
//   a contributor about to start step s+1:  progress[w] = s+1;  then read `requested`
//   the first that sees a stop request:     requested = 1;      then read every progress[·]
//
// Under sequentially consistent atomics at least one side sees the other's write, so the
// decider's stop step m = max progress (its own: the steps it has done) is ≥ every step any
// contributor starts; everyone then continues to exactly m. No contributor waits for
// another except for the decision itself (microseconds).
//
// What this is not: networked members need none of it (each leaves the run on its own).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace pico::trainer {

class StopAgreement {
 public:
  static constexpr int kMaxContributors = 64;

  // For contributors that are threads of this process.
  static std::unique_ptr<StopAgreement> in_memory(int contributors);
  // For contributor processes on this machine: `create` (the launcher) makes the file at
  // `path`; the contributors open it. Throws pico::Error naming the path on failure.
  static std::unique_ptr<StopAgreement> shared_file(const std::string& path, int contributors, bool create);
  ~StopAgreement();

  // Contributor `w` has completed `done` steps. True: it takes step done+1. False: every
  // contributor stops after step stop_step(); w has reached it. Called before every step;
  // costs two atomic operations until a stop is requested.
  bool may_continue(int w, std::int64_t done);
  // The agreed step, or −1 while no stop is decided.
  std::int64_t stop_step() const;

 private:
  struct Board;
  StopAgreement(Board* board, int contributors, void* mapping, std::size_t bytes);
  Board* board_;
  int contributors_;
  void* mapping_;  // the mmap of a shared file (nullptr: heap)
  std::size_t bytes_;
};

}  // namespace pico::trainer
