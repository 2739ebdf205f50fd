// pico/trainer/distributed.h — a contributor of a networked DiLoCo run, coordinated by a broker.
//
// `pico train --config X` (outer.algorithm: diloco) starts a run: it hosts an embedded broker
// (or registers the run on --broker), prints the join code, and trains as its first member.
// `pico train --join CODE` fetches the run's shared config, checks the local dataset against
// the run's hash, gets θ_g and the outer state (snapshot, SHA-256 verified) and enters at the
// next round boundary. Each round: H inner AdamW steps (or outer.round_seconds of them), a
// `ready` to the broker with ‖Δ‖, then the all-reduce of the token-weighted Δ peer to peer
// over CURVE-encrypted ZeroMQ with the members the broker names, the outer step, and the
// θ_g hash back to the broker. A failed collective is retried with the survivors; a member
// whose θ_g disagrees resyncs from a snapshot.
//
// Checkpoints: every member saves into its own RUN_DIR/checkpoints (the layout of a local
// run's, with /train_state@run_id = the broker's run id, /train_state@round, /optim/outer =
// θ_g, momentum and outer step, /pseudo_gradient = its last unweighted Δ) at round
// boundaries — the end of each round in which a multiple of checkpointing.save_every_n_steps
// falls, and at the end. `--join CODE --resume` restores the inner AdamW state, counters
// and θ_g from the newest valid one, rejoins, and takes θ_g from the broker's snapshot as any
// joiner does. If the run is still at the checkpoint's round (outer.min_contributors kept it
// waiting), the member continues exactly where it stopped; if the run moved on, it continues
// from the run's newer θ_g with its old inner-optimizer state: that cannot be bit-exact,
// since the run went on without it. The host of a run with an embedded broker cannot resume
// (its broker went away with it); with a standing broker (--broker) it rejoins like a member.
#pragma once

#include <string>
#include <vector>

#include "pico/trainer/run_config.h"
#include "pico/trainer/trainer.h"

namespace pico::trainer {

struct NetworkOptions {
  std::string broker;      // a standing broker (join code or tcp://HOST:PORT); "" = embedded
  std::string broker_key;  // its public key (Z85) when `broker` is tcp://…
  // Interface for the peer socket (and the embedded broker): every one by default, so that
  // other machines can join.
  std::string listen_host = "0.0.0.0";
  // The address others dial. "" = listen_host, or when that is every interface: for the
  // embedded broker, this machine's first non-loopback address (comm/address.h); for the peer
  // socket, the address the broker sees this process's connection come from.
  std::string advertise_host;
  // Whether peers reach this member through the broker's relay (comm/relay.h): "auto" when it
  // is behind a NAT (the broker sees it come from an address that is none of this machine's)
  // and no advertise_host was given; "always"; "never".
  std::string relay = "auto";
  int broker_port = 0;                   // embedded broker port (0 = pick a free one)
  std::string broker_http;               // embedded broker status endpoint ("" = none)
  std::string identity = "contributor";  // name of this contributor's key pair (one per process on a machine)
  bool identity_given = false;           // the user chose `identity`: refuse it when in use, never pick another
  std::string key_dir;                   // where key pairs live ("" = the pico home)
  bool is_private = false;               // the run admits only allow-listed keys or join-token holders
  std::vector<std::string> allow_keys;
  double member_timeout_s = 30;  // embedded broker: evict members silent this long
};

// Starts (or, with options.broker, registers) a run and trains in it as its first member.
TrainSummary run_networked(const RunConfig& cfg, const NetworkOptions& network, const TrainOptions& options);

// Joins the run named by `join_code`. `overrides` may set only local keys (data.path,
// checkpointing.runs_dir, checkpointing.run_name, device, threads, monitoring.*, data.verify);
// the run's shared settings cannot be overridden (pico::Error names the key).
// options.resume: continue from this member's newest valid checkpoint (below) instead of
// starting its run directory over; options.stop_after_step: leave the run at the end of the
// round that reaches that step (saving a checkpoint there).
TrainSummary join_networked(const std::string& join_code, const std::vector<std::string>& overrides,
                            const NetworkOptions& network, const TrainOptions& options = {});

}  // namespace pico::trainer
