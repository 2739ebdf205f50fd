// pico train — start a run from a YAML config, or join one with a join code.
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/common/error.h"
#include "pico/common/log.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/distributed.h"
#include "pico/trainer/trainer.h"

namespace pico::apps {
namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  bool overwrite = false;
  std::int64_t stop_after_step = 0;
  bool help_config = false;
  bool local = false;
  int local_workers = 0;
  std::string join;
  std::string comm = "inprocess";
  int worker_rank = -1;
  std::string rendezvous;
  trainer::NetworkOptions net;
};

void run_train(TrainArgs a) {
  if (a.help_config) {
    std::cout << "Config keys (YAML sections, or --set section.key=value):\n";
    for (const auto& line : trainer::describe_keys()) std::cout << "  " << line << "\n";
    return;
  }
  if (!a.join.empty()) {
    if (!a.config.empty())
      throw Error("--join and --config exclude each other", "a joiner takes the run's config from its broker");
    trainer::TrainOptions jo;
    jo.resume = a.resume;
    jo.resume_required = a.resume;
    jo.overwrite = a.overwrite;
    jo.stop_after_step = a.stop_after_step;
    if (a.overwrite && a.resume)
      throw Error("--overwrite and --resume exclude each other",
                  "--resume continues this member's run directory, --overwrite starts it over");
    trainer::join_networked(a.join, a.overrides, a.net, jo);
    return;
  }
  if (a.config.empty())
    throw Error("pico train needs --config FILE (start a run) or --join CODE (join one)",
                "e.g. pico train --config configs/demo.yaml");
  std::vector<std::string> overrides = a.overrides;
  if (a.local_workers > 0) overrides.push_back(str("local_workers=", a.local_workers));
  const trainer::RunConfig cfg = trainer::load_run_config(a.config, overrides);
  trainer::TrainOptions opts;
  opts.resume = a.resume || cfg.checkpointing.auto_resume;
  opts.resume_required = a.resume;
  opts.overwrite = a.overwrite;
  opts.stop_after_step = a.stop_after_step;
  opts.comm = a.comm;
  opts.worker_rank = a.worker_rank;
  opts.rendezvous_dir = a.rendezvous;
  // A DiLoCo or DeMo run with one contributor here is joinable: it hosts (or registers with)
  // a broker. Local simulations (--local-workers N, even N = 1, or --local) and ddp runs
  // train in this process only.
  const bool networked = (cfg.outer.algorithm == "diloco" || cfg.outer.algorithm == "demo") && cfg.local_workers == 1 &&
                         a.local_workers == 0 && !a.local && a.worker_rank < 0;
  trainer::TrainSummary summary;
  if (networked) {
    summary = trainer::run_networked(cfg, a.net, opts);
  } else {
    if (!a.net.broker.empty())
      throw Error("--broker needs a joinable run: outer.algorithm diloco or demo without --local-workers or --local",
                  "set outer.algorithm: diloco (or demo) in the config");
    summary = trainer::run_training(cfg, opts);
  }
  if (summary.interrupted && !networked) {
    std::string again = "pico train --config " + a.config;
    for (const auto& o : a.overrides) again += " --set " + o;
    if (a.local_workers > 0) again += " --local-workers " + std::to_string(a.local_workers);
    if (a.local) again += " --local";
    if (a.comm != "inprocess") again += " --comm " + a.comm;
    log_info("stopped after step ", summary.steps, " with a checkpoint; continue with: ", again, " --resume");
  }
}

void register_train(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub =
      app.add_subcommand("train",
                         "Train a model. With --config, start a run; a DiLoCo run prints a join code that other\n"
                         "machines pass to --join. --local-workers N simulates N contributors in this process.");
  sub->add_option("--config,-c", args->config, "YAML run config (see configs/demo.yaml)");
  sub->add_option("--join", args->join, "Join a running run: the pico://HOST:PORT/RUN?key=… code it printed");
  sub->add_option("--set", args->overrides,
                  "Override a config key, e.g. --set training.max_steps=100 (repeatable). When joining, only "
                  "local keys (data.path, device, checkpointing.runs_dir, …)")
      ->take_all();
  sub->add_flag("--resume", args->resume,
                "Continue from the latest valid checkpoint of the run (every contributor of --local-workers, "
                "inprocess or zmq, from its own). With --join: restore this member's inner optimizer and θ_g from "
                "its newest checkpoint and rejoin (exact only if the run waited for it)");
  sub->add_flag(
      "--overwrite", args->overwrite,
      "Start over in a run directory that already holds a run (deletes its checkpoints and metrics; a joiner: "
      "its own directory only)");
  sub->add_option("--stop-after-step", args->stop_after_step,
                  "Stop after this step of the schedule (saving a checkpoint there); --resume continues the run. "
                  "A networked member leaves at the end of the round that reaches it")
      ->check(CLI::PositiveNumber);
  sub->add_option("--local-workers", args->local_workers,
                  "Simulate N contributors on this machine, each on its own data shard (sets local_workers; even "
                  "N = 1 trains locally, without a broker)")
      ->check(CLI::Range(1, 64));
  sub->add_flag("--local", args->local, "Train a DiLoCo config in this process only, without a broker");
  sub->add_option("--comm", args->comm,
                  "How --local-workers talk: inprocess (threads) or zmq (one process each, ZeroMQ over loopback)")
      ->capture_default_str()
      ->check(CLI::IsMember({"inprocess", "zmq"}));
  sub->add_option("--worker-rank", args->worker_rank, "(internal: a contributor process of --comm zmq)")->group("");
  sub->add_option("--rendezvous", args->rendezvous, "(internal: the rendezvous directory of --comm zmq)")->group("");
  sub->add_option("--broker", args->net.broker,
                  "Register the run on a standing broker (its join code or tcp://HOST:PORT) instead of hosting one");
  sub->add_option("--broker-key", args->net.broker_key, "The standing broker's public key (Z85) with tcp://…");
  sub->add_option("--listen", args->net.listen_host,
                  "Interface for this contributor's peer socket and the embedded broker (0.0.0.0: all, so that "
                  "other machines can join; 127.0.0.1: this machine only)")
      ->capture_default_str();
  sub->add_option("--advertise", args->net.advertise_host,
                  "Address other machines dial to reach this one (default: --listen, or with 0.0.0.0 the host's "
                  "first non-loopback address and, for a member's peer socket, the address the broker sees it from)");
  sub->add_option("--relay", args->net.relay,
                  "Be reached through the broker's relay: auto (when this machine is behind a NAT and --advertise is "
                  "not given), always, never")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "always", "never"}));
  sub->add_option("--broker-port", args->net.broker_port, "Port of the embedded broker (0 = any free port)")
      ->capture_default_str();
  sub->add_option("--http", args->net.broker_http,
                  "Embedded broker: serve the live dashboard at http://ADDR:PORT/ (and /metrics, /status); PORT alone "
                  "listens on 127.0.0.1");
  auto* identity = sub->add_option("--identity", args->net.identity,
                                   "Name of this contributor's key pair (a second process on this machine gets NAME-2 "
                                   "unless you name one)")
                       ->capture_default_str();
  sub->add_option("--key-dir", args->net.key_dir, "Where key pairs are kept (default: the pico home)");
  sub->add_flag("--private", args->net.is_private,
                "Admit only allow-listed keys and holders of the join token (printed in the join code)");
  sub->add_option("--allow", args->net.allow_keys, "Allow-list a contributor's public key (Z85) in a private run")
      ->take_all();
  sub->add_option("--member-timeout", args->net.member_timeout_s, "Embedded broker: evict members silent this long (s)")
      ->capture_default_str();
  sub->add_flag("--help-config", args->help_config, "List every config key with its type and meaning");
  sub->callback([args, identity] {
    args->net.identity_given = identity->count() > 0;
    run_train(*args);
  });
}

}  // namespace

PICO_COMMAND(10, register_train);

}  // namespace pico::apps
