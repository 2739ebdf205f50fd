// pico ledger — who contributed what to a run, from a live broker or its state file.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "pico/broker/client.h"
#include "pico/broker/store.h"
#include "pico/comm/curve_keys.h"
#include "pico/common/error.h"
#include "pico/common/progress.h"

namespace pico::apps {
namespace {

struct LedgerArgs {
  std::string run;
  std::string broker;      // join code or tcp://HOST:PORT
  std::string broker_key;  // Z85, with tcp://
  std::string state;
  bool json = false;
};

std::vector<broker::LedgerEntry> rows_from_state(const std::string& path, const std::string& run) {
  // Store::open creates a missing database: a typo must not leave an empty one behind.
  if (!std::filesystem::is_regular_file(path))
    throw Error(
        str("broker state file ", path, " does not exist"),
        "a hosted run keeps it at RUN_DIR/broker.db (e.g. runs/my-run/broker.db); a standing broker at its --state");
  auto store = broker::Store::open(path);
  if (!store->run(run)) {
    std::string known;
    for (const auto& r : store->runs()) known += (known.empty() ? "" : ", ") + r.run_id;
    throw Error(str("no run '", run, "' in ", path),
                known.empty() ? "the state file holds no runs" : "runs there: " + known);
  }
  std::vector<broker::LedgerEntry> rows;
  for (const auto& r : store->ledger(run))
    rows.push_back(
        {r.public_key, r.tokens, r.inner_steps, r.rounds_accepted, r.rounds_rejected, r.compute_seconds, r.bytes_sent});
  return rows;
}

std::vector<broker::LedgerEntry> rows_from_broker(const LedgerArgs& a) {
  broker::BrokerClientOptions o;
  if (a.broker.rfind("pico://", 0) == 0) {
    const auto code = broker::parse_join_code(a.broker, /*allow_broker_code=*/true);
    o.endpoint = code.endpoint();
    o.broker_public_key = code.broker_key;
  } else {
    o.endpoint = a.broker;
    if (a.broker_key.empty())  // a broker on this machine keeps its key in the pico home
      o.broker_public_key = comm::curve_load_or_create_keypair(comm::curve_default_key_dir(), "broker").public_key;
    else
      o.broker_public_key = comm::curve_key_from_text(a.broker_key, "--broker-key");
  }
  const auto mine = comm::curve_generate_keypair();
  o.public_key = mine.public_key;
  o.secret_key = mine.secret_key;
  o.heartbeat_interval = std::chrono::hours(1);
  broker::BrokerClient client(o);
  const auto reply =
      broker::parse<broker::LedgerReply>(client.request(broker::LedgerQuery{a.run}, "", std::chrono::seconds(10)));
  return reply.ledger;
}

void print_table(const std::string& run, const std::vector<broker::LedgerEntry>& rows) {
  std::printf("ledger of run %s (%zu contributors)\n", run.c_str(), rows.size());
  std::printf("%-14s %12s %11s %9s %9s %11s %12s\n", "contributor", "tokens", "inner steps", "accepted", "rejected",
              "compute", "bytes sent");
  for (const auto& r : rows) {
    std::printf("%-14s %12lld %11lld %9lld %9lld %11s %12s\n", (r.public_key.substr(0, 12) + "…").c_str(),
                static_cast<long long>(r.tokens), static_cast<long long>(r.inner_steps),
                static_cast<long long>(r.rounds_accepted), static_cast<long long>(r.rounds_rejected),
                format_duration(r.compute_seconds).c_str(), format_bytes(static_cast<double>(r.bytes_sent)).c_str());
  }
}

void register_ledger(CLI::App& app) {
  auto a = std::make_shared<LedgerArgs>();
  auto* sub =
      app.add_subcommand("ledger", "Show who contributed what to a run: tokens, steps, rounds, compute, bytes.");
  sub->add_option("run", a->run, "Run id (the run name)")->required();
  auto* b = sub->add_option("--broker", a->broker,
                            "A live broker: a run's join code, the broker code `pico broker` printed, "
                            "or tcp://HOST:PORT");
  sub->add_option("--broker-key", a->broker_key, "The broker's public key (64 hex digits) when --broker is tcp://…");
  auto* s = sub->add_option("--state", a->state, "The broker's state file (e.g. RUN_DIR/broker.db)");
  b->excludes(s);
  sub->add_flag("--json", a->json, "Print JSON instead of a table");
  sub->callback([a] {
    if (a->broker.empty() && a->state.empty())
      throw Error("pico ledger needs --broker or --state", "e.g. pico ledger my-run --state runs/my-run/broker.db");
    const auto rows = a->state.empty() ? rows_from_broker(*a) : rows_from_state(a->state, a->run);
    if (a->json)
      std::cout << broker::LedgerReply{a->run, rows}.to_json().at("ledger").dump(2) << "\n";
    else
      print_table(a->run, rows);
  });
}

}  // namespace

PICO_COMMAND(70, register_ledger);

}  // namespace pico::apps
