#!/usr/bin/python3
"""Where does a shaped link go idle during an all-reduce? A diagnostic, not a benchmark.

  experiments/allreduce/link_trace.py [--impl pico|gloo] [--sizes-mb 64] [--iters 2] [--cc cubic]
                                      [--pico-args "--connections 1 --segment-bytes 1048576 --curve on"]
                                      [--relay] [--gro]                                        (root)

Sets up bench.py's shaped network (4 namespaces, 100 Mbit/s tbf egress), runs one arm with
a sampler per host that reads eth0's tx_bytes every 2 ms, and pico's per-message trace
(allreduce_bench --trace: wall-clock time of every message processed). For every timed
all-reduce it prints the skew of the ranks' starts and ends and, per host, the share of the
time its link was busy (tx bytes / rate) and the idle stretches over 4 ms (time between two
samples minus the time their bytes took on the wire). bench.py's RESULTS.md section quotes
what this found.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

SAMPLER = r"""
import sys, time
f = open('/sys/class/net/eth0/statistics/tx_bytes'); out = open(sys.argv[1], 'w'); end = time.time() + float(sys.argv[2])
while time.time() < end:
    f.seek(0); out.write(f"{time.time():.4f} {f.read().strip()}\n"); time.sleep(0.002)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["pico", "gloo"], default="pico")
    ap.add_argument("--pico-args", default="--connections 1 --segment-bytes 1048576 --curve on")
    ap.add_argument("--sizes-mb", default="64")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--cc", default="cubic")
    ap.add_argument("--relay", action="store_true")
    ap.add_argument("--gro", action="store_true")
    ap.add_argument("--rate-mbit", type=int, default=100)
    ap.add_argument("--delay-ms", type=int, default=25)
    ap.add_argument("--build", default=os.path.join(bench.ROOT, "build"))
    a = ap.parse_args()
    bench.args = argparse.Namespace(build=a.build, delay_ms=a.delay_ms, rate_mbit=a.rate_mbit)
    rate = a.rate_mbit * 1e6 / 8
    relays, rtt, goodput, ring = bench.netns_setup(a.rate_mbit, a.relay, a.gro, a.cc, 5)
    print(f"{a.cc}: one stream {goodput:.1f} Mbit/s, ring of 4 streams {ring[1]:.1f} Mbit/s", flush=True)
    work = tempfile.mkdtemp(prefix="pico-link-trace-")
    try:
        samplers = [subprocess.Popen(["ip", "netns", "exec", ns, bench.PYTHON, "-c", SAMPLER, f"{work}/tx{i}.txt", "900"])
                    for i, ns in enumerate(bench.NS)]
        hosts = [f"10.77.0.{i + 1}" for i in range(4)]
        arm = bench.Arm(a.impl, a.impl, a.pico_args.split() if a.impl == "pico" else [],
                        netns=[(ns, "eth0") for ns in bench.NS])
        cmds, outs = arm.commands(work, 4, a.sizes_mb, a.iters, 1, hosts)
        if a.impl == "pico":
            for r, c in enumerate(cmds):
                c += ["--trace", f"{work}/trace{r}.txt"]
        t_start = time.time()
        bench.run_ranks(cmds, 900)
        for s in samplers:
            s.terminate()
            s.wait()
        # Gloo's JSON has no start time: its iterations are placed end to end from the last one.
        runs = {}
        for o in outs:
            for line in open(o):
                j = json.loads(line)
                runs.setdefault((j["bytes"], j["iter"]), []).append((j.get("start_unix"), j["seconds"]))
        samples = [[tuple(float(x) for x in line.split()) for line in open(f"{work}/tx{i}.txt")] for i in range(4)]
        for (size, it), v in sorted(runs.items()):
            t = max(s for _, s in v)
            print(f"{size >> 20} MB, iteration {it}: {t:.3f} s, busbw {size / t * 1.5 / rate * 100:.1f}% of the link")
            if v[0][0] is None:
                continue
            st, en = min(x[0] for x in v), max(x[0] + x[1] for x in v)
            print(f"  starts spread over {max(x[0] for x in v) - st:.3f} s, ends over "
                  f"{en - min(x[0] + x[1] for x in v):.3f} s")
            for i in range(4):
                rows = [x for x in samples[i] if st <= x[0] <= en]
                idle = [(round(t0 - st, 3), round((t1 - t0) - (b1 - b0) / rate, 3))
                        for (t0, b0), (t1, b1) in zip(rows, rows[1:]) if (t1 - t0) - (b1 - b0) / rate > 0.004]
                busy = (rows[-1][1] - rows[0][1]) / rate / (rows[-1][0] - rows[0][0])
                print(f"  host {i}: link busy {busy * 100:.1f}%; idle > 4 ms: {sum(x[1] for x in idle):.3f} s in "
                      f"{len(idle)} stretches (start s, length s) {idle[:8]}{' …' if len(idle) > 8 else ''}")
        if a.impl == "pico":
            for r in range(4):
                times = [float(line.split()[0]) for line in open(f"{work}/trace{r}.txt") if float(line.split()[0]) >= t_start]
                gaps = sorted((b - x for x, b in zip(times, times[1:])), reverse=True)[:5]
                print(f"  rank {r}: {len(times)} messages processed; longest gaps between them (s) "
                      f"{[round(g, 3) for g in gaps]}")
    finally:
        bench.netns_teardown(relays)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
