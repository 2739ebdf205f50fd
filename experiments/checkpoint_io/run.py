#!/usr/bin/env python3
"""Checkpoint save cost against the disk's raw write speed, measured in the same run.

  /usr/bin/python3 experiments/checkpoint_io/run.py [--pico build/pico] [--data /tmp/kjv4096]

For configs/demo.yaml (~2M parameters) and experiments/checkpoint_io/config_20m.yaml
(~20M), trains a few steps saving a checkpoint every k steps and reads pico's own log:
  * snapshot: how long training was paused per save (host copies + learning dynamics),
  * write: the background write (HDF5 + Fletcher32), fsync + rename, SHA-256 of the file,
  * file size,
and the raw disk speed with `dd ... conv=fsync` (random bytes, same directory). It also
times the same number of steps with saving only at the end, so the cost a save adds to
training wall time is measured, not assumed. Writes RESULTS.md and results.json next to
this script (work files under experiments/checkpoint_io/work/, git-ignored).
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(HERE, "work")


def dd_speed(path, mb=256, repeats=3):
    """MB/s of dd from a page-cached random file to `path` with conv=fsync (median)."""
    src = os.path.join(WORK, "random.bin")
    if not os.path.exists(src) or os.path.getsize(src) != mb << 20:
        with open(src, "wb") as f:
            f.write(os.urandom(mb << 20))
    speeds = []
    for _ in range(repeats):
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # into the page cache
        t0 = time.perf_counter()
        subprocess.run(["dd", f"if={src}", f"of={path}", "bs=1M", "conv=fsync", "status=none"], check=True)
        speeds.append(mb * 1.048576 / (time.perf_counter() - t0))
        os.remove(path)
    return statistics.median(speeds), speeds


def h5py_speed(mbytes, repeats=3):
    """The peer: h5py writing the same number of float32 bytes with Fletcher32 on ~1 MiB
    chunks, then fsync (MB/s, median). Needs python3-h5py."""
    import h5py
    import numpy as np
    a = np.random.default_rng(0).standard_normal(int(mbytes * 1e6) // 4 // 512 * 512, dtype=np.float32).reshape(-1, 512)
    path = os.path.join(WORK, "h5py.h5")
    speeds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=a, chunks=(512, 512), fletcher32=True)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        speeds.append(a.nbytes / 1e6 / (time.perf_counter() - t0))
        os.remove(path)
    return statistics.median(speeds)


def export_check(pico, run, text):
    """Max |pico logits − independent HF-convention reference| for one window of `text`."""
    out = {}
    hf = os.path.join(WORK, f"hf_{run}")
    subprocess.run([pico, "export", "--checkpoint", f"{WORK}/runs/{run}", "--format", "hf", "--output", hf],
                   check=True, capture_output=True)
    prefix = os.path.join(WORK, f"logits_{run}")
    subprocess.run([pico, "eval", "--checkpoint", f"{WORK}/runs/{run}", "--text-file", text, "--save-logits", prefix],
                   check=True, capture_output=True)
    import numpy as np
    mine = np.load(prefix + ".logits.npy").astype(np.float64)
    for dtype in ("float32", "float64"):
        ref_path = os.path.join(WORK, f"ref_{run}_{dtype}.npy")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "python", "llama_reference.py"), hf,
                        prefix + ".tokens.npy", ref_path, dtype], check=True)
        ref = np.load(ref_path).astype(np.float64)
        out[dtype] = float(np.abs(mine - ref).max())
    out["scale"] = float(np.abs(mine).max())
    out["logits"] = list(mine.shape)
    return out


def sha_speed(mb=256):
    src = os.path.join(WORK, "random.bin")
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", src], stdout=subprocess.DEVNULL, check=True)
    return mb * 1.048576 / (time.perf_counter() - t0)


SNAP = re.compile(r"checkpoint step (\d+): snapshot of ([\d.]+) MB in ([\d.]+) ms \(host copies ([\d.]+) ms, "
                  r"learning dynamics ([\d.]+) ms\)")
PARAMS = re.compile(r"model: ([\d.]+)M parameters")
SAVED = re.compile(r"saved (\S+): (\d+) bytes in ([\d.e+-]+) s \(write ([\d.e+-]+) s, fsync\+rename ([\d.e+-]+) s, "
                   r"sha256 ([\d.e+-]+) s\)")
PAUSED = re.compile(r"training paused (\d+) ms in total for them \(snapshots (\d+) ms, waiting for writes (\d+) ms\)")
DONE = re.compile(r"done: (\d+) steps, (\d+) tokens in ")


def train(pico, config, data, run, steps, every, extra=()):
    cmd = [pico, "train", "--config", config, "--overwrite", "--set", f"data.path={data}",
           "--set", f"checkpointing.runs_dir={WORK}/runs", "--set", f"checkpointing.run_name={run}",
           "--set", f"training.max_steps={steps}", "--set", f"checkpointing.save_every_n_steps={every}",
           "--set", "evaluation.every_n_steps=0", "--set", "monitoring.logging.log_level=info",
           "--set", "monitoring.logging.log_every_n_steps=1", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    log = p.stdout + p.stderr
    metrics = [json.loads(line) for line in open(f"{WORK}/runs/{run}/metrics.jsonl")]
    return {"wall_s": wall, "elapsed_s": metrics[-1]["elapsed_s"],
            "step_elapsed": [m["elapsed_s"] for m in metrics],  # log_every_n_steps = 1: one per step
            "snapshots": [(int(s), float(mb), float(ms), float(cp), float(ld)) for s, mb, ms, cp, ld in SNAP.findall(log)],
            "params_M": float(PARAMS.search(log).group(1)),
            "saves": [dict(zip(["path", "bytes", "total", "write", "sync", "sha"],
                               [m[0], int(m[1])] + [float(x) for x in m[2:]])) for m in SAVED.findall(log)],
            "paused": [int(x) for x in (PAUSED.search(log).groups() if PAUSED.search(log) else (0, 0, 0))],
            "cmd": " ".join(cmd)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pico", default=os.path.join(ROOT, "build", "pico"))
    ap.add_argument("--data", default="/tmp/kjv4096")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    if not os.path.exists(os.path.join(a.data, "manifest.json")):
        sys.exit(f"no prepared dataset at {a.data}: pico data prepare --input /tmp/kjv.txt --output {a.data}")

    disk, disk_all = dd_speed(os.path.join(WORK, "dd.bin"))
    sha = sha_speed()
    disk_after = None
    cases = [("demo", os.path.join(ROOT, "configs", "demo.yaml"), 40, 10),
             ("20M", os.path.join(HERE, "config_20m.yaml"), 12, 2)]
    rows, raw = [], {"disk_mb_s": disk, "disk_runs": disk_all, "sha256sum_mb_s": sha, "cases": {}}
    for name, cfg, steps, every in cases:
        with_saves, end_only = [], []
        for r in range(a.repeats):  # interleaved, so drifting machine load hits both alike
            with_saves.append(train(a.pico, cfg, a.data, f"{name}_saves_{r}", steps, every))
            end_only.append(train(a.pico, cfg, a.data, f"{name}_end_{r}", steps, 0))
        # Saves while training runs (the background writer shares the cores with training) and
        # the final save of every run (training is over; the write has the machine to itself).
        during = [s for run in with_saves for s in run["saves"][:-1]]
        final = [run["saves"][-1] for run in with_saves + end_only]
        snaps = [s for run in with_saves for s in run["snapshots"]]
        size = statistics.median(s["bytes"] for s in during + final)
        n_saves = len(with_saves[0]["saves"])
        # Extra training wall time per save: (with saves − end only) / (extra saves).
        extra = statistics.median((w["elapsed_s"] - e["elapsed_s"]) / (n_saves - 1) for w, e in zip(with_saves, end_only))
        med = lambda xs: statistics.median(xs)
        # Within one run (robust to the machine's load drifting between runs): a save pauses
        # step k and its background write competes with step k+1; the cost of a save is
        # (d_k + d_k+1) − 2 × (the run's median duration of steps away from saves).
        within = []
        for run, end in zip(with_saves, end_only):
            el = run["step_elapsed"]
            d = [el[0]] + [b - a for a, b in zip(el, el[1:])]  # d[i] = duration of step i+1
            saved = {s[0] for s in run["snapshots"]}
            ordinary = [d[i] for i in range(1, len(d)) if (i + 1) not in saved and i not in saved]
            if not ordinary:  # a save every 2 steps: every step is next to one; use the paired end-only run
                ee = end["step_elapsed"]
                ordinary = [b - a for a, b in zip(ee, ee[1:])]
            base = med(ordinary)
            within += [d[k - 1] + (d[k] if k < len(d) else base) - 2 * base for k in saved if k < steps]
        row = {
            "config": name, "params_M": with_saves[0]["params_M"], "steps": steps, "every": every,
            "saves_per_run": n_saves, "file_MB": size / 1e6, "tensor_MB": snaps[0][1],
            "snapshot_ms": med(s[2] for s in snaps), "copies_ms": med(s[3] for s in snaps),
            "ld_ms": med(s[4] for s in snaps),
            "during_write_s": med(s["write"] + s["sync"] for s in during),
            "final_write_s": med(s["write"] + s["sync"] for s in final),
            "final_fsync_s": med(s["sync"] for s in final),
            "sha_s": med(s["sha"] for s in during + final),
            "extra_train_s_per_save": extra,
            "within_run_cost_s": med(within),
            "step_s": med(e["elapsed_s"] / steps for e in end_only),
        }
        row["during_MB_s"] = size / 1e6 / row["during_write_s"]
        row["final_MB_s"] = size / 1e6 / row["final_write_s"]
        row["final_vs_disk"] = row["final_MB_s"] / disk
        row["h5py_MB_s"] = h5py_speed(size / 1e6)
        text = os.path.join(WORK, "eval.txt")
        with open(text, "w") as f:  # a slice of the corpus the dataset was made from
            corpus = open("/tmp/kjv.txt").read() if os.path.exists("/tmp/kjv.txt") else "In the beginning " * 400
            f.write(corpus[len(corpus) // 2: len(corpus) // 2 + 6000])
        row["export"] = export_check(a.pico, f"{name}_end_0", text)
        rows.append(row)
        raw["cases"][name] = {"row": row, "with_saves": with_saves, "end_only": end_only}
        print(json.dumps(row), flush=True)
    disk_after, disk_after_all = dd_speed(os.path.join(WORK, "dd.bin"))
    raw["disk_after_mb_s"] = disk_after
    json.dump(raw, open(os.path.join(HERE, "results.json"), "w"), indent=1)

    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    fs_type = subprocess.run(["df", "-T", WORK], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
    lines = [
        "# Checkpoint save cost vs raw disk speed",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}; filesystem of the run directory: {fs_type}. "
        "Shared machine: other people compile on the same cores, so times are medians of "
        f"{a.repeats} interleaved repeats and still noisy.",
        "",
        f"Raw disk write speed, same directory, same run: **{disk:.0f} MB/s** "
        f"(`dd bs=1M conv=fsync` of 256 MiB random bytes, median of {len(disk_all)}: "
        + ", ".join(f"{x:.0f}" for x in disk_all) + f"); again after all runs: {disk_after:.0f} MB/s ("
        + ", ".join(f"{x:.0f}" for x in disk_after_all) + f"). `sha256sum`: {sha:.0f} MB/s.",
        "",
        "| config | params | file | training paused per save: host copies + learning dynamics | write + fsync while "
        "training runs | write + fsync, final save (no training) | vs dd | h5py, same bytes, Fletcher32 + fsync | "
        "SHA-256 | cost to training per save | step time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['params_M']:.1f}M | {r['file_MB']:.1f} MB | **{r['snapshot_ms']:.0f} ms** = "
            f"{r['copies_ms']:.0f} + {r['ld_ms']:.0f} ms | {r['during_write_s']*1e3:.0f} ms ({r['during_MB_s']:.0f} MB/s) | "
            f"{r['final_write_s']*1e3:.0f} ms ({r['final_MB_s']:.0f} MB/s; fsync {r['final_fsync_s']*1e3:.0f} ms) | "
            f"{r['final_vs_disk']*100:.0f}% | {r['h5py_MB_s']:.0f} MB/s | {r['sha_s']*1e3:.0f} ms | "
            f"{r['within_run_cost_s']*1e3:.0f} ms (between runs: {r['extra_train_s_per_save']*1e3:.0f} ms) | "
            f"{r['step_s']*1e3:.0f} ms |")
    lines += [
        "",
        "Columns: *training paused per save* = the time `pico train` is blocked: copying every tensor to host memory, "
        "then the learning-dynamics forward + backward on the fixed train and val batches "
        "(checkpointing.learning_dynamics.batch_size = 8 sequences each). The file is then written by a background "
        "thread: *write + fsync* = HDF5 create/write/close with Fletcher32 on every chunk, fsync of the file, rename, "
        "fsync of the directory; MB/s = file size / that time. While training runs, the writer competes with training "
        "for the 2 cores; the *final save* of each run happens after the last step, so it shows the writer's own "
        "speed. *vs dd* compares that with the raw disk speed above. *SHA-256* (of the finished file, for the "
        "manifest) is also off the training thread. *Cost to training per save* = within each run, (duration of the "
        "step that saves + the next step) − 2 × (median duration of the run's other steps): the pause plus the "
        "background writer's competition for the cores. In brackets the same estimated between runs: (wall time of "
        "N steps saving every k) − (N steps saving only at the end), per extra save — much noisier, as the "
        "machine's load drifts between runs. *h5py* is the peer: the standard "
        "Python HDF5 writer storing the same number of float32 bytes with Fletcher32 on 1 MiB chunks, then fsync, "
        "in the same run.",
        "",
        "HF export of each config's final checkpoint, logits of one window of KJV text (pico `eval --save-logits`) "
        "against tests/python/llama_reference.py (an independent Llama forward under Hugging Face conventions, "
        "reading only model.safetensors + config.json):",
        "",
        "| config | logits | max abs diff, reference in float32 | in float64 | max abs logit |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['config']} | {r['export']['logits']} | {r['export']['float32']:.2e} | {r['export']['float64']:.2e} | "
          f"{r['export']['scale']:.2f} |" for r in rows],
        "",
        "Command: `/usr/bin/python3 experiments/checkpoint_io/run.py` (after `cmake --build build --target pico`). "
        "Each `pico train` run: " + f"`{raw['cases']['demo']['with_saves'][0]['cmd'].replace(WORK, 'WORK')}`.",
    ]
    open(os.path.join(HERE, "RESULTS.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
