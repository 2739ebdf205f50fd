#!/usr/bin/env python3
"""Independent numpy/scipy references for pico analyze (docs/ANALYSIS.md).

  analysis_reference.py metrics IN_DIR OUT.json
      For every a_<name>.npy in IN_DIR: gini, hoyer, norms, per, condition number.
      For every pair x_<name>.npy / y_<name>.npy: linear CKA and PWCCA.
  analysis_reference.py run SPEC.json OUT.json
      Reads the checkpoints named in SPEC with h5py and computes the rows pico analyze
      should write (components built here from the raw datasets; ov_circuit per
      pico-analyze's src/components/ov_circuit.py; drift / pseudo-gradient cosine per the
      DiLoCo checkpoint layout).

Written from the published definitions (pico-analyze src/metrics/*.py, Kornblith et al.
2019 for CKA, Morcos et al. 2018 + the SVCCA code's procedure for PWCCA), in float64, with
numpy / scipy.linalg routines that pico does not use (LAPACK via numpy, np.cov, pinv,
scipy.linalg.svdvals).
"""
import glob
import json
import math
import os
import sys

import numpy as np
import scipy.linalg


# ------------------------------------------------------------------------------------------
# metrics

def gini(x):
    a = np.sort(np.abs(np.asarray(x, dtype=np.float64).ravel()))
    n = a.size
    if n == 0 or a.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * a) / (n * a.sum()))


def hoyer(x):
    a = np.asarray(x, dtype=np.float64).ravel()
    n = a.size
    l2 = np.linalg.norm(a)
    if n <= 1 or l2 == 0:
        return float("nan")
    return float((math.sqrt(n) - np.abs(a).sum() / l2) / (math.sqrt(n) - 1))


def svals(x):
    return scipy.linalg.svdvals(np.asarray(x, dtype=np.float64))


def per(x):
    s = svals(x)
    if s.sum() <= 0:
        return float("nan")
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(-np.sum(p * np.log(p))) / len(s))


def condition_number(x):
    s = svals(x)
    if s.max() <= 0:
        return float("nan")
    if s.min() <= 0:
        return float("inf")
    return float(s.max() / s.min())


def norms(x):
    x = np.asarray(x, dtype=np.float64)
    return {
        "norm_frobenius": float(np.linalg.norm(x, "fro")),
        "norm_nuclear": float(np.linalg.norm(x, "nuc")),
        "norm_inf": float(np.max(np.abs(x))),
    }


def single_metrics(x):
    out = {"gini": gini(x), "hoyer": hoyer(x), "per": per(x), "condition_number": condition_number(x)}
    out.update(norms(x))
    return out


def cka(x, y):
    """Kornblith et al.'s feature-space linear CKA (biased HSIC)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    num = np.linalg.norm(x.T @ y) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


def pwcca(x, y, eps=1e-6):
    """The SVCCA procedure (get_cca_similarity + compute_pwcca) with eps applied.

    x: (n, p), y: (n, q). Like the SVCCA code this adds each neuron's mean back to the
    directions; callers pass centered data, where that term is zero (pico's definition)."""
    a1 = np.asarray(x, dtype=np.float64).T  # (p, n) neurons x datapoints
    a2 = np.asarray(y, dtype=np.float64).T
    p, q = a1.shape[0], a2.shape[0]
    assert p < a1.shape[1] and q < a2.shape[1], "needs more datapoints than neurons"
    cov = np.cov(a1, a2)
    sxx, sxy, syy = cov[:p, :p], cov[:p, p:], cov[p:, p:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    if xmax == 0 or ymax == 0:
        return float("nan")
    sxx = sxx / xmax
    syy = syy / ymax
    sxy = sxy / np.sqrt(xmax * ymax)
    xi = np.abs(np.diag(sxx)) >= eps
    yi = np.abs(np.diag(syy)) >= eps
    sxx = sxx[xi][:, xi] + eps * np.eye(xi.sum())
    syy = syy[yi][:, yi] + eps * np.eye(yi.sum())
    sxy = sxy[xi][:, yi]

    def invsqrt(m):
        w, v = np.linalg.eigh(np.linalg.pinv(m))
        return v @ np.diag(np.sqrt(w)) @ v.T

    u, s, vt = np.linalg.svd(invsqrt(sxx) @ sxy @ invsqrt(syy))
    m1 = a1.mean(1, keepdims=True)
    m2 = a2.mean(1, keepdims=True)
    if xi.sum() <= yi.sum():
        dirns = u.T @ (a1[xi] - m1[xi]) + m1[xi]
        acts = a1[xi]
    else:
        dirns = vt @ (a2[yi] - m2[yi]) + m2[yi]
        acts = a2[yi]
    P, _ = np.linalg.qr(dirns.T)
    w = np.sum(np.abs(P.T @ acts.T), axis=1)
    w = w / w.sum()
    return float(np.sum(w * np.abs(s)))


def pwcca_centered(x, y, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return pwcca(x - x.mean(0, keepdims=True), y - y.mean(0, keepdims=True), eps)


# ------------------------------------------------------------------------------------------
# components (pico-analyze src/components/*.py)

def ov_heads(kind, n_heads, n_kv, d_model, wv, wo, av=None, gv=None, go=None):
    hd = d_model // n_heads
    heads = []
    for h in range(n_heads):
        kv = h // (n_heads // n_kv)
        V = wv[kv * hd:(kv + 1) * hd, :] if wv is not None else None  # (hd, C)
        O = wo[:, h * hd:(h + 1) * hd]  # (C, hd)
        if kind == "weights":
            heads.append(V @ O)
        elif kind == "activations":
            heads.append(av[:, kv * hd:(kv + 1) * hd] @ O.T)
        else:
            heads.append(O @ gv[kv * hd:(kv + 1) * hd, :] + go[:, h * hd:(h + 1) * hd] @ V)
    return heads + [np.concatenate(heads, axis=1)]


def read_ld(f, split, kind, module):
    key = f"learning_dynamics/{split}/{kind}/{module}"
    if key in f:
        return f[key][()].astype(np.float64)
    assert kind == "weights", key
    return f[f"model/{module}.weight"][()].astype(np.float64)


def component_tensors(f, comp, split, layer, shape):
    kind = comp["data_type"]
    if comp["component_name"] == "simple":
        return [(None, read_ld(f, split, kind, f"layers.{layer}.{comp['layer_suffix']}"))]
    v = f"layers.{layer}.{comp.get('value_layer', 'attention.v_proj')}"
    o = f"layers.{layer}.{comp.get('output_layer', 'attention.o_proj')}"
    wo = read_ld(f, split, "weights", o)
    args = dict(n_heads=shape["n_heads"], n_kv=shape["n_kv_heads"], d_model=shape["d_model"], wo=wo)
    if kind == "activations":
        heads = ov_heads(kind, wv=None, av=read_ld(f, split, "activations", v), **args)
    elif kind == "weights":
        heads = ov_heads(kind, wv=read_ld(f, split, "weights", v), **args)
    else:
        heads = ov_heads(kind, wv=read_ld(f, split, "weights", v), gv=read_ld(f, split, "gradients", v),
                         go=read_ld(f, split, "gradients", o), **args)
    return [(h if h < len(heads) - 1 else None, t) for h, t in enumerate(heads)]


def layer_of(param):
    parts = param.split(".")
    if parts[0] == "layers":
        return parts[1]
    return param[:-7] if param.endswith(".weight") else param


def run_spec(spec):
    import h5py
    rows = []
    shape = spec["shape"]
    for m in spec.get("metrics", []):
        name = m["metric"]
        for comp in m["components"]:
            label = comp["layer_suffix"] if comp["component_name"] == "simple" else comp["component_name"]
            for layer in comp["layers"]:
                target = None
                if "target_file" in m:
                    with h5py.File(m["target_file"], "r") as tf:
                        target = component_tensors(tf, comp, m["data_split"], layer, shape)
                for step, path in m["files"]:
                    with h5py.File(path, "r") as f:
                        tensors = component_tensors(f, comp, m["data_split"], layer, shape)
                    for i, (head, t) in enumerate(tensors):
                        if name == "cka":
                            v = cka(t, target[i][1])
                        elif name == "pwcca":
                            v = pwcca_centered(t, target[i][1])
                        else:
                            v = single_metrics(t)[name]
                        rows.append({"metric": name, "component": label, "data_type": comp["data_type"],
                                     "data_split": m["data_split"], "layer": str(layer), "step": step,
                                     "head": "" if head is None else str(head), "value": v})
    dec = spec.get("decentralized")
    if dec:
        for step, files in dec["steps"]:  # files: [[w, path], ...]
            deltas = {}
            for w, path in files:
                with h5py.File(path, "r") as f:
                    d2, g2 = {}, {}
                    for p in f["model"]:
                        th = f[f"optim/outer/theta_g/{p}"][()].astype(np.float64)
                        x = f[f"model/{p}"][()].astype(np.float64)
                        for key in (layer_of(p), "all"):
                            d2[key] = d2.get(key, 0.0) + float(np.sum((x - th) ** 2))
                            g2[key] = g2.get(key, 0.0) + float(np.sum(th ** 2))
                    for key in d2:
                        rows.append({"metric": "drift", "layer": key, "step": step, "contributor": str(w),
                                     "value": math.sqrt(d2[key])})
                        rows.append({"metric": "drift_relative", "layer": key, "step": step, "contributor": str(w),
                                     "value": math.sqrt(d2[key]) / math.sqrt(g2[key])})
                    if "pseudo_gradient" in f and len(f["pseudo_gradient"]) > 0 and step in dec["round_steps"]:
                        deltas[w] = {p: f[f"pseudo_gradient/{p}"][()].astype(np.float64) for p in f["pseudo_gradient"]}
            ws = sorted(deltas)
            for ai in range(len(ws)):
                for bi in range(ai + 1, len(ws)):
                    a, b = deltas[ws[ai]], deltas[ws[bi]]
                    groups = {}
                    for p in a:
                        for key in (layer_of(p), "all"):
                            g = groups.setdefault(key, [0.0, 0.0, 0.0])
                            g[0] += float(np.sum(a[p] * b[p]))
                            g[1] += float(np.sum(a[p] ** 2))
                            g[2] += float(np.sum(b[p] ** 2))
                    for key, (dot, na, nb) in groups.items():
                        rows.append({"metric": "pseudo_gradient_cosine", "layer": key, "step": step,
                                     "contributor": f"{ws[ai]}-{ws[bi]}", "value": dot / math.sqrt(na * nb)})
    return rows


def main():
    cmd = sys.argv[1]
    if cmd == "metrics":
        in_dir, out = sys.argv[2], sys.argv[3]
        res = {}
        for path in sorted(glob.glob(os.path.join(in_dir, "a_*.npy"))):
            res[os.path.basename(path)[2:-4]] = single_metrics(np.load(path))
        pairs = {}
        for path in sorted(glob.glob(os.path.join(in_dir, "x_*.npy"))):
            name = os.path.basename(path)[2:-4]
            x, y = np.load(path), np.load(os.path.join(in_dir, f"y_{name}.npy"))
            entry = {"cka": cka(x, y)}
            if x.shape[1] < x.shape[0] and y.shape[1] < y.shape[0]:
                entry["pwcca"] = pwcca_centered(x, y)
                entry["pwcca_eps0"] = pwcca_centered(x, y, eps=0.0) if np.linalg.matrix_rank(x) == x.shape[1] else None
            pairs[name] = entry
        with open(out, "w") as f:
            json.dump({"single": res, "pairs": pairs}, f)
    elif cmd == "run":
        with open(sys.argv[2]) as f:
            spec = json.load(f)
        with open(sys.argv[3], "w") as f:
            json.dump(run_spec(spec), f)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
