#!/usr/bin/python3
"""Joined pico runs over an emulated internet: three members behind home NATs (reached through
the broker's relay) against the same five members all public, in one run.

  sudo experiments/wan/run.py [--models demo,llm] [--rounds 4] [--build build]

Five hosts in network namespaces joined by a bridge (the "internet", 198.51.100.0/24):

  host   uplink      one-way delay   nat arm
  pub1   100 Mbit/s  15 ms           public: runs the host (`pico train --config`, broker + relay)
  pub2   100 Mbit/s  20 ms           public
  home1   20 Mbit/s  25 ms           behind a masquerading router (nftables)
  home2   20 Mbit/s  30 ms           behind a masquerading router
  home3   20 Mbit/s  40 ms           behind a masquerading router that drops unsolicited packets

so RTTs between members are 35-70 ms. Uplinks are shaped with `tc tbf` on the host's egress
(this kernel has no netem); the delay is experiments/allreduce/delay_relay, a frame copier
between the host (or its router) and the bridge that holds every frame the host sends. In the
`public` arm the homes have public addresses of their own (same rates and delays, no router):
every link is direct. In the `nat` arm the homes are behind their routers; pico finds that
by itself (the broker sees them come from their router) and they are reached through the
broker's relay on pub1.

Each (model, arm) is one joined DiLoCo run of the README's commands (`pico train --config` on
pub1, `pico train --join CODE` on the others), outer.compression uint8, `--rounds` rounds;
the round times come from the host broker's round_stats (broker.db): compute (mean member's
inner steps), waiting (for the slowest member), all-reduce (round_start to result, mean of
members), and the relay's bytes from the host's log. The first round (start-up, connection
set-up) is left out of the medians. Models: demo = configs/demo.yaml's model; llm =
configs/llm-training.yaml's model shape (d_model 384, 12 layers, vocab 32768) at sequence
length 128, on the demo's 4096-token data (the embedding's extra rows are trained as well).

Writes RESULTS.md next to this file and prints it. Creates and deletes its namespaces; sends
traffic only inside them. Needs the build (`scripts/setup`; delay_relay is built with it),
root, iproute2, nftables, ethtool.
"""
import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

# name, uplink Mbit/s, one-way delay ms, behind a NAT in the nat arm
HOSTS = [("pub1", 100, 15, False), ("pub2", 100, 20, False), ("home1", 20, 25, True), ("home2", 20, 30, True),
         ("home3", 20, 40, True)]
P = "wan"  # namespace prefix

MODELS = {
    "demo": [],  # configs/demo.yaml's model as it is
    "llm": ["model.d_model=384", "model.n_layers=12", "model.vocab_size=32768", "model.max_seq_len=128",
            "model.attention_n_heads=12", "model.attention_n_kv_heads=4", "model.activation_hidden_dim=1536"],
}
# inner steps and batch per model: a round's compute stays a few seconds on a shared 2-core box
STEPS = {"demo": (20, 8), "llm": (4, 2)}


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}\n{r.stdout}{r.stderr}")
    return r


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = int(open("/proc/meminfo").readline().split()[1]) // (1 << 20)
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, Linux {platform.release()}"


def teardown(relays=()):
    for p in relays:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    for ns in sh("ip netns list", check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name.startswith(P + "-"):
            sh(f"ip netns del {name}", check=False)


def offloads_off(ns, dev):
    sh(f"ip netns exec {ns} ethtool -K {dev} tso off gso off gro off tx off rx off", check=False)


def setup(arm, delay_relay):
    """The internet and five hosts; returns the delay relays' processes."""
    teardown()
    inet = f"{P}-i"
    sh(f"ip netns add {inet}")
    sh(f"ip -n {inet} link set lo up")
    sh(f"ip -n {inet} link add br0 type bridge")
    sh(f"ip -n {inet} link set br0 up")
    relays = []
    for i, (name, rate, delay, natted) in enumerate(HOSTS):
        ns = f"{P}-{name}"
        public_ip = f"198.51.100.{11 + i}"
        nat = natted and arm == "nat"
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        # edge: the namespace whose "wan" interface faces the internet (the host, or its router)
        edge = f"{P}-{name}r" if nat else ns
        if nat:
            sh(f"ip netns add {edge}")
            sh(f"ip -n {edge} link set lo up")
            sh(f"ip netns exec {edge} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
            sh(f"ip netns exec {edge} sysctl -qw net.ipv4.ip_forward=1")
            sh(f"ip link add eth0 netns {ns} type veth peer name lan0 netns {edge}")
            sh(f"ip -n {ns} addr add 10.{i}.0.2/24 dev eth0")
            sh(f"ip -n {edge} addr add 10.{i}.0.1/24 dev lan0")
            sh(f"ip -n {ns} link set eth0 up")
            sh(f"ip -n {edge} link set lan0 up")
            sh(f"ip -n {ns} route add default via 10.{i}.0.1")
            offloads_off(ns, "eth0")
            offloads_off(edge, "lan0")
            wan = "wan0"
            rules = [
                "table ip nat {",
                "  chain postrouting { type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }",
                "}",
            ]
            if name == "home3":
                rules += ["table ip filter {", "  chain forward { type filter hook forward priority 0;",
                          "    ct state established,related accept", "    iifname \"wan0\" drop", "  }", "}"]
            subprocess.run(["ip", "netns", "exec", edge, "nft", "-f", "-"], input="\n".join(rules) + "\n", text=True,
                           check=True)
        else:
            wan = "eth0"
        # wan <-> r0 (in edge) … delay relay … up0 (in edge) <-> port in the internet's bridge
        sh(f"ip link add {wan} netns {edge} type veth peer name r0 netns {edge}")
        sh(f"ip link add up0 netns {edge} type veth peer name p{i} netns {inet}")
        for dev in ("r0", "up0"):
            sh(f"ip -n {edge} link set {dev} up promisc on")
            offloads_off(edge, dev)
        sh(f"ip -n {edge} addr add {public_ip}/24 dev {wan}")
        sh(f"ip -n {edge} link set {wan} up")
        offloads_off(edge, wan)
        sh(f"ip -n {inet} link set p{i} master br0")
        sh(f"ip -n {inet} link set p{i} up")
        # The uplink: the host's own egress (a home's: towards its router, the bottleneck of a
        # home line), burst 32 KB.
        uplink_ns, uplink_dev = (ns, "eth0")
        sh(f"ip netns exec {uplink_ns} tc qdisc add dev {uplink_dev} root tbf rate {rate}mbit burst 32kb latency 50ms")
        log = open(os.path.join(tempfile.gettempdir(), f"pico-wan-relay-{name}.log"), "w")
        relays.append(subprocess.Popen(["ip", "netns", "exec", edge, delay_relay, "r0", "up0", str(delay)],
                                       stdout=log, stderr=subprocess.STDOUT))
    time.sleep(0.5)
    for p in relays:
        if p.poll() is not None:
            raise RuntimeError("delay_relay exited; see /tmp/pico-wan-relay-*.log")
    # Every host reaches pub1 (through its NAT where it has one).
    for name, *_ in HOSTS[1:]:
        sh(f"ip netns exec {P}-{name} ping -c 1 -W 3 -q 198.51.100.11")
    return relays


def rtt(a, b_ip):
    out = sh(f"ip netns exec {P}-{a} ping -c 4 -i 0.2 -q {b_ip}", check=False).stdout.strip().splitlines()
    m = re.search(r"= [\d.]+/([\d.]+)/", out[-1]) if out else None
    return float(m.group(1)) if m else float("nan")


def wait_for(pattern, path, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path):
            m = re.search(pattern, open(path, errors="replace").read())
            if m:
                return m
        time.sleep(0.2)
    raise RuntimeError(f"'{pattern}' did not appear in {path} within {timeout} s:\n" + open(path).read()[-3000:])


def run_arm(args, work, model, arm):
    """One joined run; returns its measurements."""
    pico = os.path.join(args.build, "pico")
    inner, batch = STEPS[model]
    runs = os.path.join(work, f"runs-{model}-{arm}")
    sets = ["outer.algorithm=diloco", f"outer.inner_steps={inner}", f"training.max_steps={inner * args.rounds}",
            "outer.compression=uint8", "outer.min_contributors=5", "outer.timeout_s=900", "threads=1",
            f"data.path={work}/data", f"data.dataloader.batch_size={batch}", "evaluation.every_n_steps=0",
            "checkpointing.save_every_n_steps=0", f"checkpointing.runs_dir={runs}"] + MODELS[model]
    setargs = " ".join(f"--set {s}" for s in sets)
    procs, logs = [], []
    env = lambda name: f"env PICO_HOME={work}/home-{name} OMP_NUM_THREADS=1"
    host_log = os.path.join(work, f"{model}-{arm}-pub1.log")
    with open(host_log, "w") as f:
        procs.append(subprocess.Popen(
            f"ip netns exec {P}-pub1 {env('pub1')} {pico} train --config {ROOT}/configs/demo.yaml {setargs} "
            f"--set checkpointing.run_name=wan", shell=True, stdout=f, stderr=subprocess.STDOUT))
    logs.append(host_log)
    code = wait_for(r"join code: (pico://\S+)", host_log, 120).group(1)
    for name, *_ in HOSTS[1:]:
        log = os.path.join(work, f"{model}-{arm}-{name}.log")
        with open(log, "w") as f:
            procs.append(subprocess.Popen(
                f"ip netns exec {P}-{name} {env(name)} {pico} train --join '{code}' "
                f"--set checkpointing.run_name=wan-{name} --set checkpointing.runs_dir={runs}", shell=True, stdout=f,
                stderr=subprocess.STDOUT))
        logs.append(log)
        wait_for(r"joined run wan as member", log, 120)  # one at a time: slots follow HOSTS
    t0 = time.time()
    for p in procs:
        p.wait(timeout=3600)
    wall = time.time() - t0
    for p, log in zip(procs, logs):
        if p.returncode != 0:
            raise RuntimeError(f"{log} exited {p.returncode}:\n" + open(log).read()[-4000:])
    relayed = [name for (name, *_), log in zip(HOSTS, logs) if "through the broker's relay" in open(log).read()]
    m = re.search(r"relay: carried (\d+) bytes to relayed members and (\d+) bytes from them", open(host_log).read())
    relay_bytes = (int(m.group(1)) + int(m.group(2))) if m else 0
    db = sqlite3.connect(os.path.join(runs, "wan", "broker.db"))
    rows = db.execute("SELECT round, attempts, participants, compute_s, wait_s, comm_s, round_s, bytes "
                      "FROM round_stats WHERE run_id = 'wan' ORDER BY round").fetchall()
    db.close()
    later = [r for r in rows if r[0] >= 2] or rows
    med = lambda i: statistics.median(r[i] for r in later)
    thetas = set()
    for name, *_ in HOSTS:
        run = "wan" if name == "pub1" else f"wan-{name}"
        recs = [json.loads(l) for l in open(os.path.join(runs, run, "metrics.jsonl")) if '"theta_hash"' in l]
        thetas.add(recs[-1]["theta_hash"])
    shutil.rmtree(runs, ignore_errors=True)  # each member's final checkpoint: 1.4 GB for the llm model
    return {
        "rounds": len(rows), "attempts": max(r[1] for r in rows), "participants": min(r[2] for r in rows),
        "compute_s": med(3), "wait_s": med(4), "comm_s": med(5), "round_s": med(6),
        "bytes_per_round": statistics.median(r[7] for r in rows), "relayed": relayed, "relay_bytes": relay_bytes,
        "wall_s": wall, "theta_agree": len(thetas) == 1,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="demo,llm")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, tc, nftables)")
    delay_relay = os.path.join(args.build, "experiments/allreduce/delay_relay")
    for exe in (os.path.join(args.build, "pico"), delay_relay):
        if not os.path.exists(exe):
            sys.exit(f"{exe} not found: build first (scripts/setup)")
    work = tempfile.mkdtemp(prefix="pico-wan-")
    sh(f"{ROOT}/scripts/kjv-corpus {work}/kjv.txt")
    sh(f"{args.build}/pico data prepare --input {work}/kjv.txt --output {work}/data --vocab-size 4096 --shards 5")
    results, rtts = {}, {}
    load0 = os.getloadavg()[0]
    try:
        for arm in ("public", "nat"):
            relays = setup(arm, delay_relay)
            try:
                rtts[arm] = {f"pub1-{h}": rtt(h, "198.51.100.11") for h, *_ in HOSTS[1:]}
                for model in args.models.split(","):
                    print(f"[wan] {model} / {arm} ...", flush=True)
                    results[(model, arm)] = run_arm(args, work, model, arm)
                    print(f"[wan] {model} / {arm}: {results[(model, arm)]}", flush=True)
            finally:
                teardown(relays)
    finally:
        teardown()
    load1 = os.getloadavg()[0]
    lines = ["# Joined runs over an emulated internet: members behind NATs against all public", "",
             f"Machine: {machine()}; load average {load0:.1f} at the start, {load1:.1f} at the end (a shared box).",
             f"Command: `sudo experiments/wan/run.py --models {args.models} --rounds {args.rounds}`", "",
             "Five members (pub1 hosts the run and its broker/relay): uplinks 100/100/20/20/20 Mbit/s (tbf), one-way",
             "delays 15/20/25/30/40 ms (delay relay), DiLoCo with uint8 pseudo-gradients. `nat`: home1-3 behind",
             "masquerading routers (home3's drops unsolicited packets), reached through the broker's relay; `public`:",
             "the same hosts with public addresses. Per round, medians over rounds 2..N (host broker's round_stats):",
             "", "| model | arm | relayed members | round s | compute s | waiting s | all-reduce s | bytes/round (all members) | relay bytes (run) | attempts | θ_g agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, arm), r in results.items():
        lines.append(f"| {model} | {arm} | {', '.join(r['relayed']) or '—'} | {r['round_s']:.2f} | {r['compute_s']:.2f} | "
                     f"{r['wait_s']:.2f} | {r['comm_s']:.2f} | {r['bytes_per_round'] / 1e6:.1f} MB | "
                     f"{r['relay_bytes'] / 1e6:.1f} MB | {r['attempts']} | {'yes' if r['theta_agree'] else 'NO'} |")
    lines += ["", "The relay's cost, as the ratio of the nat arm's round time to the public arm's (same model, same run):", ""]
    for model in args.models.split(","):
        if (model, "public") in results and (model, "nat") in results:
            pub, nat = results[(model, "public")], results[(model, "nat")]
            lines.append(f"- {model}: round {nat['round_s']:.2f} s vs {pub['round_s']:.2f} s "
                         f"({(nat['round_s'] / pub['round_s'] - 1) * 100:+.1f}%), all-reduce {nat['comm_s']:.2f} s vs "
                         f"{pub['comm_s']:.2f} s ({(nat['comm_s'] / pub['comm_s'] - 1) * 100:+.1f}%)")
    lines += ["", "Measured RTTs (ping to pub1, ms): " +
              "; ".join(f"{arm}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()) for arm, r in rtts.items()), ""]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
