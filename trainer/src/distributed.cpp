// A contributor of a networked DiLoCo run (see pico/trainer/distributed.h).
#include "pico/trainer/distributed.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <thread>

#include "demo_round.h"
#include "outer_round.h"
#include "pico/broker/client.h"
#include "pico/broker/service.h"
#include "pico/comm/address.h"
#include "pico/comm/curve_keys.h"
#include "pico/comm/relay.h"
#include "pico/comm/zmq_communicator.h"
#include "pico/common/blas.h"
#include "pico/common/codec.h"
#include "pico/common/cpu_env.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/interrupt.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/common/strings.h"
#include "pico/optim/diloco.h"
#include "pico/trainer/checkpointing.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/contributor.h"
#include "pico/trainer/metrics.h"
#include "state_blob.h"

namespace pico::trainer {
namespace {

using Clock = std::chrono::steady_clock;
using broker::Message;
using broker::MessageType;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::uint64_t run_hash(const std::string& run_id) {
  const std::string h = sha256_hex(run_id);
  return std::stoull(h.substr(0, 16), nullptr, 16);
}

// The settings a joiner may choose for itself; everything else is the run's.
bool is_local_key(const std::string& key) {
  return key == "data.path" || key == "data.verify" || key == "checkpointing.runs_dir" ||
         key == "checkpointing.run_name" || key == "device" || key == "threads" || key.rfind("monitoring.", 0) == 0;
}

std::string dataset_prepare_command(const data::Dataset& ds) {
  const auto& m = ds.manifest();
  std::string inputs;
  for (const auto& s : m.sources) inputs += " " + s;
  return str("pico data prepare --input", inputs, " --output DIR --vocab-size ", m.vocab_size, " --shards ",
             m.train.size(), " --val-fraction ", m.val_fraction, " --seed ", m.seed,
             " (with the run's tokenizer: --tokenizer tokenizer.model, sha256 ", m.tokenizer_sha256.substr(0, 12),
             "…)");
}

// A member's outer state as a checkpoint holds it (checkpointing.h): OuterRound's θ_g,
// momentum, outer step count and error-feedback residual, and its last unweighted Δ.
class MemberOuterState final : public OuterStateIO {
 public:
  explicit MemberOuterState(OuterRound& round) : round_(round) {}
  optim::NamedTensors outer_state() const override { return round_.state(); }
  void load_outer_state(const optim::NamedTensors& state) override { round_.load_state(state); }
  optim::NamedTensors pseudo_gradient() const override { return round_.pseudo_gradient(); }
  void load_pseudo_gradient(const optim::NamedTensors& delta) override { round_.load_pseudo_gradient(delta); }
  // Every completed round is one outer step, so the outer step count is the round.
  std::int64_t rounds_done() const override { return round_.rounds_done(); }

 private:
  OuterRound& round_;
};

// A DeMo member's outer state as a checkpoint holds it: δ and the step count (demo_round.h).
class MemberDeMoState final : public OuterStateIO {
 public:
  MemberDeMoState(DeMoRound& demo, std::int64_t inner_steps) : demo_(demo), h_(inner_steps) {}
  optim::NamedTensors outer_state() const override { return demo_.state(); }
  void load_outer_state(const optim::NamedTensors& state) override { demo_.load_state(state); }
  optim::NamedTensors pseudo_gradient() const override { return {}; }
  void load_pseudo_gradient(const optim::NamedTensors& delta) override {}
  // Members save at round boundaries: the round is the step count over H.
  std::int64_t rounds_done() const override { return (demo_.step_count() + h_ - 1) / h_; }

 private:
  DeMoRound& demo_;
  std::int64_t h_;
};

class NetworkedMember {
 public:
  NetworkedMember(RunConfig cfg, NetworkOptions net, std::string run_id, std::shared_ptr<data::Dataset> dataset,
                  std::unique_ptr<broker::BrokerClient> client, std::shared_ptr<comm::ZmqNode> node,
                  const std::string& metrics_path, const TrainOptions& options)
      : cfg_(std::move(cfg)),
        net_(std::move(net)),
        run_id_(std::move(run_id)),
        dataset_(std::move(dataset)),
        client_(std::move(client)),
        node_(std::move(node)),
        options_(options),
        metrics_path_(metrics_path),
        metrics_(metrics_path, !options.resume),
        checkpointer_(cfg_, *dataset_) {
    rounds_total_ = (cfg_.training.max_steps + cfg_.outer.inner_steps - 1) / cfg_.outer.inner_steps;
    // The broker retries a round without a member the others could not connect to, and nobody
    // can tell that member its group broke: it would wait out outer.timeout_s. Its resync (the
    // round went on without it) or eviction cancels the collective at once.
    client_->watch_pushes([node = node_, in_round = in_round_, evicted = evicted_](const broker::Message& m) {
      if (m.type == MessageType::kEvicted) evicted->store(true);
      const std::int64_t round = in_round->load();
      if (round == 0) return;
      if (m.type == MessageType::kEvicted) return node->cancel_collective("evicted by the broker");
      if (m.type != MessageType::kResync) return;
      try {
        const auto r = broker::parse<broker::Resync>(m);
        if (r.round >= round)
          node->cancel_collective(str("the broker completed round ", r.round, " without this member"));
      } catch (const broker::ProtocolError&) {
      }
    });
    checkpointer_.set_member_of(run_id_);
    if (!options.resume) checkpointer_.start_fresh(options.overwrite);
  }

  TrainSummary run() {
    join();
    if (options_.resume) {
      try {
        resume();
      } catch (const Error&) {
        // Leave at once rather than hold the run's rounds up until the broker evicts us.
        try {
          client_->request(broker::Leave{run_id_, member_id_});
        } catch (const Error&) {
        }
        throw;
      }
    }
    start_ = Clock::now();
    // --stop-after-step counts this member's steps (with outer.round_seconds a round may hold
    // more or fewer than H); without it the run ends by rounds.
    const bool stops = options_.stop_after_step > 0;
    const std::int64_t stop = stops ? options_.stop_after_step : std::numeric_limits<std::int64_t>::max();
    // Ctrl-C / SIGTERM: finish the step, save, say goodbye to the broker, exit 0 (the run
    // goes on without this member; --resume rejoins it).
    auto leaving = [&] { return stop_requested() || broker_lost_; };
    while (base_round_ < rounds_total_ && !finished_ && step_ < stop && !leaving()) {
      if (needs_snapshot_) fetch_snapshot();
      if (finished_ || leaving()) break;
      // DiLoCo trains its H steps, then meets the others; DeMo meets them first and trains
      // its H steps together with them (demo_round.h).
      const bool round_complete = is_demo() || train_round();
      if (!round_complete) continue;  // resync or rejoin asked for mid-round, or a stop
      outer_round();
    }
    save_checkpoint(/*force=*/true);
    checkpointer_.finish();
    if (broker_lost_)
      throw Error(str("lost the broker of run ", run_id_, ": no connection for ", static_cast<int>(broker_patience_s()),
                      " s (at round ", base_round_, ", step ", step_, "; checkpoint saved in ", cfg_.run_dir(), ")"),
                  "when the run is back (a host restarted with --resume, or the standing broker), rejoin with "
                  "pico train --join CODE --resume");
    const bool interrupted = stop_requested() && base_round_ < rounds_total_ && !finished_;
    if (interrupted || (stops && step_ >= stop && base_round_ < rounds_total_ && !finished_)) {
      // Leave the run (it goes on without this member); --resume rejoins.
      if (!interrupted)
        log_info("stopping after step ", step_, " (--stop-after-step ", stop, "); rejoin with --resume");
      try {
        client_->request(broker::Leave{run_id_, member_id_}, "", std::chrono::seconds(10));
      } catch (const Error& e) {
        log_warn("could not tell the broker this member leaves (it evicts silent members anyway): ", e.what());
      }
      client_->stop_heartbeat();
      TrainSummary s = summary();
      s.interrupted = interrupted;
      progress_.finish(str("stopped: round ", base_round_, "/", rounds_total_, ", ", step_, " steps",
                           interrupted ? " (a checkpoint is saved; rejoin with --resume)" : ""));
      return s;
    }
    // The run is done and this member's checkpoint saved: a broker that is gone by now (its
    // host stopped) loses nothing of it.
    try {
      client_->request(broker::RunFinished{run_id_, member_id_, base_round_, progress()}, "", std::chrono::seconds(30));
      client_->request(broker::Leave{run_id_, member_id_}, "", std::chrono::seconds(10));
    } catch (const Error& e) {
      log_warn(
          "the broker did not acknowledge the end of the run (its host may have stopped already; this "
          "member's checkpoint is saved in ",
          cfg_.run_dir(), "): ", e.what());
    }
    client_->stop_heartbeat();
    const TrainSummary s = summary();
    progress_.finish(str("done: round ", base_round_, "/", rounds_total_, ", ", step_, " steps, ", tokens_,
                         " tokens in ", format_duration(s.seconds), " | loss ", last_loss_,
                         std::isfinite(last_val_) ? str(" | val_loss ", last_val_) : std::string(), " | θ_g ",
                         theta_hash_.substr(0, 12)));
    return s;
  }

  const std::string& theta_hash() const { return theta_hash_; }

 private:
  // How long a member waits for a broker it lost (a host restarting with --resume) before
  // it saves and gives up: as long as a round's collective may take, and a minute more.
  double broker_patience_s() const { return cfg_.outer.timeout_s + 60; }

  TrainSummary summary() const {
    TrainSummary s;
    s.steps = step_;
    s.tokens = tokens_ - resumed_tokens_;
    s.loss = last_loss_;
    s.val_loss = last_val_;
    s.seconds = seconds_since(start_);
    s.run_dir = cfg_.run_dir();
    return s;
  }

  void join() {
    evicted_->store(false);
    const auto r = broker::parse<broker::JoinReply>(
        client_->request(broker::Join{run_id_, dataset_->manifest().dataset_hash, resolve_device(cfg_.device).str(),
                                      node_->endpoint(), token_, relayed_}));
    member_id_ = r.member_id;
    const std::int64_t slot = r.slot, shards = r.num_shards, round = r.round;
    set_log_thread_tag("");
    log_info("joined run ", run_id_, " as member ", member_id_, " (slot ", slot, ", round ", round, ")");
    if (!contributor_) {
      const std::size_t count = static_cast<std::size_t>(std::max<std::int64_t>(shards, slot + 1));
      contributor_ = std::make_unique<Contributor>(cfg_, dataset_, resolve_device(cfg_.device),
                                                   static_cast<std::size_t>(slot), count);
      if (is_demo())
        demo_ = std::make_unique<DeMoRound>(cfg_, *contributor_);
      else
        round_ = std::make_unique<OuterRound>(cfg_, contributor_->model()->named_params());
    }
    needs_snapshot_ = r.needs_snapshot;
    if (!needs_snapshot_) {
      // Round 0: θ_g is the seeded initialization; check ours is the run's.
      const std::string& expected = r.theta0_hash;
      theta_hash_ = current_theta_hash();
      if (theta_hash_ != expected)
        throw Error(
            str("this contributor's initial θ_g (", theta_hash_.substr(0, 12), "…) differs from the run's (",
                expected.substr(0, 12), "…)"),
            "the run's seed and model must give the same initialization everywhere; is this pico build different?");
      base_round_ = 0;
      step_ = 0;
    }
    update_heartbeat();
  }

  // --resume: the inner optimizer, counters and (if the run is still there) θ_g from this
  // member's newest valid checkpoint. join() has run: the contributor exists and the broker
  // has said whether θ_g comes from a snapshot (it does once the run has a round).
  void resume() {
    const auto io = outer_io();
    const auto st = checkpointer_.resume(*contributor_, io.get());
    if (!st) return;  // nothing saved yet: a plain join
    if (!needs_snapshot_ && st->round > 0)
      throw Error(str("this member's checkpoint is of round ", st->round, ", but run ", run_id_, " is at round 0"),
                  "the run was started over since: join it afresh without --resume");
    // A checkpoint saved mid-round (a member stopped by Ctrl-C) holds inner steps the run
    // went on without: the member restarts its round from θ_g, so its count goes back to the
    // round boundary (tokens stay: they were trained).
    step_ = cfg_.outer.round_seconds > 0 ? st->step : st->round * cfg_.outer.inner_steps;
    tokens_ = st->tokens;
    resumed_tokens_ = st->tokens;
    base_round_ = st->round;
    resumed_round_ = st->round;
    resumed_theta_ = current_theta_hash();
    last_saved_step_ = st->step;
    truncate_metrics_after(metrics_path_, st->step, st->round);
    metrics_ = MetricsWriter(metrics_path_, /*truncate=*/false);
    if (!is_demo()) {  // DeMo members save only at round boundaries, where θ is the run's
      torch::NoGradGuard no_grad;
      round_->outer().copy_to(contributor_->model()->named_params());  // the round boundary: θ = θ_g
    }
    theta_hash_ = resumed_theta_;
  }

  // Members save at round boundaries, the only points where their state is a consistent θ_g:
  // at the end of each round in which a multiple of checkpointing.save_every_n_steps falls
  // (and, with `force`, at the end), into RUN_DIR/checkpoints.
  void save_checkpoint(bool force) {
    if (step_ == 0 || needs_snapshot_ || step_ == last_saved_step_) return;
    const std::int64_t every = cfg_.checkpointing.save_every_n_steps;
    const bool due = force || (every > 0 && step_ / every > std::max<std::int64_t>(last_saved_step_, 0) / every);
    if (!due) return;
    TrainState st;
    st.step = step_;
    st.round = base_round_;
    st.tokens = tokens_;
    st.run_id = run_id_;
    checkpointer_.maybe_save(*contributor_, st, outer_io().get(), /*force=*/true);
    last_saved_step_ = step_;
  }

  // The heartbeat's content; sent at once when the base round changed (the broker decides
  // who takes part in the next round from it), else at the next interval.
  void update_heartbeat() {
    broker::Heartbeat hb;
    hb.run_id = run_id_;
    hb.member_id = member_id_;
    if (!needs_snapshot_) hb.base_round = base_round_;
    hb.step = step_;
    hb.tokens_per_s = tok_per_s_;
    hb.progress = progress();
    client_->set_heartbeat(hb, /*send_now=*/!beat_sent_ || hb.base_round != last_beat_base_);
    last_beat_base_ = hb.base_round;
    beat_sent_ = true;
  }

  // What the broker's dashboard plots: the last training loss, and the validation loss of
  // the newest round that has one.
  broker::ProgressReport progress() const {
    broker::ProgressReport p;
    if (std::isfinite(last_loss_)) p.loss = last_loss_;
    if (std::isfinite(last_val_) && val_round_ > 0) p.val_loss = last_val_, p.val_round = val_round_;
    return p;
  }

  // Handles a message the broker pushed. Returns false when training must stop and resync.
  bool handle_push(const Message& m) {
    try {
      switch (m.type) {
        case MessageType::kSnapshotRequest: {
          const auto req = broker::parse<broker::SnapshotRequest>(m);
          upload_snapshot(req.round, static_cast<std::size_t>(req.chunk_bytes));
          return true;
        }
        case MessageType::kResync:
          log_warn("the broker asks for a resync: ", broker::parse<broker::Resync>(m).reason);
          needs_snapshot_ = true;
          update_heartbeat();
          return false;
        case MessageType::kEvicted: {
          const auto ev = broker::parse<broker::Evicted>(m);
          if (ev.replaced)  // joining back would evict the other process, and so on forever
            throw Error(str("this contributor's identity joined run ", run_id_,
                            " again from another process, which now takes part in its place"),
                        "give each process its own identity (--identity NAME); pico does this by itself for "
                        "processes on one machine, so the other one is elsewhere, with a copy of this key");
          if (ev.unreachable)
            throw Error(str("evicted from run ", run_id_, ": ", ev.reason),
                        str("this contributor listens at ", node_->endpoint(),
                            ": make that reachable from the other members (--listen 0.0.0.0 --advertise "
                            "PUBLIC_ADDRESS, a forwarded port), then join again"));
          log_warn("evicted from run ", run_id_, ": ", ev.reason, " — joining again");
          join();
          return !needs_snapshot_;
        }
        case MessageType::kRunFinished:
          log_warn("the run finished (round ", broker::parse<broker::RunFinished>(m).round,
                   ") while this contributor was at round ", base_round_);
          finished_ = true;
          return false;
        default:
          return true;  // acks of fire-and-forget messages, snapshot_ready handled where awaited, stale round_start
      }
    } catch (const broker::ProtocolError& e) {
      log_warn("ignored a malformed ", broker::to_string(m.type), " from the broker: ", e.what());
      return true;
    }
  }

  void upload_snapshot(std::int64_t round, std::size_t chunk_bytes) {
    if (round != base_round_ || needs_snapshot_) {
      log_warn("asked for θ_g of round ", round, " but this contributor holds round ", base_round_);
      return;
    }
    const std::string blob = serialize_state(is_demo() ? demo_->snapshot() : round_->outer().state(), round);
    const std::string sha = sha256_hex(blob);
    const std::int64_t chunks =
        static_cast<std::int64_t>(std::max<std::size_t>(1, (blob.size() + chunk_bytes - 1) / chunk_bytes));
    for (std::int64_t i = 0; i < chunks; ++i) {
      const std::size_t off = static_cast<std::size_t>(i) * chunk_bytes;
      try {
        client_->request(
            broker::SnapshotPut{run_id_, member_id_, round, i, chunks, static_cast<std::int64_t>(blob.size()), sha},
            blob.substr(off, std::min(chunk_bytes, blob.size() - off)));
      } catch (const Error& e) {
        // The broker moved on (a newer round, or it restarted and forgot the upload): it
        // asks again when it needs θ_g. Training goes on either way.
        log_warn("snapshot upload of round ", round, " abandoned: ", e.what());
        return;
      }
    }
    log_info("uploaded θ_g of round ", round, " (", format_bytes(static_cast<double>(blob.size())), ") for joiners");
  }

  void fetch_snapshot() {
    log_info("waiting for a θ_g snapshot from the broker");
    progress_.update("waiting for a θ_g snapshot", true);
    const auto give_up = Clock::now() + std::chrono::duration<double>(2 * cfg_.outer.timeout_s + 60);
    for (;;) {
      if (stop_requested()) return;
      if (Clock::now() > give_up)
        throw Error(str("no θ_g snapshot arrived within ", static_cast<int>(2 * cfg_.outer.timeout_s + 60), " s"),
                    "is the run still going, and its broker up? Join again with `pico train --join CODE`");
      auto m = client_->next_push(std::chrono::milliseconds(500));
      if (!m) continue;
      if (m->type != MessageType::kSnapshotReady) {
        handle_push(*m);
        if (finished_) return;
        continue;
      }
      broker::SnapshotReady ready;
      try {
        ready = broker::parse<broker::SnapshotReady>(*m);
      } catch (const broker::ProtocolError& e) {
        log_warn("ignored a malformed snapshot_ready from the broker: ", e.what());
        continue;
      }
      const std::int64_t round = ready.round;
      const std::string& sha = ready.sha256;
      std::string blob;
      try {
        for (std::int64_t i = 0; i < ready.chunks; ++i)
          blob += client_->request(broker::SnapshotGet{run_id_, member_id_, round, i}).blob;
      } catch (const Error& e) {
        // The run moved on while we downloaded and the broker keeps only its newest
        // snapshot: it announces that one next.
        log_warn("the snapshot of round ", round, " went away while it downloaded (", e.what(),
                 "); waiting for a newer one");
        continue;
      }
      if (sha256_hex(blob) != sha) {
        log_warn("the snapshot of round ", round, " failed its SHA-256 check; waiting for another");
        continue;
      }
      std::int64_t blob_round = -1;
      const auto state = deserialize_state(blob, blob_round);
      if (blob_round != round) throw Error(str("snapshot announced for round ", round, " holds round ", blob_round));
      if (is_demo()) {
        demo_->load_snapshot(state);  // θ and the step count; this member's δ stays
      } else {
        round_->outer().load_state(state);
        torch::NoGradGuard no_grad;
        round_->outer().copy_to(contributor_->model()->named_params());
      }
      base_round_ = round;
      step_ = round * cfg_.outer.inner_steps;
      theta_hash_ = current_theta_hash();
      needs_snapshot_ = false;
      update_heartbeat();
      log_info("θ_g of round ", round, " loaded (", format_bytes(static_cast<double>(blob.size())), ", hash ",
               theta_hash_.substr(0, 12), ")");
      if (resumed_round_ >= 0) {
        if (round == resumed_round_ && theta_hash_ == resumed_theta_)
          log_info("resume: the run is still at round ", round,
                   " and its θ_g is the checkpoint's: this member continues "
                   "exactly where it stopped");
        else
          log_warn("resume: the run moved on from round ", resumed_round_, " (this member's checkpoint) to round ",
                   round,
                   " without it; it continues from the run's θ_g with its own inner-optimizer state, so its "
                   "trajectory is not that of an uninterrupted member");
        resumed_round_ = -1;
      }
      return;
    }
  }

  // A step's metrics.jsonl record (keys are written sorted: the order here is for reading).
  nlohmann::json step_record(std::int64_t step, std::int64_t round, std::int64_t tokens, const StepResult& r) const {
    return {{"step", step},
            {"contributor", member_id_},
            {"round", round},
            {"tokens", tokens},
            {"loss", r.loss},
            {"lr", r.lr},
            {"grad_norm", r.grad_norm},
            {"tok_per_s", tok_per_s_},
            {"bytes_sent", bytes_sent_},
            {"bytes_received", bytes_received_},
            {"elapsed_s", seconds_since(start_)}};
  }

  // H inner steps (or round_seconds of them) from θ_g of base_round_. False if interrupted.
  bool train_round() {
    const auto t0 = Clock::now();
    round_tokens_ = 0;
    round_steps_ = 0;
    const std::int64_t h = cfg_.outer.inner_steps;
    const std::int64_t first = base_round_ * h;
    for (std::int64_t i = 0;; ++i) {
      const bool by_time = cfg_.outer.round_seconds > 0;
      if (by_time ? (i > 0 && seconds_since(t0) >= cfg_.outer.round_seconds) : i >= h) break;
      // The schedule advances by rounds: with a time budget, steps beyond H reuse the last lr.
      const std::int64_t sched_step = first + std::min(i, h - 1);
      const auto ts = Clock::now();
      const StepResult r = contributor_->train_step(sched_step);
      ++step_;
      ++round_steps_;
      round_tokens_ += r.tokens;
      tokens_ += r.tokens;
      last_loss_ = r.loss;
      tok_per_s_ = static_cast<double>(r.tokens) / std::max(1e-9, seconds_since(ts));
      if (step_ % cfg_.monitoring.log_every_n_steps == 0)
        metrics_.write(step_record(step_, base_round_ + 1, tokens_, r));
      progress_.update(str("round ", base_round_ + 1, "/", rounds_total_, " step ", step_, " | loss ",
                           std::round(r.loss * 1000) / 1000, " | ", static_cast<int>(tok_per_s_), " tok/s | sent ",
                           format_bytes(static_cast<double>(bytes_sent_))));
      update_heartbeat();
      if (stop_requested()) return false;  // the step is done: run() saves and leaves
      while (auto m = client_->next_push(std::chrono::milliseconds(0)))
        if (!handle_push(*m)) return false;
    }
    compute_s_ = seconds_since(t0);
    return true;
  }

  void outer_round() {
    const std::int64_t round = base_round_ + 1;
    // A DeMo member is ready before its steps: it reports the tokens it will train (the
    // ledger credits them only if the round completes) and no Δ (its updates are checked
    // as they are applied, every step).
    const auto [norm, finite] =
        is_demo() ? std::pair<double, bool>{0.0, true} : round_->delta_norm(contributor_->model()->named_params());
    if (is_demo()) {
      round_steps_ = demo_round_steps(round);
      round_tokens_ = round_steps_ * contributor_->tokens_per_step();
      // compute_s_ is the last round's: a DeMo round's compute is known only after it
    }
    broker::Ready ready;
    ready.run_id = run_id_;
    ready.member_id = member_id_;
    ready.round = round;
    ready.base_round = base_round_;
    ready.tokens = round_tokens_;
    ready.inner_steps = round_steps_;
    ready.compute_seconds = compute_s_;
    ready.delta_norm = finite ? norm : 0.0;
    ready.finite = finite;
    ready.progress = progress();
    ready.last_result = last_result_;  // in case a restarted broker lost it
    Message r = client_->request(ready);
    // The broker has not yet committed the round this contributor finished (it restarted
    // and is still collecting reports): ask again shortly.
    while (r.type == MessageType::kAck && !finished_) {
      const auto ack = broker::parse<broker::ReadyReply>(r);
      if (!ack.retry_after_s) break;
      std::this_thread::sleep_for(std::chrono::duration<double>(*ack.retry_after_s));
      r = client_->request(ready);
    }
    if (r.type == MessageType::kResync) {
      log_warn("round ", round, ": ", broker::parse<broker::Resync>(r).reason);
      needs_snapshot_ = true;
      update_heartbeat();
      return;
    }
    progress_.update(str("round ", round, "/", rounds_total_, ": waiting for the other contributors"), true);
    std::int64_t last_attempt = 0;
    for (;;) {
      if (stop_requested()) return;  // run() leaves the run; the broker retries without us
      if (client_->seconds_without_broker() > broker_patience_s()) {
        broker_lost_ = true;
        return;
      }
      auto m = client_->next_push(std::chrono::milliseconds(500));
      if (!m) continue;
      if (m->type != MessageType::kRoundStart) {
        if (!handle_push(*m)) return;
        continue;
      }
      broker::RoundStart start;
      try {
        start = broker::parse<broker::RoundStart>(*m);
      } catch (const broker::ProtocolError& e) {
        log_warn("ignored a malformed round_start from the broker: ", e.what());
        continue;
      }
      if (start.round != round || start.attempt <= last_attempt) continue;  // stale
      last_attempt = start.attempt;
      if (is_demo() ? run_demo_round(start) : run_collective(start)) return;
      // failed: wait for the broker's retry (round_start) or a resync
    }
  }

  // The communicator of one attempt of a round, with the members the broker named; returns
  // the group and sets this member's weight in it.
  comm::Membership open_round_comm(const broker::RoundStart& start, double& my_weight) {
    comm::Membership ms;
    ms.run_id = run_hash(run_id_);
    ms.epoch = static_cast<std::uint32_t>((start.round << 8) | (start.attempt & 0xff));
    my_weight = 0;
    for (const auto& m : start.members) {
      comm::Member mem;
      mem.rank = m.rank;
      mem.endpoint = m.endpoint;
      mem.public_key = m.public_key;
      if (m.member_id == member_id_) {
        ms.rank = mem.rank;
        my_weight = m.weight;
      }
      ms.members.push_back(mem);
    }
    comm_.reset();  // one communicator per node at a time
    comm_ = comm::make_zmq_communicator(node_, ms);
    in_round_->store(start.round);
    return ms;
  }

  // Steps in DeMo round `round`: H, fewer in a last round that ends at max_steps.
  std::int64_t demo_round_steps(std::int64_t round) const {
    const std::int64_t h = cfg_.outer.inner_steps;
    return std::min(h, cfg_.training.max_steps - (round - 1) * h);
  }

  // The outer state a checkpoint holds, of this member's algorithm.
  std::unique_ptr<OuterStateIO> outer_io() {
    if (is_demo()) return std::make_unique<MemberDeMoState>(*demo_, cfg_.outer.inner_steps);
    return std::make_unique<MemberOuterState>(*round_);
  }

  std::string current_theta_hash() const { return is_demo() ? demo_->theta_hash() : round_->outer().state_hash(); }
  bool is_demo() const { return cfg_.outer.algorithm == "demo"; }

  // One attempt of a DeMo round (demo_round.h): its steps with the members the broker named.
  bool run_demo_round(const broker::RoundStart& start) {
    const std::int64_t round = start.round;
    double my_weight = 0;
    const comm::Membership ms = open_round_comm(start, my_weight);
    const std::int64_t first = (round - 1) * cfg_.outer.inner_steps;
    const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg_.outer.timeout_s * 1000));
    std::vector<nlohmann::json> records;  // written once the round has completed
    std::int64_t tokens = tokens_;
    const auto t0 = Clock::now();
    auto on_step = [&](std::int64_t i, const StepResult& r) {
      const std::int64_t step = first + i + 1;
      tokens += r.tokens;
      last_loss_ = r.loss;
      tok_per_s_ = static_cast<double>(tokens - tokens_) / std::max(1e-9, seconds_since(t0));
      if (step % cfg_.monitoring.log_every_n_steps == 0) records.push_back(step_record(step, round, tokens, r));
      progress_.update(str("round ", round, "/", rounds_total_, " step ", step, " | loss ",
                           std::round(r.loss * 1000) / 1000, " | ", static_cast<int>(tok_per_s_), " tok/s"));
    };
    const DeMoRoundOutcome out =
        demo_->run(*comm_, round, first, demo_round_steps(round), timeout, compute_mu_, on_step);
    bytes_sent_ += out.report.bytes_sent;
    bytes_received_ += out.report.bytes_received;
    if (out.report.theta_hash.empty()) return attempt_failed(start, out);  // θ and δ are as at the round's start
    for (auto& rec : records) {                                            // the bytes as of the round's end
      rec["bytes_sent"] = bytes_sent_;
      rec["bytes_received"] = bytes_received_;
      metrics_.write(rec);
    }
    step_ = first + static_cast<std::int64_t>(out.steps.size());
    tokens_ = tokens;
    compute_s_ = out.compute_s;
    return finish_round(start, ms, out);
  }

  // One attempt of the round (outer_round.h) with the members the broker named.
  bool run_collective(const broker::RoundStart& start) {
    double my_weight = 0;
    const comm::Membership ms = open_round_comm(start, my_weight);
    const std::int64_t round = start.round;
    RoundPlan plan;
    plan.round = round;
    plan.tokens = static_cast<double>(round_tokens_);
    plan.weight_multiplier = my_weight;
    plan.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg_.outer.timeout_s * 1000));
    const RoundOutcome out = round_->run(*comm_, plan, contributor_->model()->named_params(), compute_mu_);
    const RoundReport& rep = out.report;
    bytes_sent_ += rep.bytes_sent;
    bytes_received_ += rep.bytes_received;
    if (rep.theta_hash.empty()) return attempt_failed(start, out);  // θ_g, Δ and the residual are as they were
    return finish_round(start, ms, out);
  }

  // An attempt whose collectives failed before θ stepped: the broker hears it and retries
  // the round (with the members still there).
  // It names the neighbours it could not connect to at all, so that the broker can retry
  // without them at once.
  bool attempt_failed(const broker::RoundStart& start, const RoundOutcome& out) {
    in_round_->store(0);
    std::vector<std::int64_t> unreachable;
    for (int rank : comm_->unreachable())
      for (const auto& m : start.members)
        if (m.rank == rank) unreachable.push_back(m.member_id);
    comm_.reset();
    log_warn("round ", start.round, " attempt ", start.attempt, " failed: ", out.error);
    if (evicted_->load()) return false;  // no longer a member: the eviction (queued) says why
    client_->request(broker::RoundResult{run_id_, member_id_, start.round, start.attempt, false, "",
                                         static_cast<std::int64_t>(out.report.bytes_sent), out.error, unreachable});
    return false;
  }

  // A round that stepped θ (ok, or only its hash comparison failed): report it to the broker,
  // record it, evaluate and checkpoint when due.
  bool finish_round(const broker::RoundStart& start, const comm::Membership& ms, const RoundOutcome& out) {
    in_round_->store(0);
    const std::int64_t round = start.round, attempt = start.attempt;
    const RoundReport& rep = out.report;
    if (!out.ok) log_warn("round ", round, ": θ stepped but ", out.error, "; the broker compares the hashes");
    const auto& disagreeing = out.vote.disagreeing;
    const bool minority = std::find(disagreeing.begin(), disagreeing.end(), ms.rank) != disagreeing.end();
    if (minority)
      log_error("round ", round, ": this member's θ_g (", rep.theta_hash.substr(0, 12),
                "…) differs from the majority's (", out.vote.majority.substr(0, 12),
                "…); the broker will resync it from a snapshot");
    theta_hash_ = rep.theta_hash;
    base_round_ = round;
    last_result_ = broker::RoundResult{
        run_id_, member_id_, round, attempt, true, theta_hash_, static_cast<std::int64_t>(rep.bytes_sent), "", {}};
    client_->request(*last_result_);
    nlohmann::json rec = {{"round", round},
                          {"attempt", attempt},
                          {"contributor", member_id_},
                          {"contributors", ms.world_size()},
                          {"pseudo_grad_norm", rep.pseudo_grad_norm},
                          {"outer_step_s", rep.outer_step_s},
                          {"comm_s", rep.comm_s},
                          {"round_bytes_sent", rep.bytes_sent},
                          {"round_bytes_received", rep.bytes_received},
                          {"round_tokens", static_cast<std::int64_t>(round_tokens_)},
                          {"theta_hash", theta_hash_},
                          {"contributors_in_sync", out.ok && disagreeing.empty()},
                          {"elapsed_s", seconds_since(start_)}};
    if (is_demo()) rec.erase("pseudo_grad_norm");  // DeMo has none: its updates are sign steps
    const std::int64_t eval_every = cfg_.evaluation.every_n_steps;
    if (round == rounds_total_ ||
        (eval_every > 0 && round * cfg_.outer.inner_steps % eval_every < cfg_.outer.inner_steps)) {
      last_val_ = contributor_->evaluate();
      val_round_ = round;
      if (std::isfinite(last_val_)) rec["val_loss"] = last_val_;
    }
    metrics_.write(rec);
    log_info("round ", round, " done with ", ms.world_size(), " contributors: θ_g ", theta_hash_.substr(0, 12), ", ",
             format_bytes(static_cast<double>(rep.bytes_sent)), " sent in ", format_duration(rep.comm_s),
             std::isfinite(last_val_) ? str(", val_loss ", last_val_) : std::string());
    update_heartbeat();
    save_checkpoint(/*force=*/false);
    return true;
  }

 public:
  std::string token_;
  bool relayed_ = false;
  // The round whose collective runs now (0: none), for the broker client's thread.
  std::shared_ptr<std::atomic<std::int64_t>> in_round_ = std::make_shared<std::atomic<std::int64_t>>(0);
  // The broker's eviction arrived (set on the client's thread; reset when joining again).
  std::shared_ptr<std::atomic<bool>> evicted_ = std::make_shared<std::atomic<bool>>(
      false);  // peers reach it through the broker's relay (told to the broker when joining)

 private:
  RunConfig cfg_;
  NetworkOptions net_;
  std::string run_id_;
  std::shared_ptr<data::Dataset> dataset_;
  std::unique_ptr<broker::BrokerClient> client_;
  std::shared_ptr<comm::ZmqNode> node_;
  std::unique_ptr<comm::ZmqCommunicator> comm_;
  TrainOptions options_;
  std::string metrics_path_;
  MetricsWriter metrics_;
  RunCheckpointer checkpointer_;
  std::int64_t last_saved_step_ = -1;
  std::int64_t resumed_round_ = -1;             // the round of the checkpoint resumed from, until θ_g is fetched
  std::int64_t resumed_tokens_ = 0;             // tokens of the checkpoint resumed from (trained before this process)
  bool broker_lost_ = false;                    // no connection to the broker for broker_patience_s()
  std::optional<std::int64_t> last_beat_base_;  // the base round the last heartbeat announced
  bool beat_sent_ = false;                      // whether any heartbeat content was set yet
  std::string resumed_theta_;
  std::unique_ptr<Contributor> contributor_;
  std::unique_ptr<OuterRound> round_;  // DiLoCo: θ_g, the outer optimizer and the round (outer_round.h)
  std::unique_ptr<DeMoRound> demo_;    // DeMo: δ and the round's steps (demo_round.h)
  std::mutex compute_mu_;              // the model's memory (alone in this process)
  std::int64_t member_id_ = -1;
  std::int64_t base_round_ = 0, rounds_total_ = 0;
  bool needs_snapshot_ = false;
  std::optional<broker::RoundResult> last_result_;  // this member's report of its last completed round
  bool finished_ = false;
  std::int64_t step_ = 0, tokens_ = 0, round_tokens_ = 0, round_steps_ = 0;
  double compute_s_ = 0, tok_per_s_ = 0;
  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  double last_loss_ = std::nan(""), last_val_ = std::nan("");
  std::int64_t val_round_ = 0;  // the round whose θ_g last_val_ was measured on
  std::string theta_hash_;
  Clock::time_point start_ = Clock::now();
  ProgressLine progress_;
};

std::unique_ptr<broker::BrokerClient> make_client(const std::string& endpoint, const std::string& broker_key,
                                                  const comm::CurveKeyPair& keys) {
  broker::BrokerClientOptions o;
  o.endpoint = endpoint;
  o.broker_public_key = broker_key;
  o.public_key = keys.public_key;
  o.secret_key = keys.secret_key;
  return std::make_unique<broker::BrokerClient>(o);
}

// This process's identity for the run, held until it ends: another pico process on this
// machine that uses the same one (a host and a joiner in two shells) gets NAME-2 unless the
// user named it (then it is refused). Sets net.identity to the one leased.
comm::IdentityLease lease_identity(NetworkOptions& net) {
  const std::string key_dir = net.key_dir.empty() ? comm::curve_default_key_dir() : net.key_dir;
  auto lease = comm::lease_identity(key_dir, net.identity, net.identity_given);
  if (lease.name() != net.identity)
    log_info("identity '", net.identity,
             "' is in use by another pico process on this machine: this one takes part as '", lease.name(),
             "' (choose with --identity)");
  net.identity = lease.name();
  return lease;
}

// The peer socket, listening on net.listen_host. Others dial it at net.advertise_host if set,
// else (listening on every interface) at `seen_from`, the address the broker sees this
// process come from; the broker's dial-back tells whether that works (behind a NAT it does not).
std::shared_ptr<comm::ZmqNode> make_node(const NetworkOptions& net, const std::string& seen_from) {
  comm::ZmqOptions o;
  o.bind_host = net.listen_host;
  o.advertise_host = net.advertise_host;
  if (o.advertise_host.empty() && comm::is_wildcard_host(net.listen_host))
    o.advertise_host = seen_from.empty() ? comm::advertise_host_for(net.listen_host) : seen_from;
  o.key_dir = net.key_dir;
  o.key_name = net.identity;
  o.tune_malloc = !malloc_tuned_for_training();  // pico's own tuning (cpu_env.h) is stronger: keep it
  return comm::ZmqNode::create(o);
}

// A member behind a NAT cannot be dialed: the broker sees it come from an address that is
// none of this machine's (its router's). Peers then reach it through the broker's relay
// (comm/relay.h: a tunnel this member dials, end-to-end encrypted between members), unless
// the user said where it is reached (--advertise) or chose otherwise (--relay).
std::unique_ptr<comm::RelayTunnel> reach_through_relay_if_needed(const NetworkOptions& net, comm::ZmqNode& node,
                                                                 const std::string& seen_from, const std::string& relay,
                                                                 const std::string& relay_key,
                                                                 const comm::CurveKeyPair& keys) {
  if (net.relay == "never") return nullptr;
  if (net.relay == "auto") {
    if (!net.advertise_host.empty() || seen_from.empty()) return nullptr;
    const auto own = comm::local_ipv4_addresses();
    if (std::find(own.begin(), own.end(), seen_from) != own.end()) return nullptr;
    log_info("the broker sees this machine as ", seen_from, ", which is none of its addresses: it is behind a NAT");
  }
  if (relay.empty()) {
    if (net.relay == "always")
      throw Error("--relay always, but the broker offers no relay", "leave --relay out, or use a broker that relays");
    log_warn("the broker offers no relay: peers will not be able to connect to this member at ", node.endpoint(),
             " (forward a port and pass --advertise PUBLIC_ADDRESS)");
    return nullptr;
  }
  auto tunnel = std::make_unique<comm::RelayTunnel>(relay, relay_key, keys, node.local_endpoint());
  node.reached_through(tunnel->endpoint());
  log_info("peers reach this member through the broker's relay at ", tunnel->endpoint(),
           " (it carries the members' end-to-end encrypted stream)");
  return tunnel;
}

void prepare_run_dir(const RunConfig& cfg, const TrainOptions& options) {
  const std::string metrics_path = cfg.run_dir() + "/metrics.jsonl";
  if (options.resume) {
    // A member resuming: its checkpoints, metrics and config stay; the config is the run's.
    make_dirs(cfg.run_dir());
    write_file_atomic(cfg.run_dir() + "/config.yaml", to_yaml(cfg));
    return;
  }
  if (std::filesystem::exists(metrics_path) && !options.overwrite)
    throw Error(str("run directory ", cfg.run_dir(), " already holds a run (", metrics_path, ")"),
                "pass --overwrite to start it over, or --set checkpointing.run_name=NEW");
  make_dirs(cfg.run_dir());
  if (options.overwrite) {
    // Starting over: the embedded broker's state and snapshots belong to the old run.
    for (const char* name : {"broker.db", "broker.db-wal", "broker.db-shm", "join_code.txt"})
      std::filesystem::remove(cfg.run_dir() + "/" + name);
    std::filesystem::remove_all(cfg.run_dir() + "/snapshots");
  }
  write_file_atomic(cfg.run_dir() + "/config.yaml", to_yaml(cfg));
}

// --resume of a member, before it joins (joining would make it a member of the run): the
// newest checkpoint in its run directory must be one of `run_id`'s. RunCheckpointer::resume
// checks every file it loads again.
void check_member_checkpoints(const RunConfig& cfg, const std::string& run_id) {
  const checkpoints::CheckpointDir dir(cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir,
                                       cfg.checkpointing.keep_latest_k);
  const auto files = dir.list();
  if (files.empty()) {
    log_warn("resume: no checkpoint in ", dir.dir(), "; joining as a new member");
    return;
  }
  const std::string path = dir.path_of(files.front().second);
  checkpoints::CheckpointData d;
  try {
    d = checkpoints::read_checkpoint(path,
                                     {{"/model", "/optim", "/pseudo_gradient", "/learning_dynamics", "/tokenizer"}});
  } catch (const checkpoints::CorruptCheckpoint&) {
    return;  // resume() reports it and falls back to an older one
  }
  const auto it = d.attrs.find("/train_state");
  const std::string id = it != d.attrs.end() && it->second.count("run_id") ? d.attr_string("/train_state", "run_id")
                                                                           : std::string("(none: a local run)");
  if (id != run_id)
    throw Error(str("checkpoint ", path, " belongs to run ", id, ", this contributor is joining run ", run_id),
                "resume a member with the join code of the run it was part of, or join this run afresh without "
                "--resume (another --set checkpointing.run_name keeps the old checkpoints)");
}

}  // namespace

TrainSummary run_networked(const RunConfig& cfg, const NetworkOptions& net_in, const TrainOptions& options_in) {
  NetworkOptions net = net_in;
  cfg.validate();
  if (cfg.outer.algorithm != "diloco" && cfg.outer.algorithm != "demo")
    throw Error(
        str("a networked run needs outer.algorithm: diloco or demo (this config has ", cfg.outer.algorithm, ")"),
        "ddp exchanges gradients every step with a fixed group; use --local-workers to simulate it");
  if (cfg.outer.algorithm == "demo" && cfg.outer.round_seconds > 0)
    throw Error("outer.round_seconds is for DiLoCo runs: a DeMo round is outer.inner_steps steps taken together",
                "remove outer.round_seconds, or set outer.algorithm: diloco");
  set_log_level(parse_log_level(cfg.monitoring.log_level));
  warn_if_slow_blas();
  torch::set_num_threads(cfg.threads > 0 ? static_cast<int>(cfg.threads)
                                         : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  // The dataset first: nothing is written, and no broker started, for a run that cannot train.
  auto dataset = data::Dataset::open(cfg.data.path, cfg.data.verify);
  const std::string run_dir = cfg.run_dir();
  const bool embedded_broker = net.broker.empty();
  TrainOptions options = options_in;
  std::optional<broker::JoinCode> previous_code;  // the code this host printed before it stopped
  if (options.resume) {
    // A host resumes its embedded broker's state (RUN_DIR/broker.db: members, rounds, ledger,
    // snapshots) on the same port, so the join code members hold stays valid.
    const bool previous =
        embedded_broker ? std::filesystem::exists(run_dir + "/broker.db")
                        : !checkpoints::CheckpointDir(run_dir + "/" + cfg.checkpointing.checkpoints_dir).list().empty();
    if (!previous) {
      if (options.resume_required)
        throw Error(str("--resume: ", run_dir, " holds no networked run to continue (no ",
                        embedded_broker ? "broker.db" : "checkpoint", ")"),
                    "start the run without --resume (check checkpointing.run_name and runs_dir if you expected one)");
      options.resume = false;  // auto_resume: nothing there yet, a new run
    } else if (embedded_broker && std::filesystem::exists(run_dir + "/join_code.txt")) {
      previous_code = broker::parse_join_code(trim(read_file(run_dir + "/join_code.txt")));
    }
  }
  prepare_run_dir(cfg, options);
  log_info("resolved config (also in ", run_dir, "/config.yaml):\n", to_yaml(cfg));
  const auto identity = lease_identity(net);
  const auto& keys = identity.keys();

  std::unique_ptr<broker::BrokerService> embedded;
  broker::JoinCode code;  // host, port and key of the broker; the run id and token below
  if (embedded_broker) {
    broker::ServiceOptions so;
    const int port = net.broker_port != 0 ? net.broker_port : previous_code ? previous_code->port : 0;
    so.listen = str("tcp://", net.listen_host, ":", port);
    so.state_path = run_dir + "/broker.db";
    so.advertise_host = net.advertise_host;
    so.http = net.broker_http;
    so.key_dir = net.key_dir.empty() ? comm::curve_default_key_dir() : net.key_dir;
    so.key_name = "broker";
    so.core.member_timeout_s = net.member_timeout_s;
    // A DiLoCo round's results come one collective after round_start; a DeMo round's after its
    // H steps, each of whose all-gathers may take up to outer.timeout_s.
    so.core.result_timeout_s =
        cfg.outer.timeout_s * (cfg.outer.algorithm == "demo" ? static_cast<double>(cfg.outer.inner_steps) : 1.0) + 60;
    try {
      embedded = std::make_unique<broker::BrokerService>(so);
    } catch (const Error& e) {
      if (!previous_code) throw;
      throw Error(str("cannot resume the run's broker on port ", port, " (the port of its join code): ", e.what()),
                  "another process holds the port: stop it, or pass --broker-port to use another (members then need "
                  "the new join code)");
    }
    embedded->start_background();
    const std::string& ep = embedded->endpoint();
    code.host = net.advertise_host.empty() ? comm::advertise_host_for(net.listen_host) : net.advertise_host;
    code.port = std::stoi(ep.substr(ep.rfind(':') + 1));
    code.broker_key = embedded->public_key();
  } else if (net.broker.rfind("pico://", 0) == 0) {
    code = broker::parse_join_code(net.broker, /*allow_broker_code=*/true);
  } else {
    // tcp://HOST:PORT and --broker-key
    const std::string rest = net.broker.rfind("tcp://", 0) == 0 ? net.broker.substr(6) : net.broker;
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos)
      throw Error(str("--broker ", net.broker, " is neither a broker code nor tcp://HOST:PORT"),
                  "pass the broker code `pico broker` printed (pico://HOST:PORT/?key=…)");
    code.host = rest.substr(0, colon);
    code.port = std::atoi(rest.substr(colon + 1).c_str());
    if (net.broker_key.empty())
      throw Error(str("--broker ", net.broker, " needs the broker's public key"),
                  "pass the broker code `pico broker` printed (it holds the key), or --broker-key HEX");
    code.broker_key = comm::curve_key_from_text(net.broker_key, "--broker-key");
  }
  const std::string run_id = cfg.checkpointing.run_name;
  code.run_id = run_id;
  auto client = make_client(code.endpoint(), code.broker_key, keys);
  std::string token;
  if (net.is_private) {
    if (previous_code && !previous_code->token.empty()) {
      token = previous_code->token;  // the members' codes hold it; the broker stored its hash
    } else {
      std::uint8_t raw[16];
      std::ifstream("/dev/urandom", std::ios::binary).read(reinterpret_cast<char*>(raw), sizeof raw);
      static const char* kHex = "0123456789abcdef";
      for (auto b : raw) token += {kHex[b >> 4], kHex[b & 15]};
    }
  }
  std::string theta0;
  std::int64_t params = 0;
  {
    models::PicoDecoder init(cfg.model, static_cast<std::uint64_t>(cfg.seed));
    const optim::DiLoCo outer(init->named_params(), {cfg.outer.lr, cfg.outer.momentum, cfg.outer.nesterov});
    theta0 = cfg.outer.algorithm == "demo" ? demo_theta_hash(init->named_params(), 0) : outer.state_hash();
    params = outer.numel();
  }
  broker::CreateRun create;
  create.run_id = run_id;
  create.config_yaml = to_yaml(cfg);
  create.dataset_hash = dataset->manifest().dataset_hash;
  create.num_shards = static_cast<std::int64_t>(dataset->num_train_shards());
  create.is_private = net.is_private;
  create.min_members = cfg.outer.min_contributors;
  create.token_sha256 = token.empty() ? "" : sha256_hex(token);
  create.theta0_hash = theta0;
  create.allow = net.allow_keys;
  create.allow.push_back(keys.public_key);
  create.prepare_command = dataset_prepare_command(*dataset);
  create.algorithm =
      cfg.outer.algorithm == "demo"
          ? str("demo H=", cfg.outer.inner_steps, " top-", cfg.outer.demo_compression_topk, " ",
                cfg.outer.demo_value_dtype)
          : str("diloco ",
                cfg.outer.round_seconds > 0 ? str(cfg.outer.round_seconds, " s") : str("H=", cfg.outer.inner_steps),
                " ", cfg.outer.compression);
  create.model_params = params;
  const auto created = broker::parse<broker::CreateRunReply>(client->request(create));
  if (created.status == broker::RunStatus::kFinished)
    throw Error(str("run ", run_id, " already finished (round ", created.round, "): there is nothing to resume"),
                "start a new run with --overwrite, or another --set checkpointing.run_name=NEW");
  if (options.resume && embedded_broker)
    log_info("resuming run ", run_id, " at round ", created.round, " with its broker's state from ", run_dir,
             "/broker.db");
  code.token = token;
  const std::string join = broker::format_join_code(code);
  std::cout << "join code: " << join << std::endl;
  log_info("others join with: pico train --join '", join, "'");
  if (code.host == "127.0.0.1" || code.host == "localhost" || code.host == "::1")
    log_warn("this join code names ", code.host,
             ": only processes on this machine can use it. For other machines, "
             "listen on an address they can reach: --listen 0.0.0.0 --advertise THIS_MACHINES_ADDRESS");
  write_file_atomic(run_dir + "/join_code.txt", join + "\n", 0600);

  auto node = make_node(net, created.seen_from);
  // The host of an embedded broker is where the relay is: only a run on a standing broker may need it.
  const auto tunnel = embedded_broker ? nullptr
                                      : reach_through_relay_if_needed(net, *node, created.seen_from, created.relay,
                                                                      code.broker_key, keys);
  NetworkedMember member(cfg, net, run_id, dataset, std::move(client), node, run_dir + "/metrics.jsonl", options);
  member.token_ = token;
  member.relayed_ = tunnel != nullptr;
  GracefulStopScope graceful(embedded_broker
                                 ? "stopping after this step: a checkpoint is saved and the run pauses with its "
                                   "broker (Ctrl-C again to exit at once)"
                                 : "stopping after this step: a checkpoint is saved and this member leaves the "
                                   "run (Ctrl-C again to exit at once)");
  TrainSummary s = member.run();
  if (embedded) {
    // The other members may still be saving their last checkpoint: keep the broker until they
    // have said they are done (or left, or were evicted for silence), at most a few minutes.
    const auto patience = std::chrono::seconds(static_cast<std::int64_t>(net.member_timeout_s) + 120);
    const auto until = Clock::now() + patience;
    bool said = false;
    while (!s.interrupted && Clock::now() < until) {
      const std::size_t left = embedded->active_members(run_id);
      if (left == 0) break;
      if (!said) log_info("waiting for ", left, " member(s) to finish before the broker stops");
      said = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    // Let the other members' last messages reach the broker before it goes away with us.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    embedded->stop();
  }
  if (s.interrupted)
    log_info("stopped; continue the run (its broker, members and ledger) with: pico train --config … --resume",
             embedded_broker ? "" : " --broker CODE");
  return s;
}

TrainSummary join_networked(const std::string& join_code, const std::vector<std::string>& overrides,
                            const NetworkOptions& net_in, const TrainOptions& join_options) {
  NetworkOptions net = net_in;
  const auto code = broker::parse_join_code(join_code);
  for (const auto& o : overrides) {
    const std::string key = trim(o.substr(0, o.find('=')));
    if (!is_local_key(key))
      throw Error(str("--set ", key, " cannot be changed when joining: it is one of the run's shared settings"),
                  "only data.path, data.verify, checkpointing.runs_dir, checkpointing.run_name, device, threads and "
                  "monitoring.* are yours to choose");
  }
  const auto identity = lease_identity(net);
  const auto& keys = identity.keys();
  auto client = make_client(code.endpoint(), code.broker_key, keys);
  const auto info =
      broker::parse<broker::RunInfoReply>(client->request(broker::RunInfo{code.run_id}, "", std::chrono::seconds(30)));
  RunConfig cfg = parse_run_config(info.config_yaml, "the run's config", overrides);
  const bool named = std::any_of(overrides.begin(), overrides.end(), [](const std::string& o) {
    return trim(o.substr(0, o.find('='))) == "checkpointing.run_name";
  });
  if (!named) cfg.checkpointing.run_name = str(code.run_id, "-", net.identity);
  set_log_level(parse_log_level(cfg.monitoring.log_level));
  warn_if_slow_blas();
  torch::set_num_threads(cfg.threads > 0 ? static_cast<int>(cfg.threads)
                                         : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  auto dataset = data::Dataset::open(cfg.data.path, cfg.data.verify);
  const std::string& want = info.dataset_hash;
  if (dataset->manifest().dataset_hash != want) {
    const std::string& how = info.prepare_command;
    throw Error(str("the dataset at ", cfg.data.path, " (", dataset->manifest().dataset_hash.substr(0, 12),
                    "…) is not the one run ", code.run_id, " trains on (", want.substr(0, 12), "…)"),
                str(how.empty() ? "prepare the run's dataset" : "prepare it with: " + how,
                    ", then join with --set data.path=DIR"));
  }
  TrainOptions options = join_options;
  // A joiner keeps to a run directory of its own (RUN-IDENTITY unless --set
  // checkpointing.run_name): never the host's runs/RUN on the same machine. What is already
  // there is continued (--resume, or the run's checkpointing.auto_resume) or, only with
  // --overwrite, started over; otherwise the joiner refuses rather than delete it.
  const bool has_member_dir =
      std::filesystem::exists(cfg.run_dir() + "/metrics.jsonl") ||
      !checkpoints::CheckpointDir(cfg.run_dir() + "/" + cfg.checkpointing.checkpoints_dir).list().empty();
  if (!options.overwrite && !options.resume && cfg.checkpointing.auto_resume && has_member_dir) options.resume = true;
  if (options.resume && !has_member_dir) {
    if (options.resume_required)
      throw Error(str("--resume: ", cfg.run_dir(), " holds no checkpoint of this member to continue from"),
                  "join without --resume (or --set checkpointing.run_name to the directory the member used before)");
    options.resume = false;
  }
  if (!options.resume && !options.overwrite && has_member_dir)
    throw Error(str("run directory ", cfg.run_dir(), " already holds a member's run"),
                "pass --resume to continue it, --overwrite to start it over, or --set checkpointing.run_name=NEW");
  if (options.resume) check_member_checkpoints(cfg, code.run_id);
  prepare_run_dir(cfg, options);
  auto node = make_node(net, info.seen_from);
  const auto tunnel = reach_through_relay_if_needed(net, *node, info.seen_from, info.relay, code.broker_key, keys);
  NetworkedMember member(cfg, net, code.run_id, dataset, std::move(client), node, cfg.run_dir() + "/metrics.jsonl",
                         options);
  member.token_ = code.token;
  member.relayed_ = tunnel != nullptr;
  GracefulStopScope graceful(
      "stopping after this step: a checkpoint is saved and this member leaves the run (Ctrl-C "
      "again to exit at once)");
  TrainSummary s = member.run();
  if (s.interrupted) log_info("rejoin with: pico train --join '", join_code, "' --resume");
  return s;
}

}  // namespace pico::trainer
