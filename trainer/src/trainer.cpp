// The run: set-up, one worker thread per local contributor, checkpoints and resume,
// metrics and progress.
#include "pico/trainer/trainer.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "algorithms.h"
#include "pico/checkpoints/store.h"
#include "pico/comm/in_process.h"
#include "pico/comm/rendezvous.h"
#include "pico/comm/zmq_communicator.h"
#include "pico/common/blas.h"
#include "pico/common/cpu_env.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/interrupt.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/common/strings.h"
#include "pico/trainer/checkpointing.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/metrics.h"
#include "stop_agreement.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The step this invocation trains to: max_steps, or --stop-after-step when that comes first.
std::int64_t last_step(const RunConfig& cfg, const TrainOptions& options) {
  return options.stop_after_step > 0 ? std::min(options.stop_after_step, cfg.training.max_steps)
                                     : cfg.training.max_steps;
}

void set_threads(std::int64_t threads) {
  const int n =
      threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

std::string format_rate(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", tokens_per_s / 1e6);
  else if (tokens_per_s >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  return buf;
}

// Collects every contributor's reports: metrics.jsonl lines and the live progress line.
class RunMonitor {
 public:
  // `workers` contributors report to this monitor: indices first_worker … first_worker + workers − 1.
  // `append`: keep what metrics.jsonl holds (a resumed run, or contributor processes that
  // share the file); otherwise it starts empty.
  // `truncate_on_resume`: this monitor cuts metrics.jsonl back on resume (false in the
  // contributor processes of --comm zmq other than rank 0: one process rewrites the file).
  RunMonitor(const RunConfig& cfg, const std::string& metrics_path, bool append, int workers, int first_worker = 0,
             bool truncate_on_resume = true)
      : cfg_(cfg),
        metrics_path_(metrics_path),
        truncated_(!truncate_on_resume),
        workers_(workers),
        first_(first_worker),
        start_(Clock::now()),
        per_worker_(static_cast<std::size_t>(workers)) {
    metrics_.emplace(metrics_path, /*truncate=*/!append);
  }

  // Worker `w` continues from `state` (called before its first step). The first call drops
  // the records of later steps and rounds from metrics.jsonl: the resumed run redoes them.
  void resumed(int w, const TrainState& state) {
    std::lock_guard<std::mutex> lock(mu_);
    per_worker_[static_cast<std::size_t>(w - first_)].tokens = state.tokens;
    resumed_tokens_ += state.tokens;
    first_step_ = state.step;
    if (truncated_) return;
    truncated_ = true;
    metrics_.reset();  // reopened after the rewrite (which replaces the file)
    truncate_metrics_after(metrics_path_, state.step, state.round);
    metrics_.emplace(metrics_path_, /*truncate=*/false);
  }

  // Opens metrics.jsonl again: another process has replaced it (truncate_metrics_after
  // writes a new file), and records appended to the old one would be lost.
  void reopen() {
    std::lock_guard<std::mutex> lock(mu_);
    metrics_.reset();
    metrics_.emplace(metrics_path_, /*truncate=*/false);
  }

  // Called by worker `w` after each step; writes a record on logging steps.
  void on_step(int w, std::int64_t step, const StepReport& rep, std::uint64_t bytes_sent, std::uint64_t bytes_received,
               double val_loss) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& s = per_worker_[static_cast<std::size_t>(w - first_)];
    s.tokens += rep.inner.tokens;
    s.interval_loss += rep.inner.loss;
    s.interval_steps += 1;
    s.interval_tokens += rep.inner.tokens;
    session_tokens_ += rep.inner.tokens;
    if (rep.round_done) on_round(w, rep.round);
    const bool last = step == cfg_.training.max_steps;
    const bool has_val = std::isfinite(val_loss);
    if (!(last || has_val || step % cfg_.monitoring.log_every_n_steps == 0)) return;
    const double dt = seconds_since(s.interval_start);
    const double loss = s.interval_loss / static_cast<double>(s.interval_steps);
    nlohmann::json rec = {{"step", step},
                          {"contributor", w},
                          {"tokens", s.tokens},
                          {"loss", loss},
                          {"lr", rep.inner.lr},
                          {"grad_norm", rep.inner.grad_norm},
                          {"tok_per_s", dt > 0 ? static_cast<double>(s.interval_tokens) / dt : 0.0},
                          {"bytes_sent", bytes_sent},
                          {"bytes_received", bytes_received},
                          {"elapsed_s", seconds_since(start_)}};
    if (has_val) {
      rec["val_loss"] = val_loss;
      last_val_ = val_loss;
    }
    metrics_->write(rec);
    if (w == first_) sent_per_contributor_ = bytes_sent;
    if (w == 0) {
      last_loss_ = loss;
      update_progress(step, rep.inner.lr, bytes_sent, has_val || last);
    }
    s.interval_loss = 0;
    s.interval_steps = 0;
    s.interval_tokens = 0;
    s.interval_start = Clock::now();
  }

  // The run's last line. `steps`: the step reached; `interrupted`: stopped by a signal.
  void finish(std::int64_t steps, bool interrupted) {
    const auto n = cfg_.local_workers;
    const std::string trained = first_step_ > 0 ? str("steps ", first_step_, "→", steps) : str(steps, " steps");
    std::string done = str(interrupted ? "stopped: " : "done: ", trained, " × ", n, " contributor", n > 1 ? "s" : "",
                           ", ", session_tokens(), " tokens in ", format_duration(seconds_since(start_)));
    if (resumed_tokens_ > 0) done += str(" (", session_tokens() + resumed_tokens(), " in the run)");
    done += str(" | loss ", last_loss_);
    if (std::isfinite(last_val_)) done += str(" | val_loss ", last_val_);
    if (n > 1) done += str(" | sent ", format_bytes(static_cast<double>(sent_per_contributor_)), " per contributor");
    progress_.finish(done);
  }

  double last_loss() const { return last_loss_; }
  double last_val_loss() const { return last_val_; }
  // Tokens trained by every local contributor in this invocation, and before it (resumed).
  // A --comm zmq process sees its own only; contributors of a local run process the same
  // number of tokens per step, so its share times the contributors is the run's total.
  std::int64_t session_tokens() const { return session_tokens_ * cfg_.local_workers / workers_; }
  std::int64_t resumed_tokens() const { return resumed_tokens_ * cfg_.local_workers / workers_; }

 private:
  struct WorkerStats {
    std::int64_t tokens = 0;
    double interval_loss = 0;
    std::int64_t interval_steps = 0, interval_tokens = 0;
    Clock::time_point interval_start = Clock::now();
  };

  // Every contributor reports its θ_g hash; once all have, one record for the round.
  void on_round(int w, const RoundReport& r) {
    auto& pending = rounds_[r.round];
    if (w == first_) pending.report = r;
    pending.hashes.push_back(r.theta_hash);
    if (static_cast<int>(pending.hashes.size()) < workers_) return;
    bool in_sync = true;
    for (const auto& h : pending.hashes) in_sync = in_sync && h == pending.hashes.front();
    if (!in_sync) log_error("contributors disagree on θ_g after round ", r.round, ": this is a bug in pico");
    const RoundReport& rep = pending.report;
    metrics_->write({{"round", rep.round},
                     {"contributor", first_},
                     {"contributors", rep.contributors},
                     {"pseudo_grad_norm", rep.pseudo_grad_norm},
                     {"outer_step_s", rep.outer_step_s},
                     {"comm_s", rep.comm_s},
                     {"round_bytes_sent", rep.bytes_sent},
                     {"round_bytes_received", rep.bytes_received},
                     {"round_tokens", rep.tokens},
                     {"theta_hash", rep.theta_hash},
                     {"contributors_in_sync", in_sync},
                     {"elapsed_s", seconds_since(start_)}});
    rounds_.erase(r.round);
  }

  void update_progress(std::int64_t step, double lr, std::uint64_t bytes_sent, bool force) {
    const double elapsed = seconds_since(start_);
    const std::int64_t max_steps = cfg_.training.max_steps;
    const double eta = elapsed / static_cast<double>(std::max<std::int64_t>(1, step - first_step_)) *
                       static_cast<double>(max_steps - step);
    std::string line = str("step ", step, "/", max_steps, " | loss ", std::round(last_loss_ * 1000) / 1000);
    if (std::isfinite(last_val_)) line += str(" | val ", std::round(last_val_ * 1000) / 1000);
    char lr_buf[16];
    std::snprintf(lr_buf, sizeof lr_buf, "%.2e", lr);
    line += str(" | ", format_rate(static_cast<double>(session_tokens()) / elapsed), " tok/s | lr ", lr_buf);
    if (cfg_.local_workers > 1) line += str(" | sent ", format_bytes(static_cast<double>(bytes_sent)));
    line += str(" | ETA ", format_duration(eta));
    progress_.update(line, force);
  }

  const RunConfig& cfg_;
  std::mutex mu_;
  std::string metrics_path_;
  std::optional<MetricsWriter> metrics_;
  std::int64_t first_step_ = 0;  // the step the run started or resumed at
  bool truncated_;               // metrics.jsonl was cut back already (or is not ours to cut)
  int workers_;
  int first_;
  Clock::time_point start_;
  std::vector<WorkerStats> per_worker_;
  struct PendingRound {
    RoundReport report;
    std::vector<std::string> hashes;
  };
  std::map<std::int64_t, PendingRound> rounds_;
  std::uint64_t sent_per_contributor_ = 0;  // bytes the first of this monitor's contributors has sent
  std::int64_t session_tokens_ = 0;         // trained by this monitor's contributors since it started
  std::int64_t resumed_tokens_ = 0;         // theirs before that (from checkpoints)
  double last_loss_ = std::nan(""), last_val_ = std::nan("");
  ProgressLine progress_;
};

// Where contributor `w` keeps its checkpoints: RUN_DIR/checkpoints for a lone contributor,
// RUN_DIR/checkpoints/contributor_<w> when there are several (each saves its own state).
std::string checkpoint_dir(const RunConfig& cfg, int w) {
  const std::string base = cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir;
  return cfg.local_workers > 1 ? str(base, "/contributor_", w) : base;
}

// Resumes contributor `w` from its newest valid checkpoint such that every contributor
// continues from the same step: they exchange the step each found, and those ahead retry
// with the lowest (each file restores everything, so a retry overwrites the first load).
TrainState resume_agreed(RunCheckpointer& checkpointer, Contributor& c, Algorithm& algorithm, comm::Communicator& comm,
                         std::mutex& compute_mu, double timeout_s) {
  constexpr std::uint64_t kResumeTag = ~std::uint64_t{0} - 64;  // distinct from every training collective
  std::int64_t limit = std::numeric_limits<std::int64_t>::max();
  for (std::uint64_t attempt = 0;; ++attempt) {
    std::optional<TrainState> st;
    {
      std::lock_guard<std::mutex> lock(compute_mu);
      st = checkpointer.resume(c, &algorithm, limit);
    }
    const std::int64_t mine = st ? st->step : 0;
    if (comm.world_size() == 1) return st.value_or(TrainState{});
    std::vector<std::uint8_t> payload(sizeof mine);
    std::memcpy(payload.data(), &mine, sizeof mine);
    std::vector<std::vector<std::uint8_t>> all;
    comm::AllgatherOptions opts;
    opts.tag = kResumeTag + attempt;
    opts.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
    const auto r = comm.all_gather(payload, all, opts);
    if (!r.ok())
      throw Error(
          str("contributors could not agree on the step to resume from: ", comm::to_string(r.status), " — ", r.error),
          "another contributor failed to resume; its error is printed above");
    std::int64_t lowest = mine, highest = mine;
    std::vector<std::string> found;
    for (std::size_t i = 0; i < all.size(); ++i) {
      std::int64_t s = 0;
      PICO_CHECK(all[i].size() == sizeof s, "resume step message of contributor ", i, " has ", all[i].size(), " bytes");
      std::memcpy(&s, all[i].data(), sizeof s);
      lowest = std::min(lowest, s);
      highest = std::max(highest, s);
      found.push_back(str("contributor ", i, ": step ", s));
    }
    if (lowest == highest) {
      if (attempt > 0) log_info("resume: every contributor continues from step ", lowest);
      return st.value_or(TrainState{});
    }
    if (lowest == 0)
      throw Error(str("some contributors have no usable checkpoint and others do (", join(found, ", "), ")"),
                  "contributors resume together from one step: restore the missing checkpoints, or start the run "
                  "over with --overwrite");
    log_warn("resume: contributors found different newest checkpoints (", join(found, ", "), "); all go back to step ",
             lowest, " or earlier");
    limit = lowest;
  }
}

// Waits until every contributor has called it (an all-gather of nothing, on a tag no
// training collective uses). `what` names the occasion in the error.
void barrier(comm::Communicator& comm, const std::string& what, double timeout_s) {
  constexpr std::uint64_t kBarrierTag = ~std::uint64_t{0} - 128;
  std::vector<std::vector<std::uint8_t>> all;
  comm::AllgatherOptions opts;
  opts.tag = kBarrierTag;
  opts.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
  const auto r = comm.all_gather(std::vector<std::uint8_t>(1, 0), all, opts);
  if (!r.ok())
    throw Error(str("contributors did not meet for ", what, ": ", comm::to_string(r.status), " — ", r.error),
                "another contributor failed; its error is printed above");
}

// One contributor's whole run, on its own thread: resume (or check that the run is new),
// steps, saves, and the final save. Returns the step it stopped after: the last step of
// the schedule, or the step every contributor agreed on when a stop was requested.
std::int64_t run_worker(const RunConfig& cfg, std::shared_ptr<const data::Dataset> dataset, torch::Device device, int w,
                        comm::Communicator& comm, std::mutex& compute_mu, RunMonitor& monitor,
                        const TrainOptions& options, StopAgreement& stop) {
  if (cfg.local_workers > 1) set_log_thread_tag(str("[w", w, "] "));
  std::unique_ptr<Contributor> contributor;
  {
    std::lock_guard<std::mutex> lock(compute_mu);
    contributor = std::make_unique<Contributor>(cfg, dataset, device, static_cast<std::size_t>(w),
                                                static_cast<std::size_t>(cfg.local_workers));
  }
  auto algorithm = make_algorithm(cfg, *contributor, comm, compute_mu);
  RunCheckpointer checkpointer(cfg, *dataset, checkpoint_dir(cfg, w));
  TrainState state;
  if (options.resume) {
    state = resume_agreed(checkpointer, *contributor, *algorithm, comm, compute_mu, cfg.outer.timeout_s);
    monitor.resumed(w, state);
    if (options.worker_rank >= 0 && comm.world_size() > 1) {
      // Contributor processes share metrics.jsonl: rank 0 has just cut it back (replacing
      // the file); nobody writes before that, and everybody appends to the new file.
      barrier(comm, "the metrics rewrite after resuming", cfg.outer.timeout_s);
      monitor.reopen();
    }
  }
  const std::int64_t max_steps = cfg.training.max_steps;
  const std::int64_t stop_step = last_step(cfg, options);
  const std::int64_t eval_every = cfg.evaluation.every_n_steps;
  for (std::int64_t step = state.step; step < stop_step && stop.may_continue(w, step);) {
    const StepReport rep = algorithm->step(step);
    ++step;
    state.step = step;
    state.tokens += rep.inner.tokens;
    state.round = algorithm->rounds_done();
    double val = std::nan("");
    if (w == 0 && (step == max_steps || (eval_every > 0 && step % eval_every == 0))) {
      std::lock_guard<std::mutex> lock(compute_mu);
      val = contributor->evaluate();
    }
    // The step's record first: a checkpoint of step S implies metrics.jsonl holds S (a
    // process killed in between has nothing to redo that the file lacks).
    monitor.on_step(w, step, rep, algorithm->bytes_sent(), algorithm->bytes_received(), val);
    {
      std::lock_guard<std::mutex> lock(compute_mu);  // the snapshot computes (learning dynamics)
      checkpointer.maybe_save(*contributor, state, algorithm.get(), /*force=*/step == stop_step);
    }
  }
  {
    std::lock_guard<std::mutex> lock(compute_mu);
    checkpointer.maybe_save(*contributor, state, algorithm.get(), /*force=*/true);  // no-op when this step is saved
  }
  checkpointer.finish();
  return state.step;
}

// Whether the run directory holds any step file, of one contributor or of several.
bool run_has_checkpoints(const RunConfig& cfg) {
  namespace fs = std::filesystem;
  const std::string base = cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir;
  std::error_code ec;
  if (!fs::is_directory(base, ec)) return false;
  if (!checkpoints::CheckpointDir(base).list().empty()) return true;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory() && !checkpoints::CheckpointDir(it->path().string()).list().empty()) return true;
  return false;
}

// For --resume: the checkpoints on disk must come from as many contributors as this run has
// (one: step files in RUN_DIR/checkpoints; N: RUN_DIR/checkpoints/contributor_<w>).
void check_resume_layout(const RunConfig& cfg) {
  namespace fs = std::filesystem;
  const std::string base = cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir;
  std::error_code ec;
  if (!fs::is_directory(base, ec)) return;
  const bool top_files = !checkpoints::CheckpointDir(base).list().empty();
  int subdirs = 0;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory() && it->path().filename().string().rfind("contributor_", 0) == 0) ++subdirs;
  const auto workers = cfg.local_workers;
  const std::string hint = "resume with the number of contributors the run was started with (local_workers in " +
                           cfg.run_dir() + "/config.yaml, or --local-workers N), or start over with --overwrite";
  if (workers == 1 && subdirs > 0 && !top_files)
    throw Error(str("the checkpoints of ", cfg.run_dir(), " were written by ", subdirs, " contributors (", base,
                    "/contributor_*), this run has local_workers = 1"),
                hint);
  if (workers > 1 && top_files && subdirs == 0)
    throw Error(str("the checkpoints of ", cfg.run_dir(), " were written by one contributor (", base,
                    "/step_*.h5), this run has local_workers = ", workers),
                hint);
  if (workers > 1 && subdirs > workers)
    throw Error(str("the checkpoints of ", cfg.run_dir(), " were written by ", subdirs, " contributors, this run has ",
                    "local_workers = ", workers),
                hint);
  if (workers > 1 && subdirs > 0) {
    std::vector<std::string> missing;
    for (int w = 0; w < workers; ++w)
      if (!fs::is_directory(checkpoint_dir(cfg, w), ec)) missing.push_back(checkpoint_dir(cfg, w));
    if (!missing.empty())
      throw Error(str("cannot resume ", cfg.run_dir(), ": the checkpoint director", missing.size() > 1 ? "ies " : "y ",
                      join(missing, ", "), missing.size() > 1 ? " are" : " is", " missing (", subdirs, " of ", workers,
                      " contributors have one)"),
                  "contributors resume together: restore the missing directory (each holds that contributor's own "
                  "state and data position), or start the run over with --overwrite");
  }
}

// For a run that starts at step 0: every contributor's checkpoint directory must be empty
// (or, with --overwrite, is emptied).
void check_fresh_checkpoints(const RunConfig& cfg, const data::Dataset& dataset, bool overwrite) {
  for (int w = 0; w < static_cast<int>(cfg.local_workers); ++w)
    RunCheckpointer(cfg, dataset, checkpoint_dir(cfg, w)).start_fresh(overwrite);
}

}  // namespace

namespace {

// What `pico train` reports at the end, from the run's monitor.
TrainSummary summarize(const std::string& run_dir, std::int64_t steps, bool interrupted, const RunMonitor& monitor,
                       Clock::time_point t0) {
  TrainSummary summary;
  summary.run_dir = run_dir;
  summary.steps = steps;
  summary.interrupted = interrupted;
  summary.tokens = monitor.session_tokens();
  summary.loss = monitor.last_loss();
  summary.val_loss = monitor.last_val_loss();
  summary.seconds = seconds_since(t0);
  return summary;
}

// --comm zmq, in a contributor process: meet the others through the rendezvous directory,
// then train as contributor `rank` with a ZeroMQ communicator.
TrainSummary run_zmq_worker(const RunConfig& cfg, const TrainOptions& options) {
  const int rank = options.worker_rank, workers = static_cast<int>(cfg.local_workers);
  set_log_thread_tag(str("[w", rank, "] "));
  const torch::Device device = resolve_device(cfg.device);
  auto dataset = data::Dataset::open(cfg.data.path, cfg.data.verify);
  comm::ZmqOptions zo;
  zo.key_dir = cfg.run_dir() + "/keys";
  zo.key_name = str("worker-", rank);
  zo.tune_malloc = !malloc_tuned_for_training();  // pico's own tuning (cpu_env.h) is stronger: keep it
  // All workers are on this machine: Unix sockets (CURVE as over TCP) where the path fits,
  // loopback TCP otherwise (ZmqOptions::ipc_dir allows at most 80 characters).
  if (const std::string sock = cfg.run_dir() + "/sock"; sock.size() <= 80) zo.ipc_dir = sock;
  auto node = comm::ZmqNode::create(zo);
  comm::FileRendezvousOptions ro;
  ro.dir = options.rendezvous_dir;
  ro.world_size = workers;
  ro.rank = rank;
  ro.run_id = mix64(std::hash<std::string>{}(cfg.run_dir()));
  ro.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
  const comm::Membership membership = comm::rendezvous_files(*node, ro);
  auto comm = comm::make_zmq_communicator(node, membership);
  // Rank 0 alone cuts metrics.jsonl back on resume (run_worker then makes every process reopen it).
  RunMonitor monitor(cfg, cfg.run_dir() + "/metrics.jsonl", /*append=*/true, 1, rank, /*truncate_on_resume=*/rank == 0);
  std::mutex compute_mu;  // alone in this process
  const auto t0 = Clock::now();
  // Each process saves and resumes its own checkpoints (RUN_DIR/checkpoints/contributor_<rank>);
  // the parent has checked the directories (fresh, or laid out for this many contributors).
  TrainOptions worker_options;
  worker_options.resume = options.resume;
  worker_options.stop_after_step = options.stop_after_step;
  worker_options.worker_rank = rank;
  // Ctrl-C reaches the launcher, which sends each contributor one SIGTERM (and so does the
  // kernel when the launcher dies): they agree on a step, save there and exit 0.
  GracefulStopScope graceful("contributor stops after the step all contributors agree on", {}, SigintMode::kIgnore);
  auto stop = StopAgreement::shared_file(options.rendezvous_dir + "/stop", workers, /*create=*/false);
  const std::int64_t steps = run_worker(cfg, dataset, device, rank, *comm, compute_mu, monitor, worker_options, *stop);
  const bool interrupted = steps < last_step(cfg, options);
  if (rank == 0) monitor.finish(steps, interrupted);
  return summarize(cfg.run_dir(), steps, interrupted, monitor, t0);
}

// --comm zmq, in the parent: one process per contributor (this binary, re-executed on the
// resolved config), waited for; if one fails the others are stopped and its error reported.
void launch_zmq_workers(const RunConfig& cfg, const TrainOptions& options) {
  const int workers = static_cast<int>(cfg.local_workers);
  const std::string rendezvous = cfg.run_dir() + "/rendezvous";
  std::filesystem::remove_all(rendezvous);  // the previous invocation's addresses: ours to replace
  make_dirs(rendezvous);
  const auto stop_board = StopAgreement::shared_file(rendezvous + "/stop", workers, /*create=*/true);
  const std::string config = cfg.run_dir() + "/config.yaml";
  // Each process gets its share of the cores unless the config says otherwise.
  const int threads = cfg.threads > 0 ? static_cast<int>(cfg.threads)
                                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / workers);
  std::vector<pid_t> pids;
  std::mutex pids_mu;
  // The first Ctrl-C or SIGTERM: one SIGTERM to each contributor, which stop together at a
  // step they agree on (stop_agreement.h) and save. A second exits at once; the kernel then
  // sends them SIGTERM again (PR_SET_PDEATHSIG), their second: they exit at once too.
  GracefulStopScope graceful(
      "stopping: each contributor finishes its step and saves a checkpoint (Ctrl-C again to exit at once)", [&] {
        std::lock_guard<std::mutex> lock(pids_mu);
        for (pid_t p : pids) ::kill(p, SIGTERM);
      });
  for (int r = 0; r < workers; ++r) {
    // The argument list is built before fork: only async-signal-safe calls in the child.
    const std::string rank = std::to_string(r), th = str("threads=", threads),
                      stop = std::to_string(options.stop_after_step);
    std::vector<const char*> argv = {"pico",  "train",         "--config",   config.c_str(), "--comm",
                                     "zmq",   "--worker-rank", rank.c_str(), "--rendezvous", rendezvous.c_str(),
                                     "--set", th.c_str()};
    if (options.resume) argv.push_back("--resume");
    if (options.stop_after_step > 0) {
      argv.push_back("--stop-after-step");
      argv.push_back(stop.c_str());
    }
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(str("cannot start contributor process ", r, ": fork failed"), "check the process limit");
    if (pid == 0) {
      // A contributor does not outlive its launcher (killed, even by SIGKILL): the others
      // would wait for it until outer.timeout_s. The checkpoints on disk stay for --resume.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl
      ::execv("/proc/self/exe", const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    std::lock_guard<std::mutex> lock(pids_mu);
    pids.push_back(pid);
    if (stop_requested()) ::kill(pid, SIGTERM);  // the signal came while we were starting them
  }
  int failed_rank = -1, failed_status = 0;
  for (std::size_t done = 0; done < pids.size(); ++done) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    const auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) continue;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && failed_rank < 0) {
      failed_rank = static_cast<int>(it - pids.begin());
      failed_status = status;
      std::lock_guard<std::mutex> lock(pids_mu);
      for (pid_t other : pids)
        if (other != pid) ::kill(other, SIGKILL);  // they would wait for it in a collective
    }
  }
  if (failed_rank >= 0)
    throw Error(str("contributor process ", failed_rank, " ",
                    WIFEXITED(failed_status) ? str("exited with status ", WEXITSTATUS(failed_status))
                                             : str("was killed by signal ", WTERMSIG(failed_status))),
                "its error is printed above (lines tagged [w" + std::to_string(failed_rank) + "])");
}

}  // namespace

TrainSummary run_training(const RunConfig& cfg, const TrainOptions& options_in) {
  cfg.validate();
  set_log_level(parse_log_level(cfg.monitoring.log_level));
  set_threads(cfg.threads);
  if (options_in.comm != "inprocess" && options_in.comm != "zmq")
    throw Error(str("unknown --comm '", options_in.comm, "'"), "use inprocess or zmq");
  if (options_in.worker_rank >= 0) return run_zmq_worker(cfg, options_in);
  warn_if_slow_blas();

  // The dataset first: a missing or damaged dataset is the commonest first-run mistake,
  // and nothing should be written before it is found.
  const torch::Device device = resolve_device(cfg.device);
  auto dataset = data::Dataset::open(cfg.data.path, cfg.data.verify);

  const std::string run_dir = cfg.run_dir();
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  TrainOptions options = options_in;
  if (options.resume && !run_has_checkpoints(cfg)) {
    if (options.resume_required)
      throw Error(
          str("--resume: ", run_dir, " holds no checkpoint to continue from"),
          std::filesystem::exists(metrics_path)
              ? "the run stopped before its first checkpoint: start it over with --overwrite"
              : "start the run without --resume (check checkpointing.run_name and runs_dir if you expected one)");
    log_info("auto_resume: no checkpoint in ", run_dir, " yet; starting at step 0");
  }
  if (std::filesystem::exists(metrics_path) && !options.resume && !options.overwrite)
    throw Error(str("run directory ", run_dir, " already holds a run (", metrics_path, ")"),
                "pass --resume to continue it, --overwrite to start it over, or --set checkpointing.run_name=NEW");
  if (options.resume) check_resume_layout(cfg);
  make_dirs(run_dir);
  const std::string yaml = to_yaml(cfg);
  write_file_atomic(run_dir + "/config.yaml", yaml);
  log_info("resolved config (also in ", run_dir, "/config.yaml):\n", yaml);

  const auto& m = dataset->manifest();
  log_info("dataset ", cfg.data.path, ": ", m.train_tokens(), " train tokens in ", m.train.size(), " shards, ",
           m.val_tokens(), " validation tokens (", m.dataset_hash.substr(0, 12), ")");
  const int workers = static_cast<int>(cfg.local_workers);
  log_info("model: ", cfg.model.num_params() / 1e6, "M parameters on ", device.str(), ", ", torch::get_num_threads(),
           " threads; ", workers, " contributor", workers > 1 ? "s" : "", " (", cfg.outer.algorithm, "), ",
           cfg.data.batch_size * cfg.model.max_seq_len, " tokens per step each");

  if (!options.resume) check_fresh_checkpoints(cfg, *dataset, options.overwrite);
  if (options.comm == "zmq" && workers > 1) {
    // The contributor processes append to metrics.jsonl; on --resume their rank 0 cuts it
    // back to the step they agree to continue from.
    if (!options.resume) MetricsWriter(metrics_path, /*truncate=*/true);
    const auto t0 = Clock::now();
    launch_zmq_workers(cfg, options);
    TrainSummary summary;
    summary.run_dir = run_dir;
    summary.steps = last_step(cfg, options);
    if (stop_requested()) {
      summary.interrupted = true;
      const auto saved = checkpoints::CheckpointDir(checkpoint_dir(cfg, 0)).list();
      if (!saved.empty()) summary.steps = saved.front().first;
    }
    summary.seconds = seconds_since(t0);
    log_info("metrics: ", metrics_path);
    return summary;
  }

  RunMonitor monitor(cfg, metrics_path, options.resume, workers);
  comm::InProcessGroup group(workers);
  auto stop = StopAgreement::in_memory(workers);
  GracefulStopScope graceful("stopping after this step; a checkpoint will be saved (Ctrl-C again to exit at once)");
  std::mutex compute_mu;             // local contributors take turns computing, each with every core
  std::exception_ptr first_failure;  // the root cause; the others fail because of the abort
  std::mutex failure_mu;
  const auto t0 = Clock::now();
  std::int64_t steps = 0;
  if (workers == 1) {
    auto comm = group.communicator(0);
    steps = run_worker(cfg, dataset, device, 0, *comm, compute_mu, monitor, options, *stop);
  } else {
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        try {
          auto comm = group.communicator(w);
          const std::int64_t reached = run_worker(cfg, dataset, device, w, *comm, compute_mu, monitor, options, *stop);
          if (w == 0) steps = reached;  // every contributor stops after the same step
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mu);
          if (!first_failure) {
            first_failure = std::current_exception();
            group.abort(str("contributor ", w, " failed"));
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    if (first_failure) std::rethrow_exception(first_failure);
  }
  const bool interrupted = steps < last_step(cfg, options);
  monitor.finish(steps, interrupted);
  log_info("metrics: ", metrics_path);
  return summarize(run_dir, steps, interrupted, monitor, t0);
}

}  // namespace pico::trainer
