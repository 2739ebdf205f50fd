// pico broker — a standing broker: run registry, membership, rounds, ledger, dashboard.
#include <csignal>
#include <memory>

#include "commands.h"
#include "pico/broker/service.h"

namespace pico::apps {
namespace {

broker::BrokerService* g_service = nullptr;

void on_signal(int) {
  if (g_service != nullptr) g_service->stop();
}

void register_broker(CLI::App& app) {
  auto opts = std::make_shared<broker::ServiceOptions>();
  opts->listen = "tcp://0.0.0.0:7070";
  auto* sub = app.add_subcommand(
      "broker",
      "Run a standing broker: it registers runs, admits and evicts members, orders rounds,\n"
      "hands θ_g snapshots to joiners and keeps the contribution ledger in SQLite (WAL):\n"
      "killed and restarted on the same --state, it loses nothing it had acknowledged.");
  sub->add_option("--listen", opts->listen, "ZeroMQ endpoint to listen on (CURVE-encrypted)")->capture_default_str();
  sub->add_option("--state", opts->state_path, "SQLite file for the broker's durable state")->required();
  sub->add_option("--http", opts->http,
                  "Serve the live dashboard at http://ADDR:PORT/ (with /metrics for Prometheus and /status as JSON): "
                  "PORT alone listens on 127.0.0.1. Operator actions (pause, resume, evict) need the token it prints");
  sub->add_option("--key-dir", opts->key_dir, "Where the broker's CURVE key pair is kept (default: the pico home)");
  sub->add_option("--member-timeout", opts->core.member_timeout_s, "Evict a member silent for this many seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--round-timeout", opts->core.result_timeout_s,
                  "Seconds a round attempt may take before silent members are evicted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--reject-factor", opts->core.norm_rejection_factor,
                  "Public runs: reject a pseudo-gradient whose norm exceeds this × the round's median")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--snapshot-every", opts->core.snapshot_every_rounds,
                  "Keep a θ_g snapshot at most this many rounds old (0: only when a joiner needs one)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->callback([opts] {
    broker::BrokerService service(*opts);
    g_service = &service;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    service.run();
    g_service = nullptr;
  });
}

}  // namespace

PICO_COMMAND(60, register_broker);

}  // namespace pico::apps
