#!/usr/bin/python3
"""All-reduce benchmark: pico's ZeroMQ ring (CURVE on and off) against Gloo (c10d), in one run.

  experiments/allreduce/bench.py loopback [--reps 5] [--sizes-mb 1,4,16,64,256]
  experiments/allreduce/bench.py shaped   [--reps 3] [--rate-mbit 100] [--delay-ms 25] [--cc cubic,bbr]
                                          [--shaped-arms 1/1024,1/256] [--gro off] [--section shaped]  (root)
  experiments/allreduce/bench.py links    [--cc cubic,bbr] [--ring-seconds 20]               (root)

loopback: W=4 ranks on 127.0.0.1. Each repetition runs every arm once (pico CURVE off,
pico CURVE on, Gloo), in a rotating order, each arm being W fresh processes that all-reduce
every size `iters` times after a barrier. An iteration's time is the slowest rank's; a
cell is the median over all iterations of all repetitions.

shaped: four network namespaces joined by veth pairs to a bridge, each host's egress shaped
with `tc tbf` (this kernel has no netem); then the same with a delaying relay (delay_relay,
built next to allreduce_bench) between each host and the bridge that holds every frame the
host sends for --delay-ms. Reports bus bandwidth (S/t · 2(n−1)/n, REFERENCE.md "Bounds") as
a fraction of the link rate, once per TCP congestion control (--cc, set on the hosts' routes),
next to the goodput of four plain TCP streams in a ring (the ceiling: each host's egress
carries its data and its ACKs for the data it receives). The script creates and deletes its
namespaces and sends traffic only inside them.

links: only the link checks (one stream; four streams in a ring), per --cc, GRO off and on.

Both write their section of RESULTS.md (next to this file) and print it. Needs the build
(`cmake --build build --target allreduce_bench delay_relay`) and Debian's python3 with torch.
"""
import argparse
import collections
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PYTHON = "/usr/bin/python3"


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) // (1 << 20)
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, Linux {platform.release()}"


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def run_ranks(cmds, timeout):
    """Starts one process per command, waits for all; raises with their output on failure."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    deadline = time.time() + timeout
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError(f"ranks did not finish within {timeout} s: {cmds[0]}")
        outs.append(out)
    failed = [(p.returncode, c, out) for p, out, c in zip(procs, outs, cmds) if p.returncode != 0]
    if failed:
        report = "\n".join(f"--- rank {cmds.index(c)} exited {rc}: {' '.join(c)}\n{out[-2500:]}" for rc, c, out in failed)
        raise RuntimeError(f"{len(failed)} rank(s) failed\n{report}")


def collect(paths):
    """{bytes: [iteration time = max over ranks]} from the ranks' JSON lines."""
    per = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in paths:
        for line in open(path):
            j = json.loads(line)
            per[j["bytes"]][j["iter"]].append(j["seconds"])
    return {b: [max(v) for v in its.values()] for b, its in per.items()}


class Arm:
    def __init__(self, name, kind, extra=(), netns=None):
        self.name, self.kind, self.extra, self.netns = name, kind, list(extra), netns

    def commands(self, work, world, sizes, iters, warmup, hosts):
        cmds, outs = [], []
        for r in range(world):
            out = os.path.join(work, f"rank{r}.jsonl")
            outs.append(out)
            if self.kind == "pico":
                c = [os.path.join(args.build, "experiments/allreduce/allreduce_bench"), "--rank", str(r), "--world",
                     str(world), "--dir", work, "--out", out, "--sizes-mb", sizes, "--iters", str(iters), "--warmup",
                     str(warmup), "--bind-host", hosts[r]] + self.extra
            else:
                c = [PYTHON, os.path.join(HERE, "gloo_bench.py"), "--rank", str(r), "--world", str(world), "--dir",
                     work, "--out", out, "--sizes-mb", sizes, "--iters", str(iters), "--warmup", str(warmup)]
            if self.netns:
                env = ["env", f"GLOO_SOCKET_IFNAME={self.netns[r][1]}"] if self.kind == "gloo" else []
                c = ["ip", "netns", "exec", self.netns[r][0]] + env + c
            cmds.append(c)
        return cmds, outs


def bench(arms, world, sizes, iters, warmup, reps, hosts, timeout):
    results = {a.name: collections.defaultdict(list) for a in arms}
    for rep in range(reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]
        for arm in order:
            work = tempfile.mkdtemp(prefix="pico-allreduce-")
            try:
                cmds, outs = arm.commands(work, world, sizes, iters, warmup, hosts)
                run_ranks(cmds, timeout)
                for b, times in collect(outs).items():
                    results[arm.name][b].extend(times)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            med = {b >> 20: round(statistics.median(t) * 1e3, 1) for b, t in results[arm.name].items()}
            print(f"  rep {rep + 1}/{reps} {arm.name}: median ms so far {med}", flush=True)
    return results


def fmt_ms(t):
    return f"{t * 1e3:.1f}" if t >= 0.01 else f"{t * 1e3:.2f}"


def write_section(title, body):
    path = os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else "# All-reduce benchmarks\n"
    start = text.find(f"<!-- {title} -->")
    block = f"<!-- {title} -->\n{body.rstrip()}\n<!-- /{title} -->\n"
    if start >= 0:
        end = text.find(f"<!-- /{title} -->", start)
        text = text[:start] + block + text[end + len(f"<!-- /{title} -->\n"):]
    else:
        text = text.rstrip() + "\n\n" + block
    open(path, "w").write(text)
    print(body)


# ---- loopback -----------------------------------------------------------------------------

def loopback():
    world = 4
    pico = ["--connections", str(args.connections), "--segment-bytes", str(args.segment_bytes), "--io-threads",
            str(args.io_threads)]
    ipc = ["--ipc-dir", "/tmp/pico-bench-ipc"]
    arms = [Arm("gloo", "gloo"), Arm("pico-plain", "pico", pico + ["--curve", "off"]),
            Arm("pico-curve", "pico", pico + ["--curve", "on"]),
            Arm("pico-ipc-plain", "pico", pico + ipc + ["--curve", "off"]),
            Arm("pico-ipc-curve", "pico", pico + ipc + ["--curve", "on"])]
    load0 = loadavg()
    t0 = time.time()
    res = bench(arms, world, args.sizes_mb, args.iters, args.warmup, args.reps, ["127.0.0.1"] * world, 1800)
    load1 = loadavg()
    rows = []
    for b in sorted(res["gloo"]):
        g, p, c, ip, ic = (statistics.median(res[a][b])
                           for a in ("gloo", "pico-plain", "pico-curve", "pico-ipc-plain", "pico-ipc-curve"))
        busbw = lambda t: b / t * 2 * (world - 1) / world / 1e9
        rows.append(f"| {b / (1 << 20):g} MB | {fmt_ms(g)} | {fmt_ms(p)} | {g / p:.2f}× | {fmt_ms(c)} | {c / p:.2f}× | "
                    f"{fmt_ms(ip)} | {g / ip:.2f}× | {fmt_ms(ic)} | {ic / ip:.2f}× | "
                    f"{busbw(g):.2f} / {busbw(p):.2f} / {busbw(ip):.2f} |")
    n_it = len(res["gloo"][next(iter(res["gloo"]))])
    body = f"""## Loopback: 4 ranks on 127.0.0.1, fp32

Median time of one all-reduce (the slowest rank's), over {n_it} iterations per cell
({args.reps} repetitions × {args.iters} iterations, {args.warmup} warm-ups each; arms interleaved in
rotating order). Gloo is c10d's ProcessGroupGloo (torch {torch_version()}) from Python.
pico: ZeroMQ ring, {args.connections} connection(s) per neighbour, {args.segment_bytes >> 10} KiB
segments, {args.io_threads} libzmq I/O thread(s) per rank, CRC-32C on every message; "CURVE off"
is the benchmark-only plaintext mode.

| size | Gloo ms | pico TCP, CURVE off | Gloo/pico | pico TCP, CURVE on | CURVE cost | pico ipc, CURVE off | Gloo/pico | pico ipc, CURVE on | CURVE cost | busbw GB/s Gloo / TCP / ipc (CURVE off) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Times in ms. Gloo/pico > 1 means pico is faster. CURVE cost = time with CURVE / time without.
"TCP" is pico over 127.0.0.1 like Gloo; "ipc" is pico over Unix sockets (ZmqOptions::ipc_dir,
for members on one machine), which Gloo does not offer.
Machine: {machine()}: a shared, noisy 2-core box (other sessions compile on the same 2 cores):
load average {load0} at start, {load1} at the end; the run took {time.time() - t0:.0f} s.
Command: `{' '.join(sys.argv)}`
"""
    write_section("loopback", body)


def torch_version():
    return sh(f"{PYTHON} -c 'import torch; print(torch.__version__)'").stdout.strip()


# ---- shaped links (network namespaces) ---------------------------------------------------------

NS = [f"pico-h{i}" for i in range(4)]
SW = "pico-sw"


def netns_setup(rate_mbit, relay, gro=False, cc=None, ring_seconds=6):
    netns_teardown()
    sh(f"ip netns add {SW}")
    sh(f"ip netns exec {SW} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
    sh(f"ip -n {SW} link add br0 type bridge")
    sh(f"ip -n {SW} link set br0 up")
    sh(f"ip -n {SW} link set lo up")
    relays = []
    for i, ns in enumerate(NS):
        sh(f"ip netns add {ns}")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        sh(f"ip -n {ns} link set lo up")
        if not relay:
            # host eth0 <-> switch port
            sh(f"ip link add eth0 netns {ns} type veth peer name p{i} netns {SW}")
        else:
            # host eth0 <-> r0 (relay side, in the host) … relay … up0 <-> switch port
            sh(f"ip link add eth0 netns {ns} type veth peer name r0 netns {ns}")
            sh(f"ip link add up0 netns {ns} type veth peer name p{i} netns {SW}")
            for dev in ("r0", "up0"):
                sh(f"ip -n {ns} link set {dev} up promisc on")
                sh(f"ip netns exec {ns} ethtool -K {dev} tso off gso off gro off tx off rx off", check=False)
        sh(f"ip -n {ns} addr add 10.77.0.{i + 1}/24 dev eth0")
        sh(f"ip -n {ns} link set eth0 up")
        if cc:
            # The hosts' TCP congestion control, on the route to the other hosts (this kernel lets
            # a namespace set neither net.ipv4.tcp_congestion_control nor load another default).
            sh(f"ip -n {ns} route replace 10.77.0.0/24 dev eth0 proto kernel scope link src 10.77.0.{i + 1} "
               f"congctl {cc}")
        # Frames of at most 1514 bytes with complete checksums: what a real NIC puts on the wire,
        # and what the relay can copy as they are.
        sh(f"ip netns exec {ns} ethtool -K eth0 tso off gso off gro off tx off rx off", check=False)
        if gro:
            # A NIC's receive offload (on by default on real hosts), so that the stack may ACK
            # coalesced batches rather than every second frame. Measured: no fewer ACKs at
            # 100 Mbit/s (frames arrive 120 µs apart; RESULTS.md), hence off by default.
            sh(f"ip netns exec {ns} ethtool -K eth0 gro on")
        sh(f"ip -n {SW} link set p{i} master br0")
        sh(f"ip -n {SW} link set p{i} up")
        # Egress of the host shaped to the link rate. burst = 32 KB (~2.6 ms at 100 Mbit/s)
        sh(f"ip netns exec {ns} tc qdisc add dev eth0 root tbf rate {rate_mbit}mbit burst 32kb latency 50ms")
        if relay:
            exe = os.path.join(args.build, "experiments/allreduce/delay_relay")
            log = open(os.path.join(tempfile.gettempdir(), f"pico-relay-{i}.log"), "w")
            relays.append(subprocess.Popen(["ip", "netns", "exec", ns, exe, "r0", "up0", str(args.delay_ms)],
                                           stdout=log, stderr=subprocess.STDOUT))
    time.sleep(0.5)
    for p in relays:
        if p.poll() is not None:
            raise RuntimeError("delay_relay exited; see /tmp/pico-relay-*.log")
    # Connectivity and RTT check (after ARP has settled), and one TCP stream's goodput.
    sh(f"ip netns exec {NS[0]} ping -c 2 -i 0.2 -q 10.77.0.2", check=False)
    out = sh(f"ip netns exec {NS[0]} ping -c 5 -i 0.2 -q 10.77.0.2", check=False).stdout
    rtt = out.strip().splitlines()[-1] if out else "?"
    goodput = link_check()
    ring = ring_check(ring_seconds)
    return relays, rtt, goodput, ring


def link_check(seconds=5):
    """Goodput of one TCP stream pico-h0 → pico-h1 over the emulated link, in Mbit/s."""
    server = subprocess.Popen(["ip", "netns", "exec", NS[1], PYTHON, "-c", TCP_SINK], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    sh(f"ip netns exec {NS[0]} {PYTHON} -c '{TCP_SOURCE}' {seconds}")
    out, _ = server.communicate(timeout=30)
    return float(out.strip())


TCP_SINK = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.2", 5999)); s.listen(1); c, _ = s.accept()
n, t0, t1 = 0, None, None
while True:
    b = c.recv(1 << 20)
    if not b: break
    if t0 is None: t0 = time.time()
    n += len(b); t1 = time.time()
print(n * 8 / (t1 - t0) / 1e6)
"""
TCP_SOURCE = """import socket, sys, time
s = socket.create_connection(("10.77.0.2", 5999)); b = bytes(1 << 20); end = time.time() + float(sys.argv[1])
while time.time() < end: s.sendall(b)
s.close()"""


def tx_counters(what="bytes"):
    """Each host's eth0 transmit counter `what` (bytes, packets), in host order."""
    return [int(sh(f"ip netns exec {ns} cat /sys/class/net/eth0/statistics/tx_{what}").stdout) for ns in NS]


def ring_check(seconds=6):
    """Four TCP streams at once, pico-h{i} → pico-h{i+1 mod 4}: every host sends and receives,
    so its shaped egress carries its data and its ACKs, as in a ring all-reduce. Returns
    (min, median) goodput over the streams in Mbit/s (bytes in the last seconds − 1 s) and
    the payload share of the egress bytes of the hosts (IP+TCP+Ethernet headers and ACKs
    take the rest)."""
    sinks = [subprocess.Popen(["ip", "netns", "exec", NS[i], PYTHON, "-c", RING_SINK, f"10.77.0.{i + 1}",
                               str(seconds)], stdout=subprocess.PIPE, text=True) for i in range(4)]
    time.sleep(0.5)
    tx0 = tx_counters()
    sources = [subprocess.Popen(["ip", "netns", "exec", NS[i], PYTHON, "-c", RING_SOURCE, f"10.77.0.{(i + 1) % 4 + 1}",
                                 str(seconds)]) for i in range(4)]
    for p in sources:
        p.wait(timeout=seconds + 30)
    res = [json.loads(p.communicate(timeout=30)[0]) for p in sinks]
    tx1 = tx_counters()
    rates = [r["mbit"] for r in res]
    payload = sum(r["total"] for r in res) / max(1, sum(b - a for a, b in zip(tx0, tx1)))
    return min(rates), statistics.median(rates), payload


RING_SINK = """
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5998)); s.listen(1); c, _ = s.accept()
t0 = time.time(); mark = t0 + 1.0; n, total, tm, t1 = 0, 0, None, None
while True:
    b = c.recv(1 << 20)
    if not b: break
    total += len(b); now = time.time()
    if now >= mark:
        if tm is None: tm = now
        else: n += len(b); t1 = now
print(json.dumps({"mbit": n * 8 / (t1 - tm) / 1e6, "total": total}))
"""
RING_SOURCE = """import socket, sys, time
s = socket.create_connection((sys.argv[1], 5998)); b = bytes(1 << 20); end = time.time() + float(sys.argv[2])
while time.time() < end: s.sendall(b)
s.close()"""


def netns_teardown(relays=()):
    for p in relays:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    for ns in NS + [SW]:
        sh(f"ip netns del {ns}", check=False)


def shaped():
    world = 4
    hosts = [f"10.77.0.{i + 1}" for i in range(world)]
    nets = [(ns, "eth0") for ns in NS]
    sizes = args.sizes_mb
    rate = args.rate_mbit * 1e6 / 8  # bytes/s
    load0, t0 = loadavg(), time.time()
    sections = []
    for cc in args.cc:
        for label, relay in (("no added delay", False), (f"+{args.delay_ms} ms one-way (delaying relay)", True)):
            relays, rtt, goodput, ring = netns_setup(args.rate_mbit, relay, args.gro == "on", cc, args.ring_seconds)
            try:
                arms = [Arm("gloo", "gloo", netns=nets)]
                for k, seg in args.shaped_arms:
                    arms.append(Arm(f"pico-c{k}-s{seg}", "pico", ["--connections", str(k), "--segment-bytes",
                                                                  str(seg << 10), "--curve", "on"], netns=nets))
                print(f"{cc}, {label}: one stream {goodput:.1f} Mbit/s, ring of 4 streams {ring[1]:.1f}", flush=True)
                res = bench(arms, world, sizes, args.shaped_iters, 1, args.reps, hosts, 3600)
            finally:
                netns_teardown(relays)
            rows = []
            for b in sorted(res["gloo"]):
                cells = []
                for a in arms:
                    t = statistics.median(res[a.name][b])
                    busbw = b / t * 2 * (world - 1) / world
                    cells.append(f"{t:.2f} s, {busbw / rate * 100:.1f}%")
                rows.append(f"| {b >> 20} MB | " + " | ".join(cells) + " |")
            head = " | ".join(["Gloo"] + [f"pico, {k} conn., {seg} KiB segments" for k, seg in args.shaped_arms])
            sections.append(f"""### {cc}, {label}

ping {hosts[0]} → {hosts[1]}: `{rtt}`; TCP goodput (Python, {cc}): one stream h0 → h1 (5 s) {goodput:.1f} Mbit/s
= {goodput / args.rate_mbit * 100:.1f}% of the link; four streams at once in a ring h0 → h1 → h2 → h3 → h0
({args.ring_seconds} s, every host sending and receiving, as in an all-reduce) {ring[1]:.1f} Mbit/s median,
{ring[0]:.1f} slowest = **{ring[1] / args.rate_mbit * 100:.1f}%**, the ceiling for busbw; payload is
{ring[2] * 100:.1f}% of the bytes the hosts put on their links (headers and ACKs the rest).

| size | {head} |
| --- | {' | '.join(['---'] * len(arms))} |
{chr(10).join(rows)}
""")
    tag = "" if args.section == "shaped" else f" ({args.section})"
    body = f"""## Shaped links{tag}: 4 hosts, {args.rate_mbit} Mbit/s egress each, fp32

Cells: median time of one all-reduce (slowest rank) over {args.reps} repetitions × {args.shaped_iters}
iterations (pico with CURVE on, "K conn." = connections per neighbour), and bus bandwidth busbw = (S/t)·2(n−1)/n as a fraction of the {args.rate_mbit} Mbit/s link
(REFERENCE.md "Bounds"; 100% is the ring bound; TCP/IP over Ethernet with MTU 1500 carries at most
1448/1514 ≈ 95.6% of the line rate as payload, less the receiver's ACKs, which share each host's
egress in a ring). Gloo: c10d ProcessGroupGloo (torch {torch_version()}).

How the links are emulated: network namespaces pico-h0..h3, each with a veth `eth0`
(10.77.0.1-4/24, MTU 1500, TSO/GSO/GRO and checksum offload off) joined to a bridge in
namespace pico-sw; each host's egress shaped by `tc qdisc add dev eth0 root tbf rate
{args.rate_mbit}mbit burst 32kb latency 50ms`. TCP congestion control of the hosts: set on
their route to each other (`ip route replace 10.77.0.0/24 dev eth0 … congctl CC`), for
pico, Gloo and the Python streams alike; this machine's own default is
{sh("sysctl -n net.ipv4.tcp_congestion_control").stdout.strip()}, Linux's default is cubic.
Delay: this kernel has no netem, so
`delay_relay` (experiments/allreduce/delay_relay.cpp) runs inside each host namespace
between eth0's veth peer and a second veth to the bridge, holding every frame the host
sends for {args.delay_ms} ms (frames towards the host pass at once): host-to-host one-way
delay {args.delay_ms} ms, RTT {2 * args.delay_ms} ms.

{chr(10).join(sections)}
Machine: {machine()}: a shared, noisy 2-core box (other sessions compile on the same
2 cores; load average {load0} at the start, {loadavg()} at the end; the run took {time.time() - t0:.0f} s).
Command: `{' '.join(sys.argv)}`
"""
    write_section(args.section, body)


def links():
    """Only the link checks (one stream; four streams in a ring) for each --cc, GRO off and on."""
    for cc in args.cc:
        for gro in (False, True):
            relays, rtt, goodput, ring = netns_setup(args.rate_mbit, False, gro, cc, args.ring_seconds)
            netns_teardown(relays)
            print(f"{cc}, GRO {'on' if gro else 'off'}: one stream {goodput:.1f} Mbit/s; ring of 4 streams "
                  f"({args.ring_seconds} s) median {ring[1]:.1f}, slowest {ring[0]:.1f} Mbit/s; payload "
                  f"{ring[2] * 100:.1f}% of egress bytes (load {loadavg()})", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["loopback", "shaped", "links"])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sizes-mb", default=None)
    p.add_argument("--connections", type=int, default=1, help="loopback: pico connections per neighbour")
    p.add_argument("--io-threads", type=int, default=2)
    p.add_argument("--segment-bytes", type=int, default=1 << 20)
    p.add_argument("--rate-mbit", type=int, default=100)
    p.add_argument("--delay-ms", type=int, default=25)
    p.add_argument("--shaped-iters", type=int, default=3)
    p.add_argument("--cc", default=["cubic", "bbr"], type=lambda s: s.split(","),
                   help="shaped/links: the hosts' TCP congestion control(s), comma-separated; one table each")
    p.add_argument("--gro", choices=["on", "off"], default="off", help="shaped: GRO on the hosts' eth0")
    p.add_argument("--ring-seconds", type=int, default=20, help="duration of the ring-of-streams link check")
    p.add_argument("--section", default="shaped",
                   help="shaped: the RESULTS.md section to (re)write, so that a diagnostic run keeps the main one")
    p.add_argument("--shaped-arms", default=[(1, 1024), (1, 256)],
                   type=lambda s: [tuple(int(v) for v in a.split("/")) for a in s.split(",")],
                   help="pico arms as CONNECTIONS/SEGMENT_KIB, comma-separated (CURVE on)")
    args = p.parse_args()
    if args.sizes_mb is None:
        args.sizes_mb = "1,4,16,64,256" if args.mode == "loopback" else "32,64"
    {"loopback": loopback, "shaped": shaped, "links": links}[args.mode]()
