#!/usr/bin/env python3
"""experiments/chaos/run.py — contributors killed and spawned at random against one broker.

For M minutes, SIGKILL a random contributor or spawn a new one (up to 6 at once, at least 1),
every few seconds, against one standing `pico broker`; optionally SIGKILL and restart the
broker too. The run fails if no round completes for 60 s or if two members ever report
different θ_g for the same round. Then a fault-free run of the same number of rounds with 3
steady contributors gives the reference validation loss. Writes RESULTS.md next to this file.

    /usr/bin/python3 experiments/chaos/run.py [--minutes 5] [--broker-kills]
"""
import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
PICO = os.environ.get("PICO", os.path.join(ROOT, "build", "pico"))


def config(work, data, rounds, h):
    path = os.path.join(work, "run.yaml")
    with open(path, "w") as f:
        f.write(f"""model: {{d_model: 64, n_layers: 2, vocab_size: 4096, max_seq_len: 64, attention_n_heads: 4,
        attention_n_kv_heads: 2, activation_hidden_dim: 192}}
training: {{max_steps: {rounds * h}, optimization: {{lr: 3.0e-3, lr_scheduler: constant, lr_warmup_steps: 20}}}}
data: {{path: {data}, dataloader: {{batch_size: 8}}}}
outer: {{algorithm: diloco, inner_steps: {h}, timeout_s: 10}}
evaluation: {{every_n_steps: {h}, batches: 4}}
checkpointing: {{runs_dir: {work}/runs, run_name: chaos, save_every_n_steps: 0}}
monitoring: {{logging: {{log_every_n_steps: 50}}}}
threads: 1
""")
    return path


class Broker:
    def __init__(self, work, port="0"):
        self.work = work
        self.log = open(os.path.join(work, "broker.log"), "a")
        self.proc = subprocess.Popen([PICO, "broker", "--listen", f"tcp://127.0.0.1:{port}", "--state",
                                      os.path.join(work, "broker.db"), "--member-timeout", "5", "--round-timeout", "30",
                                      "--key-dir", os.path.join(work, "keys")], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"listening on (tcp://127\.0\.0\.1:(\d+)) \(key (\S{40})\)", open(self.log.name).read())
            if m and self.proc.poll() is None:
                self.endpoint, self.port, self.key = m.group(1), m.group(2), m.group(3)
                # a restart appends: take the last match
                for m in re.finditer(r"listening on (tcp://127\.0\.0\.1:(\d+)) \(key (\S{40})\)", open(self.log.name).read()):
                    self.endpoint, self.port, self.key = m.group(1), m.group(2), m.group(3)
                return
            time.sleep(0.1)
        sys.exit("the broker did not start: " + open(self.log.name).read()[-2000:])

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def rounds_done(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        rows = con.execute("SELECT round, finished_at, theta_hash FROM rounds WHERE run_id='chaos' AND status='done' "
                           "ORDER BY round").fetchall()
        con.close()
        return rows
    except sqlite3.Error:
        return []


def member_round_hashes(work):
    """(round → set of θ_g hashes) over every member's metrics."""
    hashes = {}
    runs = os.path.join(work, "runs")
    for d in os.listdir(runs) if os.path.isdir(runs) else []:
        path = os.path.join(runs, d, "metrics.jsonl")
        if not os.path.exists(path):
            continue
        for line in open(path):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "theta_hash" in r:
                hashes.setdefault(r["round"], set()).add(r["theta_hash"])
    return hashes


def last_val_loss(work):
    best = (-1, None)
    runs = os.path.join(work, "runs")
    for d in os.listdir(runs):
        path = os.path.join(runs, d, "metrics.jsonl")
        if not os.path.exists(path):
            continue
        for line in open(path):
            r = json.loads(line)
            if "theta_hash" in r and "val_loss" in r and r["round"] > best[0]:
                best = (r["round"], r["val_loss"])
    return best


def chaos(args, data, work):
    os.makedirs(work, exist_ok=True)
    cfg = config(work, data, rounds=100000, h=args.h)
    broker = Broker(work)
    creator_log = open(os.path.join(work, "creator.log"), "w")
    creator = subprocess.Popen([PICO, "train", "--config", cfg, "--broker", broker.endpoint, "--broker-key", broker.key,
                                "--identity", "creator", "--key-dir", os.path.join(work, "keys"), "--overwrite"],
                               stdout=creator_log, stderr=subprocess.STDOUT)
    code = None
    for _ in range(600):
        m = re.search(r"join code: (pico://\S+)", open(creator_log.name).read())
        if m:
            code = m.group(1)
            break
        time.sleep(0.1)
    if not code:
        sys.exit("no join code: " + open(creator_log.name).read()[-2000:])
    members = {"creator": creator}
    serial = 0
    faults = []  # (time, kind)
    rng = random.Random(args.seed)
    start = time.time()
    last_round_time = start
    failure = None
    db = os.path.join(work, "broker.db")
    next_broker_kill = start + 60
    while time.time() - start < args.minutes * 60:
        time.sleep(rng.uniform(3, 8))
        alive = {k: p for k, p in members.items() if p.poll() is None}
        for k in list(members):
            if members[k].poll() is not None:
                del members[k]
        if alive and (len(alive) >= 6 or (len(alive) > 1 and rng.random() < 0.5)):
            victim = rng.choice(sorted(alive))
            alive[victim].kill()
            alive[victim].wait()
            del members[victim]
            faults.append((time.time(), f"kill {victim}"))
        else:
            serial += 1
            name = f"j{serial}"
            log = open(os.path.join(work, f"{name}.log"), "w")
            members[name] = subprocess.Popen(
                [PICO, "train", "--join", code, "--identity", f"c{serial}", "--key-dir", os.path.join(work, "keys"),
                 "--set", f"checkpointing.run_name=chaos-{name}"], stdout=log, stderr=subprocess.STDOUT)
            faults.append((time.time(), f"spawn {name}"))
        if args.broker_kills and time.time() > next_broker_kill:
            port = broker.port
            broker.kill()
            faults.append((time.time(), "kill broker"))
            time.sleep(1)
            broker = Broker(work, port)
            next_broker_kill = time.time() + 60
        rounds = rounds_done(db)
        if rounds:
            last_round_time = max(last_round_time, rounds[-1][1])
        if time.time() - last_round_time > 60:
            failure = f"no round completed for {time.time() - last_round_time:.0f} s"
            break
        bad = {r: h for r, h in member_round_hashes(work).items() if len(h) > 1}
        if bad:
            failure = f"members disagree on θ_g: {bad}"
            break
    for p in members.values():
        p.kill()
        p.wait()
    broker.kill()
    rounds = rounds_done(db)
    bad = {r: h for r, h in member_round_hashes(work).items() if len(h) > 1}
    if bad and not failure:
        failure = f"members disagree on θ_g: {bad}"
    finished = [t for _, t, _ in rounds]
    recovery = []
    for t, kind in faults:
        after = [f for f in finished if f > t]
        if after:
            recovery.append(min(after) - t)
    return {"rounds": len(rounds), "faults": faults, "recovery": recovery, "failure": failure,
            "val": last_val_loss(work), "seconds": time.time() - start}


def steady(args, data, work, rounds):
    """3 contributors, no faults, for the same number of rounds."""
    os.makedirs(work, exist_ok=True)
    cfg = config(work, data, rounds=rounds, h=args.h)
    log = open(os.path.join(work, "creator.log"), "w")
    creator = subprocess.Popen([PICO, "train", "--config", cfg, "--identity", "s0", "--key-dir",
                                os.path.join(work, "keys"), "--overwrite"], stdout=log, stderr=subprocess.STDOUT)
    code = None
    for _ in range(600):
        m = re.search(r"join code: (pico://\S+)", open(log.name).read())
        if m:
            code = m.group(1)
            break
        time.sleep(0.1)
    joiners = [subprocess.Popen([PICO, "train", "--join", code, "--identity", f"s{i}", "--key-dir",
                                 os.path.join(work, "keys"), "--set", f"checkpointing.run_name=steady-{i}"],
                                stdout=open(os.path.join(work, f"s{i}.log"), "w"), stderr=subprocess.STDOUT)
               for i in (1, 2)]
    for p in [creator] + joiners:
        p.wait()
    return last_val_loss(work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--h", type=int, default=20, help="inner steps per round")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--broker-kills", action="store_true", help="also SIGKILL and restart the broker every minute")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "kjv"))
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.data, "manifest.json")):
        sys.exit(f"no dataset at {args.data}: run scripts/demo once (it prepares data/kjv)")
    work = os.path.join(HERE, "work")
    shutil.rmtree(work, ignore_errors=True)
    c = chaos(args, args.data, os.path.join(work, "chaos"))
    s = steady(args, args.data, os.path.join(work, "steady"), c["rounds"]) if c["rounds"] > 0 else (0, None)
    kills = sum(1 for _, k in c["faults"] if k.startswith("kill"))
    spawns = len(c["faults"]) - kills
    rec = c["recovery"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("# Chaos: contributors killed and spawned at random against one broker\n\n")
        f.write(f"Verdict: **{'FAILED: ' + c['failure'] if c['failure'] else 'passed'}** "
                "(fails if no round completes for 60 s or if two members ever report different θ_g for a round).\n\n")
        f.write("| what | value |\n| --- | --- |\n")
        f.write(f"| duration | {c['seconds'] / 60:.1f} min |\n")
        f.write(f"| rounds completed | {c['rounds']} |\n")
        f.write(f"| faults injected | {len(c['faults'])} ({kills} SIGKILLs{', incl. broker' if args.broker_kills else ''}, "
                f"{spawns} spawns) |\n")
        if rec:
            f.write(f"| time from a fault to the next completed round | median {statistics.median(rec):.1f} s, "
                    f"max {max(rec):.1f} s |\n")
        f.write(f"| final validation loss (round {c['val'][0]}) | {c['val'][1]} |\n")
        f.write(f"| fault-free run, 3 contributors, same rounds (round {s[0]}) | {s[1]} |\n\n")
        f.write("Model: 2-layer pico-decoder (d_model 64), DiLoCo with H = "
                f"{args.h}, on the King James Bible; up to 6 contributors at once, at least 1; broker member timeout "
                "5 s. Contributors are processes on one machine talking over loopback (CURVE on).\n\n")
        f.write(f"Machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), shared with other work.\n\n")
        f.write("Command: `/usr/bin/python3 experiments/chaos/run.py " + " ".join(sys.argv[1:]) + "`\n\n")
        f.write("Faults (seconds from start):\n\n```\n")
        t0 = c["faults"][0][0] if c["faults"] else 0
        for t, k in c["faults"]:
            f.write(f"{t - t0:7.1f}  {k}\n")
        f.write("```\n")
    print(open(os.path.join(HERE, "RESULTS.md")).read())
    sys.exit(1 if c["failure"] else 0)


if __name__ == "__main__":
    main()
