// pico/trainer/trainer.h — `pico train`: the run loop around one or more contributors.
#pragma once

#include <cstdint>
#include <string>

#include "pico/trainer/run_config.h"

namespace pico::trainer {

struct TrainOptions {
  bool resume = false;  // continue from the latest valid checkpoint in the run directory
  // --resume given on the command line: a run directory with nothing to continue is an
  // error. Without it (checkpointing.auto_resume), an empty run directory starts afresh.
  bool resume_required = false;
  bool overwrite = false;            // start over in a run directory that already holds a run
  std::int64_t stop_after_step = 0;  // > 0: stop (and save) once this step is done; --resume continues
  // How local contributors (local_workers > 1) talk: "inprocess" (threads of this process)
  // or "zmq" (one process each, CURVE-encrypted ZeroMQ over loopback).
  std::string comm = "inprocess";
  // Internal, for the processes that --comm zmq starts: this process is contributor
  // `worker_rank` and meets the others in `rendezvous_dir`.
  int worker_rank = -1;
  std::string rendezvous_dir;
};

struct TrainSummary {
  std::int64_t steps = 0;    // the step the run reached (completed optimizer steps)
  std::int64_t tokens = 0;   // tokens trained by this invocation (all local contributors; not resumed ones)
  bool interrupted = false;  // stopped early by Ctrl-C / SIGTERM (a checkpoint of `steps` was saved)
  double loss = 0;           // mean training loss of the last logging interval
  double val_loss = 0;       // last validation loss (NaN if none)
  double seconds = 0;
  std::string run_dir;
};

// Trains to training.max_steps, writing RUN_DIR/config.yaml and RUN_DIR/metrics.jsonl and
// showing a live progress line. Throws pico::Error on bad input.
TrainSummary run_training(const RunConfig& cfg, const TrainOptions& options);

}  // namespace pico::trainer
