#!/usr/bin/python3
"""Would a bidirectional ring lift the shaped-link ceiling? (root; writes the "bidi" section of RESULTS.md)

  experiments/allreduce/bidi_check.py [--cc cubic] [--reps 3] [--seconds 15] [--delay-ms 0]

In a ring all-reduce each host's shaped egress carries its data to the right and the ACKs
for the data it receives from the left: the ACKs are pure ACK frames, because nothing flows
back on that connection. If both directions of one connection carried data (a second ring
running leftwards over the same connections, as a bidirectional ring would), every data
frame could carry the ACK for the other direction. This measures whether that lifts the
goodput on the emulated links of bench.py (same namespaces, tbf shaping and congestion
control), first with plain kernel TCP streams, then over libzmq (the transport pico uses;
DEALER → ROUTER, one connection per neighbour pair, 512 KiB messages each way, no CURVE):

  streams-uni   host i sends to i+1 on its own connection (the ring of streams of bench.py)
  streams-bidi  one connection per neighbour pair, data both ways on it
  zmq-uni       host i's DEALER sends to i+1's ROUTER
  zmq-bidi      the same connections, the ROUTER also sends back to the DEALER

Each cell: the sum of the four hosts' received goodput (after the first second) divided by
4 × the link rate, the median over the repetitions; the modes alternate within each
repetition. Needs Debian's python3-zmq.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (namespaces, shaping, the RESULTS.md writer)

PEER_STREAMS = r'''
import json, socket, sys, threading, time
me, secs, bidi = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "bidi"
right = (me + 1) % 4
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((f"10.77.0.{me + 1}", 5997)); ls.listen(1)
time.sleep(0.5)
out = socket.create_connection((f"10.77.0.{right + 1}", 5997))
inc, _ = ls.accept()
got = {}
def send(s):
    b = bytes(1 << 20); end = time.time() + secs
    while time.time() < end: s.sendall(b)
    s.shutdown(socket.SHUT_WR)
def recv(s, name):
    mark = time.time() + 1.0; n, tm, t1 = 0, None, None
    while True:
        b = s.recv(1 << 20)
        if not b: break
        now = time.time()
        if now >= mark:
            if tm is None: tm = now
            else: n += len(b); t1 = now
    got[name] = (n, tm, t1)
th = [threading.Thread(target=send, args=(out,)), threading.Thread(target=recv, args=(inc, "left"))]
if bidi:
    th += [threading.Thread(target=send, args=(inc,)), threading.Thread(target=recv, args=(out, "right"))]
for t in th: t.start()
for t in th: t.join()
mbit = sum(n * 8 / (t1 - t0) / 1e6 for n, t0, t1 in got.values() if t1)
print(json.dumps({"mbit_in": mbit}))
'''

PEER_ZMQ = r'''
import json, sys, time, zmq
me, secs, bidi = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "bidi"
right, left = (me + 1) % 4, (me - 1) % 4
ctx = zmq.Context(2)
r = ctx.socket(zmq.ROUTER); r.setsockopt(zmq.ROUTER_MANDATORY, 1)
d = ctx.socket(zmq.DEALER); d.setsockopt(zmq.ROUTING_ID, f"L{me}".encode())
for s in (r, d):
    s.setsockopt(zmq.SNDHWM, 4); s.setsockopt(zmq.RCVHWM, 8); s.setsockopt(zmq.LINGER, 0)
r.bind(f"tcp://10.77.0.{me + 1}:6000")
d.connect(f"tcp://10.77.0.{right + 1}:6000")
d.send(b"hello")
while r.recv_multipart()[1] != b"hello": pass
time.sleep(1.0)
buf = bytes((1 << 20) // 2 if bidi else 1 << 20)
lid = f"L{left}".encode()
t0 = time.time(); mark, end = t0 + 1.0, t0 + secs
per = {"left": [0, None, None], "right": [0, None, None]}
def count(side, m):
    now = time.time()
    if mark <= now < end:
        c = per[side]
        if c[1] is None: c[1] = now
        else: c[0] += len(m); c[2] = now
poller = zmq.Poller(); poller.register(r, zmq.POLLIN | zmq.POLLOUT); poller.register(d, zmq.POLLIN | zmq.POLLOUT)
while time.time() < end + 1.0:
    ev = dict(poller.poll(20))
    sending = time.time() < end
    if sending and ev.get(d, 0) & zmq.POLLOUT:
        try: d.send(buf, zmq.NOBLOCK)
        except zmq.Again: pass
    if sending and bidi and ev.get(r, 0) & zmq.POLLOUT:
        try: r.send_multipart([lid, buf], zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError): pass
    while ev.get(r, 0) & zmq.POLLIN:
        try: count("left", r.recv_multipart(zmq.NOBLOCK)[1])
        except zmq.Again: break
    while ev.get(d, 0) & zmq.POLLIN:
        try: count("right", d.recv(zmq.NOBLOCK))
        except zmq.Again: break
mbit = sum(n * 8 / (t1 - t0) / 1e6 for n, t0, t1 in per.values() if t1)
print(json.dumps({"mbit_in": mbit}))
'''

MODES = [("streams-uni", PEER_STREAMS, "uni"), ("streams-bidi", PEER_STREAMS, "bidi"),
         ("zmq-uni", PEER_ZMQ, "uni"), ("zmq-bidi", PEER_ZMQ, "bidi")]


def run_mode(code, arg):
    b0, p0 = bench.tx_counters("bytes"), bench.tx_counters("packets")
    procs = [subprocess.Popen(["ip", "netns", "exec", bench.NS[i], bench.PYTHON, "-c", code, str(i), str(args.seconds),
                               arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=args.seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"peer failed: {err[-2000:]}")
        outs.append(json.loads(out)["mbit_in"])
    b1, p1 = bench.tx_counters("bytes"), bench.tx_counters("packets")
    frames = sum(b - a for a, b in zip(p0, p1))
    wire = sum(b - a for a, b in zip(b0, b1))
    return sum(outs) / (4 * args.rate_mbit) * 100, frames, wire


def main():
    res = {m[0]: [] for m in MODES}
    frames = {m[0]: [] for m in MODES}
    load0, t0 = bench.loadavg(), time.time()
    relays, rtt, _, _ = bench.netns_setup(args.rate_mbit, args.delay_ms > 0, False, args.cc, 2)
    try:
        for rep in range(args.reps):
            order = MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]
            for name, code, arg in order:
                pct, nframes, wire = run_mode(code, arg)
                res[name].append(pct)
                # Frames per MB put on the links: pure ACKs raise it above the ~660 of full 1514-byte data frames.
                frames[name].append(nframes / (wire / 1e6))
                print(f"  rep {rep + 1}/{args.reps} {name}: {pct:.2f}% of the link, "
                      f"{frames[name][-1]:.0f} frames per MB of egress", flush=True)
    finally:
        bench.netns_teardown(relays)
    rows = "\n".join(f"| {name} | {statistics.median(res[name]):.2f}% | "
                     f"{' / '.join(f'{v:.2f}' for v in res[name])} | {statistics.median(frames[name]):.0f} |"
                     for name, _, _ in MODES)
    delay = f"+{args.delay_ms} ms one way (delaying relay)" if args.delay_ms else "no added delay"
    body = f"""## Would a bidirectional ring lift the ceiling? ({args.cc}, {delay})

In a ring the receivers' pure ACKs share each host's egress with its data. If data flowed
both ways on each connection (a second ring running leftwards over the same connections),
data frames could carry the ACKs. `bidi_check.py` measures the four hosts' summed goodput
as a share of the links (the same namespaces, `tbf` shaping and congestion control as the
shaped section), with plain kernel TCP and over libzmq (DEALER → ROUTER, one connection per
neighbour pair, 512 KiB messages each way, no CURVE); modes alternate within each of
{args.reps} repetitions of {args.seconds} s. ping h0 → h1: `{rtt}`.

| mode | goodput, median | per repetition | frames per MB of egress |
| --- | --- | --- | --- |
{rows}

Machine: {bench.machine()}; load average {load0} at the start, {bench.loadavg()} at the end; the run took
{time.time() - t0:.0f} s. Command: `{' '.join(sys.argv)}`
"""
    bench.write_section(f"bidi-{args.cc}-{args.delay_ms}ms", body)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cc", default="cubic")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--rate-mbit", type=int, default=100)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--build", default=os.path.join(bench.ROOT, "build"))
    args = p.parse_args()
    bench.args = args  # netns_setup reads build and delay_ms from it
    main()
