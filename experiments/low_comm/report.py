#!/usr/bin/env python3
"""experiments/low_comm/report.py OUT ARM... — RESULTS.md and the val_loss*.png plots from the runs."""
import json
import os
import platform
import subprocess
import sys

out, arms = sys.argv[1], sys.argv[2:]


def load(arm):
    steps, rounds = [], []
    with open(f"{out}/runs/{arm}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            (rounds if "round" in r else steps).append(r)
    return steps, rounds


data = {arm: load(arm) for arm in arms if os.path.exists(f"{out}/runs/{arm}/metrics.jsonl")}
if "ddp" not in data:
    sys.exit("the ddp arm is the baseline; run it first")

rows = []
curves = {}
for arm, (steps, rounds) in data.items():
    c0 = [r for r in steps if r.get("contributor", 0) == 0]
    val = [(sum(x["tokens"] for x in steps if x["step"] == r["step"]), r["val_loss"]) for r in c0 if "val_loss" in r]
    curves[arm] = val
    sent = max(r["bytes_sent"] for r in c0)
    total_tokens = sum(max(x["tokens"] for x in steps if x.get("contributor", 0) == w)
                       for w in {x.get("contributor", 0) for x in steps})
    rows.append((arm, val[-1][1], min(v for _, v in val), sent, total_tokens, len(rounds)))

base_loss = dict((r[0], r[1]) for r in rows)["ddp"]
base_bytes = dict((r[0], r[3]) for r in rows)["ddp"]

# The arms the issue names go in val_loss.png; tuning arms, controls and diagnostics in
# val_loss_more.png, each with ddp for reference.
MAIN = ["ddp", "diloco_h100", "diloco_h100_uint8", "demo", "diloco_h50", "diloco_h500"]
# ddp is black; no other arm repeats it or another arm's colour (17 arms in all).
COLORS = ["#000000", "#1f77b4", "#17becf", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]


def plot(png, title, names):
    dat = png[:-4] + ".dat"
    with open(dat, "w") as f:
        for arm in names:
            f.write(f"# {arm}\n")
            for t, v in curves[arm]:
                f.write(f"{t} {v}\n")
            f.write("\n\n")
    cmd = "; ".join(
        ["set terminal pngcairo size 900,560 noenhanced", f"set output '{png}'", f"set title '{title}'",
         "set xlabel 'tokens (all contributors)'", "set ylabel 'validation loss'", "set grid", "set key top right",
         "set yrange [*:6]",
         "plot " + ", ".join(f"'{dat}' index {i} with linespoints lc rgb '{COLORS[i % len(COLORS)]}' "
                             f"pt {1 + i % 13} title '{arm}'" for i, arm in enumerate(names))])
    subprocess.run(["gnuplot", "-e", cmd], check=True)


main = [a for a in data if a in MAIN]
more = ["ddp"] + [a for a in data if a not in MAIN]
plot(f"{out}/val_loss.png", "validation loss against tokens (4 contributors, King James Bible)", main)
if len(more) > 1:
    plot(f"{out}/val_loss_more.png", "tuning arms, controls and diagnostics (ddp for reference)", more)

# Hand-written analysis between these markers survives a new report.
NOTES_BEGIN, NOTES_END = "<!-- notes: hand-written, kept by report.py -->", "<!-- /notes -->"
notes = ""
if os.path.exists(f"{out}/RESULTS.md"):
    old = open(f"{out}/RESULTS.md").read()
    if NOTES_BEGIN in old and NOTES_END in old:
        notes = old[old.index(NOTES_BEGIN):old.index(NOTES_END) + len(NOTES_END)] + "\n\n"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
with open(f"{out}/RESULTS.md", "w") as f:
    f.write("# Low-communication training: DiLoCo and DeMo against data parallel\n\n")
    f.write("Four contributors (`--local-workers 4`, in-process collectives that report the bytes a ring "
            "all-reduce / all-gather puts on the wire) train the 2.0M-parameter demo model on the King James "
            "Bible with the same token budget per arm (`base.yaml`). `bytes sent` is per contributor, payload "
            "bytes (message headers excluded), over the whole run.\n\n")
    f.write("| arm | final val loss | vs ddp | best val loss | bytes sent per contributor | fewer bytes than ddp | outer rounds |\n")
    f.write("| --- | --- | --- | --- | --- | --- | --- |\n")
    for arm, final, best, sent, tokens, nrounds in rows:
        fewer = f"{base_bytes / sent:,.1f}×" if sent > 0 else "— (sends nothing)"
        f.write(f"| {arm} | {final:.4f} | {100 * (final - base_loss) / base_loss:+.2f}% | {best:.4f} | "
                f"{sent / 1e6:,.1f} MB | {fewer} | {nrounds} |\n")
    f.write("\n![validation loss](val_loss.png)\n\n")
    if len(more) > 1:
        f.write("![tuning arms, controls and diagnostics](val_loss_more.png)\n\n")
    by = {r[0]: r for r in rows}
    f.write("## Targets\n\n")
    def target(arm, what, max_loss_pct, min_ratio):
        if arm not in by:
            f.write(f"- {arm}: not run\n")
            return
        _, final, _, sent, _, _ = by[arm]
        loss_pct = 100 * (final - base_loss) / base_loss
        ratio = base_bytes / sent
        ok_loss = max_loss_pct is None or loss_pct <= max_loss_pct
        ok_bytes = ratio >= min_ratio
        f.write(f"- {arm} ({what}): val loss {loss_pct:+.2f}% vs ddp"
                + (f" (target ≤ +{max_loss_pct}%: {'met' if ok_loss else 'NOT met'})" if max_loss_pct is not None else "")
                + f"; {ratio:,.4f}× fewer bytes (target ≥ {min_ratio}×: {'met' if ok_bytes else 'NOT met, short by ' + format(100 * (1 - ratio / min_ratio), '.4f') + '%'})\n")
    target("diloco_h100", "DiLoCo H=100", 2, 100)
    target("diloco_h100_uint8", "DiLoCo H=100 + uint8", 2, 400)
    target("demo", "DeMo, fp16 values", None, 50)
    if "diloco_h100_olr1" in by:
        target("diloco_h100_olr1", "DiLoCo H=100, outer lr 1.0", 2, 100)
    if "demo_lr3e-3" in by:
        target("demo_lr3e-3", "DeMo, fp16 values, lr 3e-3", None, 50)
    f.write("\n")
    f.write(notes)
    f.write(f"Machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), shared with other work.\n\n")
    f.write("Command: `experiments/low_comm/run.sh` (arms: " + " ".join(arms) + ")\n")
print(open(f"{out}/RESULTS.md").read())
