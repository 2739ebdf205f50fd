#!/usr/bin/env python3
"""Independent checks of pico checkpoints with h5py (docs/CHECKPOINT_FORMAT.md).

  checkpoint_reference.py layout FILE OUT.json     every group/dataset/attribute as h5py sees it
  checkpoint_reference.py eval FILE TEXT OUT.json  mean next-token loss over TEXT (pico eval's definition)
  checkpoint_reference.py ld FILE OUT.json         recompute /learning_dynamics from /model

The model is rebuilt from /config@yaml and /model with its own pico → Llama name table and
the Hugging Face-convention forward of llama_reference.py (float64); the tokenizer is the
sentencepiece model embedded in /tokenizer/model.
"""
import json
import math
import os
import sys

import h5py
import numpy as np
import sentencepiece as spm
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_reference  # noqa: E402

BLOCK = {"attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
         "attention.v_proj": "self_attn.v_proj", "attention.o_proj": "self_attn.o_proj",
         "swiglu.w_0": "mlp.gate_proj", "swiglu.w_1": "mlp.up_proj", "swiglu.w_2": "mlp.down_proj",
         "attention_norm": "input_layernorm", "swiglu_norm": "post_attention_layernorm"}


def hf_name(pico):
    if pico == "embedding_proj.weight":
        return "model.embed_tokens.weight"
    if pico == "output_norm.weight":
        return "model.norm.weight"
    if pico == "de_embedding_proj.weight":
        return "lm_head.weight"
    parts = pico.split(".")
    assert parts[0] == "layers" and parts[-1] == "weight", pico
    return f"model.layers.{parts[1]}.{BLOCK['.'.join(parts[2:-1])]}.weight"


def hf_module(pico_module):  # "layers.0.attention.v_proj" → "model.layers.0.self_attn.v_proj"
    parts = pico_module.split(".")
    return f"model.layers.{parts[1]}.{BLOCK['.'.join(parts[2:])]}"


def load_model(f):
    cfg = yaml.safe_load(f["config"].attrs["yaml"])["model"]
    hf_cfg = {"hidden_size": cfg["d_model"], "num_attention_heads": cfg["attention_n_heads"],
              "num_key_value_heads": cfg["attention_n_kv_heads"], "rms_norm_eps": float(cfg["norm_eps"]),
              "rope_theta": float(cfg["position_emb_theta"]), "num_hidden_layers": cfg["n_layers"]}
    W = {hf_name(k): torch.from_numpy(v[()]).double() for k, v in f["model"].items()}
    return cfg, hf_cfg, W


def attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def layout(path, out):
    rec = {"datasets": {}, "groups": {}}
    with h5py.File(path, "r") as f:
        rec["groups"]["/"] = {k: attr_value(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            key = "/" + name
            if isinstance(obj, h5py.Group):
                rec["groups"][key] = {k: attr_value(v) for k, v in obj.attrs.items()}
            else:
                data = obj[()]
                rec["datasets"][key] = {
                    "shape": list(obj.shape), "dtype": str(obj.dtype), "chunks": list(obj.chunks or []),
                    "fletcher32": bool(obj.fletcher32),
                    "sum": float(np.asarray(data, dtype=np.float64).sum()),
                    "attrs": {k: attr_value(v) for k, v in obj.attrs.items()}}
        f.visititems(visit)
        rec["order"] = {g: list(f[g].keys()) for g in ("model",) if g in f}
    json.dump(rec, open(out, "w"))


def eval_text(path, text_path, out):
    with h5py.File(path, "r") as f:
        cfg, hf_cfg, W = load_model(f)
        sp = spm.SentencePieceProcessor(model_proto=f["tokenizer/model"][()].tobytes())
    ids = sp.encode(open(text_path, encoding="utf-8").read())  # no BOS/EOS
    win = cfg["max_seq_len"] + 1
    total, count, windows = 0.0, 0, 0
    with torch.no_grad():
        for b in range(0, len(ids), win):
            w = ids[b:b + win]
            if len(w) < 2:
                continue
            t = torch.tensor([w], dtype=torch.long)
            logits = llama_reference.forward(W, hf_cfg, t[:, :-1], torch.float64)
            loss = torch.nn.functional.cross_entropy(logits[0], t[0, 1:], reduction="sum")
            total += loss.item()
            count += len(w) - 1
            windows += 1
    json.dump({"tokens": count, "loss": total / count, "ppl": math.exp(total / count), "windows": windows,
               "text_tokens": len(ids)}, open(out, "w"))


def learning_dynamics(path, out):
    res = {}
    with h5py.File(path, "r") as f:
        cfg, hf_cfg, W = load_model(f)
        ld = f["learning_dynamics"]
        for split in ("train", "val"):
            if split not in ld or "input_ids" not in ld[split]:
                continue
            g = ld[split]
            inputs = torch.from_numpy(g["input_ids"][()]).long()
            targets = torch.from_numpy(g["target_ids"][()]).long()
            modules = list(g["weights"].keys())
            Wg = {k: v.clone().requires_grad_(True) for k, v in W.items()}
            rec = {}
            logits = llama_reference.forward(Wg, hf_cfg, inputs, torch.float64, record=rec)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            params = [Wg[hf_module(m) + ".weight"] for m in modules]
            grads = torch.autograd.grad(loss, params)
            pos = int(g.attrs["sequence_idx"])
            worst = {"weights": 0.0, "gradients": 0.0, "activations": 0.0}
            for m, grad in zip(modules, grads):
                w_saved = torch.from_numpy(g["weights"][m][()]).double()
                worst["weights"] = max(worst["weights"], (w_saved - W[hf_module(m) + ".weight"]).abs().max().item())
                gs = torch.from_numpy(g["gradients"][m][()]).double()
                worst["gradients"] = max(worst["gradients"],
                                         ((gs - grad).abs().max() / grad.abs().max().clamp_min(1e-30)).item())
                act = rec[hf_module(m)][:, pos, :].detach()
                a_saved = torch.from_numpy(g["activations"][m][()]).double()
                assert a_saved.shape == act.shape, (a_saved.shape, act.shape)
                worst["activations"] = max(worst["activations"],
                                           ((a_saved - act).abs().max() / act.abs().max().clamp_min(1e-30)).item())
            res[split] = {"modules": modules, "loss": loss.item(), "saved_loss": float(g.attrs["loss"]),
                          "max_rel_err": worst, "num_samples": int(inputs.shape[0])}
    json.dump(res, open(out, "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd = sys.argv[1]
    {"layout": layout, "eval": eval_text, "ld": learning_dynamics}[cmd](*sys.argv[2:])
