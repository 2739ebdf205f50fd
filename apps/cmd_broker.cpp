// pico broker — a standing broker: run registry, membership, rounds, ledger, dashboard.
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/broker/protocol.h"
#include "pico/broker/service.h"
#include "pico/comm/address.h"
#include "pico/comm/curve_keys.h"
#include "pico/common/interrupt.h"
#include "pico/common/log.h"

namespace pico::apps {
namespace {

struct BrokerArgs {
  broker::ServiceOptions service;
  std::string advertise;
};

// The code runs are registered with: pico://HOST:PORT/?key=HEX (see broker/protocol.h).
std::string broker_code(const broker::BrokerService& service, const std::string& advertise) {
  const std::string& ep = service.endpoint();  // tcp://ADDR:PORT
  const auto colon = ep.rfind(':');
  const std::string bound = ep.substr(6, colon - 6);
  broker::JoinCode code;
  code.host = advertise.empty() ? comm::advertise_host_for(bound) : advertise;  // as the relay's (ServiceOptions)
  code.port = std::stoi(ep.substr(colon + 1));
  code.broker_key = service.public_key();
  return broker::format_join_code(code);
}

void register_broker(CLI::App& app) {
  auto args = std::make_shared<BrokerArgs>();
  auto& opts = args->service;
  opts.listen = "tcp://0.0.0.0:7070";
  auto* sub =
      app.add_subcommand("broker",
                         "Run a standing broker: it registers runs, admits and evicts members, orders rounds,\n"
                         "hands θ_g snapshots to joiners and keeps the contribution ledger in SQLite (WAL):\n"
                         "killed and restarted on the same --state, it loses nothing it had acknowledged.\n"
                         "It prints a broker code; start runs on it with `pico train --config FILE --broker CODE`.\n"
                         "Ctrl-C or SIGTERM stops it cleanly (status 0); its state stays for a restart.");
  sub->add_option("--listen", opts.listen, "ZeroMQ endpoint to listen on (CURVE-encrypted)")->capture_default_str();
  sub->add_option("--advertise", args->advertise,
                  "Address other machines dial, printed in the broker code (default: this machine's first "
                  "non-loopback address when --listen is 0.0.0.0)");
  sub->add_option("--state", opts.state_path, "SQLite file for the broker's durable state")->required();
  sub->add_option("--http", opts.http,
                  "Serve the live dashboard at http://ADDR:PORT/ (with /metrics for Prometheus and /status as JSON): "
                  "PORT alone listens on 127.0.0.1. Operator actions (pause, resume, evict) need the token it prints");
  sub->add_option("--key-dir", opts.key_dir, "Where the broker's CURVE key pair is kept (default: the pico home)");
  sub->add_option("--member-timeout", opts.core.member_timeout_s, "Evict a member silent for this many seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--round-timeout", opts.core.result_timeout_s,
                  "Seconds a round attempt may take before silent members are evicted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--reject-factor", opts.core.norm_rejection_factor,
                  "Public runs: reject a pseudo-gradient whose norm exceeds this × the round's median")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--snapshot-every", opts.core.snapshot_every_rounds,
                  "Keep a θ_g snapshot at most this many rounds old (0: only when a joiner needs one)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("!--no-relay", opts.relay,
                "Do not relay for members behind a NAT (by default the broker opens a tunnel port and one port per "
                "relayed member on its --listen address)");
  sub->callback([args] {
    args->service.advertise_host = args->advertise;
    broker::BrokerService service(args->service);
    const std::string code = broker_code(service, args->advertise);
    std::cout << "broker code: " << code << std::endl;
    log_info("start a run on this broker with: pico train --config FILE --broker '", code, "'");
    log_info("its public key (hex): ", comm::curve_key_to_hex(service.public_key()));
    GracefulStopScope stop("stopping the broker (its state stays in the database for a restart)",
                           [&service] { service.stop(); });
    service.run();
    log_info("broker stopped; state kept in ", args->service.state_path);
  });
}

}  // namespace

PICO_COMMAND(60, register_broker);

}  // namespace pico::apps
