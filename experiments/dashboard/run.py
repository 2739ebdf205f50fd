#!/usr/bin/env python3
"""experiments/dashboard/run.py — what do 20 browsers watching the dashboard cost the broker?

A standing broker (`pico broker --http`, its own process, so that its CPU time is its own)
runs a 3-member DiLoCo run on this machine. The run alternates phases of equal length:
no dashboard open, then 20 simulated browsers each doing what the page does (the page and
its assets once, then GET /api/runs/RUN?rounds_after=…&events_after=… every second and
GET /api/runs every 5 s). Side by side in one run, ABAB…, so that the machine's drift hits
both arms alike. Per phase it measures the broker's CPU (utime + stime from /proc), the
request latency the pollers see, and the rounds committed in it (time between commits, and
the members' mean wait and communication, as the broker records them).

    python3 experiments/dashboard/run.py              # 3 × (30 s without, 30 s with): ~4 min
    PHASE_S=60 PAIRS=4 python3 experiments/dashboard/run.py

Writes RESULTS.md next to this script (the table, the machine, the command).
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PICO = os.environ.get("PICO", os.path.join(ROOT, "build", "pico"))
OUT = os.path.join(ROOT, "experiments", "dashboard")
PHASE_S = float(os.environ.get("PHASE_S", "30"))
PAIRS = int(os.environ.get("PAIRS", "3"))
POLLERS = int(os.environ.get("POLLERS", "20"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """model: {{d_model: 64, n_layers: 2, vocab_size: 512, max_seq_len: 64, attention_n_heads: 4,
  attention_n_kv_heads: 2, activation_hidden_dim: 192}}
training: {{max_steps: 1000000, optimization: {{lr: 3.0e-3, lr_scheduler: constant, lr_warmup_steps: 10}}}}
data: {{path: {data}, dataloader: {{batch_size: 4}}}}
outer: {{algorithm: diloco, inner_steps: 20, timeout_s: 30, min_contributors: 3}}
evaluation: {{every_n_steps: 100, batches: 2}}
checkpointing: {{runs_dir: {runs}, run_name: dash, save_every_n_steps: 0}}
monitoring: {{logging: {{log_every_n_steps: 100}}}}
threads: 1
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_for_log(path, pattern, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if os.path.exists(path):
            m = re.search(pattern, open(path, errors="replace").read())
            if m:
                return m
        time.sleep(0.2)
    raise RuntimeError(f"{path}: no {pattern!r} within {seconds} s:\n" + open(path, errors="replace").read()[-3000:])


class Poller(threading.Thread):
    """One browser tab: what broker/web/dashboard.js requests, on its schedule."""

    def __init__(self, base, run, stop, offset):
        super().__init__(daemon=True)
        self.base, self.run_id, self.stop, self.offset = base, run, stop, offset
        self.latencies = []
        self.failures = 0

    def timed(self, path):
        t = time.perf_counter()
        try:
            body = get(self.base + path)
            self.latencies.append(time.perf_counter() - t)
            return body
        except OSError:
            self.failures += 1
            return None

    def run(self):
        time.sleep(self.offset)  # tabs opened at different moments
        for path in ("/", "/dashboard.js", "/dashboard.css", "/api/runs"):
            self.timed(path)
        last_round, last_event, tick = -1, 0, 0
        next_t = time.monotonic()
        while not self.stop.is_set():
            body = self.timed(f"/api/runs/{self.run_id}?rounds_after={max(-1, last_round - 10)}&events_after={last_event}")
            if body:
                v = json.loads(body)
                for r in v["rounds"]:
                    last_round = max(last_round, r["round"])
                for e in v["events"]:
                    last_event = max(last_event, e["id"])
            tick += 1
            if tick % 5 == 0:
                self.timed("/api/runs")
            next_t += 1.0
            self.stop.wait(max(0.0, next_t - time.monotonic()))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    tmp = tempfile.mkdtemp(prefix="pico-dash-exp-")
    data = os.path.join(tmp, "ds")
    corpus = os.path.join(ROOT, "tests", "fixtures", "kjv_small.txt")
    subprocess.run([PICO, "data", "prepare", "--input", corpus, "--output", data, "--vocab-size", "512", "--shards", "3"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(tmp, "run.yaml"), "w") as f:
        f.write(CONFIG.format(data=data, runs=os.path.join(tmp, "runs")))
    keys = ["--key-dir", os.path.join(tmp, "keys")]
    procs = []

    def spawn(args, log):
        p = subprocess.Popen([PICO] + args + keys, stdout=open(os.path.join(tmp, log), "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        broker = spawn(["broker", "--listen", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0", "--state",
                        os.path.join(tmp, "broker.db"), "--member-timeout", "30"], "broker.log")
        m = wait_for_log(os.path.join(tmp, "broker.log"), r"listening on (tcp://\S+) \(key (\S{40})\)", 30)
        endpoint, key = m.group(1), m.group(2)
        base = wait_for_log(os.path.join(tmp, "broker.log"), r"dashboard: (http://127\.0\.0\.1:\d+)/", 10).group(1)
        spawn(["train", "--config", os.path.join(tmp, "run.yaml"), "--broker", endpoint, "--broker-key", key,
               "--identity", "a", "--overwrite"], "a.log")
        code = wait_for_log(os.path.join(tmp, "a.log"), r"join code: (pico://\S+)", 60).group(1)
        for who in ("b", "c"):
            spawn(["train", "--join", code, "--identity", who, "--set", f"checkpointing.run_name=dash-{who}"], f"{who}.log")
        # Warm up: every member in, a few rounds done.
        end = time.time() + 120
        while time.time() < end:
            v = json.loads(get(f"{base}/api/runs/dash"))
            if v["round"] >= 3 and v["active_members"] == 3:
                break
            time.sleep(1)
        else:
            raise RuntimeError("the run did not reach round 3 with 3 members within 120 s")

        phases = []
        for pair in range(PAIRS):
            for pollers in (0, POLLERS):
                stop = threading.Event()
                threads = [Poller(base, "dash", stop, offset=i / max(1, POLLERS)) for i in range(pollers)]
                t0, c0 = time.time(), cpu_seconds(broker.pid)
                own0 = time.process_time()
                for t in threads:
                    t.start()
                time.sleep(PHASE_S)
                t1, c1 = time.time(), cpu_seconds(broker.pid)
                own1 = time.process_time()
                stop.set()
                for t in threads:
                    t.join()
                rounds = [r for r in json.loads(get(f"{base}/api/runs/dash?rounds_limit=5000"))["rounds"]
                          if t0 <= r["committed_at"] <= t1]
                lat = [x for t in threads for x in t.latencies]
                phases.append({
                    "pair": pair, "pollers": pollers, "seconds": t1 - t0,
                    "broker_cpu": (c1 - c0) / (t1 - t0),
                    "pollers_cpu": (own1 - own0) / (t1 - t0),
                    "requests": len(lat), "failures": sum(t.failures for t in threads),
                    "latency_ms_median": 1000 * median(lat),
                    "latency_ms_p99": 1000 * (sorted(lat)[int(0.99 * (len(lat) - 1))] if lat else float("nan")),
                    "rounds": len(rounds),
                    "round_s": median([r["round_s"] for r in rounds if r["round_s"] is not None]),
                    "wait_s": median([r["wait_s"] for r in rounds if r["wait_s"] is not None]),
                    "comm_s": median([r["comm_s"] for r in rounds if r["comm_s"] is not None]),
                    "compute_s": median([r["compute_s"] for r in rounds if r["compute_s"] is not None]),
                    # What the broker and the network add to a round: all but the inner steps.
                    "overhead_s": median([r["round_s"] - r["compute_s"] for r in rounds
                                          if r["round_s"] is not None and r["compute_s"] is not None]),
                })
                p = phases[-1]
                print(f"pair {pair} pollers {pollers:2d}: broker {100 * p['broker_cpu']:.2f}% of a core, "
                      f"{p['requests']} requests (p50 {p['latency_ms_median']:.1f} ms), {p['rounds']} rounds, "
                      f"median round {p['round_s']:.2f} s, wait {p['wait_s']:.3f} s, comm {p['comm_s']:.3f} s", flush=True)
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(phases, f, indent=1)
        write_results(phases)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def write_results(phases):
    def agg(pollers, key, fn=median):
        return fn([p[key] for p in phases if p["pollers"] == pollers])

    base, load = 0, POLLERS
    cpu0, cpu1 = agg(base, "broker_cpu"), agg(load, "broker_cpu")
    r0, r1 = agg(base, "round_s"), agg(load, "round_s")
    o0, o1 = agg(base, "overhead_s"), agg(load, "overhead_s")
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "# Dashboard cost: 20 browsers polling once a second",
        "",
        f"A standing broker (`pico broker --http`) runs a 3-member DiLoCo run (d_model 64, 2 layers, H = 20, "
        f"one thread per member) on this machine. Phases of {PHASE_S:.0f} s alternate: no dashboard open, then "
        f"{POLLERS} simulated browsers doing what `broker/web/dashboard.js` does (the page once, then "
        "`/api/runs/RUN?rounds_after=…&events_after=…` every second and `/api/runs` every 5 s). "
        f"{PAIRS} pairs, ABAB. Broker CPU is its process's utime + stime over the phase; round times are "
        "what the broker recorded for the rounds committed in the phase (medians).",
        "",
        "| phase | pollers | broker CPU (% of a core) | requests | latency p50 / p99 (ms) | rounds | round (s) | compute (s) | round − compute (s) | wait (s) | comm (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, p in enumerate(phases):
        latency = f"{p['latency_ms_median']:.1f} / {p['latency_ms_p99']:.1f}" if p["requests"] else "—"
        lines.append(f"| {i + 1} | {p['pollers']} | {100 * p['broker_cpu']:.2f} | {p['requests']} | {latency} | "
                     f"{p['rounds']} | {p['round_s']:.3f} | {p['compute_s']:.3f} | {p['overhead_s']:.3f} | "
                     f"{p['wait_s']:.3f} | {p['comm_s']:.3f} |")
    lines += [
        "",
        "Medians over the phases of each arm:",
        "",
        "| pollers | broker CPU (% of a core) | round (s) | compute (s) | round − compute (s) | wait (s) | comm (s) | failed requests |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| 0 | {100 * cpu0:.2f} | {r0:.3f} | {agg(base, 'compute_s'):.3f} | {o0:.3f} | {agg(base, 'wait_s'):.3f} | "
        f"{agg(base, 'comm_s'):.3f} | — |",
        f"| {POLLERS} | {100 * cpu1:.2f} | {r1:.3f} | {agg(load, 'compute_s'):.3f} | {o1:.3f} | {agg(load, 'wait_s'):.3f} | "
        f"{agg(load, 'comm_s'):.3f} | {agg(load, 'failures', sum)} |",
        "",
        f"**{POLLERS} pollers cost the broker {100 * (cpu1 - cpu0):.2f}% of a core** (target ≤ 5%). "
        f"Median round time {r0:.3f} s without and {r1:.3f} s with them (ratio {r1 / r0:.3f}); the part of a round "
        f"that is not the members' inner steps (round − compute: waiting, all-reduce, the broker's handling) "
        f"{o0:.3f} s without and {o1:.3f} s with them (ratio {o1 / o0:.3f}).",
        "",
        f"The pollers themselves (Python, in the measuring process) used a median "
        f"{100 * agg(load, 'pollers_cpu'):.1f}% of a core on the same 2 cores as the three trainers and the broker: "
        "what they take slows the inner steps (compute) too, so a change in round time here is an upper bound on "
        "what the broker's serving adds.",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu_model}), {platform.system()} {platform.release()}; shared with other "
        "work, so quote the medians and the ratio.",
        "",
        "Command: `python3 experiments/dashboard/run.py` (raw numbers: `experiments/dashboard/results.json`).",
        "",
    ]
    with open(os.path.join(OUT, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
