#!/usr/bin/env python3
"""PyTorch eager reference for experiments/inner_throughput: the pico-decoder written the way
a PyTorch user would (nanoGPT / HF Llama style, plain modules, torch.optim.AdamW,
clip_grad_norm_), timed step by step like bench_inner. Prints one JSON object.

Written from the architecture description (RMSNorm -> GQA attention with half-split RoPE ->
residual; RMSNorm -> SwiGLU -> residual; RMSNorm -> output projection), not from pico's code.
Same shapes, fp32, same optimizer settings (betas 0.9/0.95, eps 1e-8, weight decay on
matrices only, global-norm clip 1.0), data read from the same pico shards.

  /usr/bin/python3 bench_torch.py --config small.yaml --data DIR [--steps 20] [--warmup 3]
      [--threads 2] [--foreach 0|1] [--profile-steps N] [--peak]
"""
import argparse
import glob
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_yaml_model(path):
    # The benchmark configs are flat two-level YAML; avoid a yaml dependency.
    model, batch, section = {}, None, None
    for raw in open(path):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if indent == 0:
            section = key
        elif section == "model" and value:
            model[key] = float(value) if ("." in value or "e" in value) else int(value)
        elif key == "batch_size":
            batch = int(value)
    return model, batch


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h, self.kv = c["d_model"], c["attention_n_heads"], c["attention_n_kv_heads"]
        self.hd = d // self.h
        self.q_proj = nn.Linear(d, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv != self.h:  # repeat_kv, as in HF Llama
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
            att = att.masked_fill(mask, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.h * self.hd))


class SwiGLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h = c["d_model"], c["activation_hidden_dim"]
        self.w_0 = nn.Linear(d, h, bias=False)
        self.w_1 = nn.Linear(d, h, bias=False)
        self.w_2 = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.w_2(F.silu(self.w_0(x)) * self.w_1(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.attention = Attention(c)
        self.swiglu_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.swiglu = SwiGLU(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return x + self.swiglu(self.swiglu_norm(x))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embedding_proj = nn.Embedding(c["vocab_size"], c["d_model"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.output_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.de_embedding_proj = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        hd = c["d_model"] // c["attention_n_heads"]
        T = c["max_seq_len"]
        inv = c["position_emb_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)
        std_resid = 0.02 / math.sqrt(2 * c["n_layers"])
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            resid = name.endswith("o_proj.weight") or name.endswith("w_2.weight")
            nn.init.normal_(p, 0.0, std_resid if resid else 0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.embedding_proj(idx)
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.de_embedding_proj(self.output_norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def load_tokens(data_dir):
    # pico shard: 64-byte header (magic, version, bytes per token at offset 12, count at 16).
    parts = []
    for path in sorted(glob.glob(os.path.join(data_dir, "train_*.bin"))):
        raw = open(path, "rb").read()
        assert raw[:8] == b"PICOTOK\0", path
        width = int.from_bytes(raw[12:16], "little")
        n = int.from_bytes(raw[16:24], "little")
        parts.append(np.frombuffer(raw, dtype=np.uint16 if width == 2 else np.uint32, count=n, offset=64))
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def sgemm_gflops(n, repeats):
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = 1e30
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--data")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--foreach", type=int, default=1)
    ap.add_argument("--profile-steps", type=int, default=0)
    ap.add_argument("--peak", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if a.peak:
        out["sgemm_gflops"] = {"blas_1024": sgemm_gflops(1024, 10), "blas_2048": sgemm_gflops(2048, 4)}
        if not a.config:
            print(json.dumps(out))
            return
    c, batch = load_yaml_model(a.config)
    T = c["max_seq_len"]
    torch.manual_seed(42)
    model = Decoder(c)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=bool(a.foreach))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    tokens = load_tokens(a.data)
    gen = torch.Generator().manual_seed(0)

    def batch_at():
        starts = torch.randint(0, tokens.numel() - T - 1, (batch,), generator=gen)
        rows = torch.stack([tokens[s : s + T + 1] for s in starts.tolist()])
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def step():
        x, y = batch_at()
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss.item()

    model.train()
    for _ in range(a.warmup):
        step()
    times, losses = [], []
    for _ in range(a.steps):
        t = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
    tps = batch * T
    out.update({"num_params": sum(p.numel() for p in model.parameters()), "tokens_per_step": tps})
    if times:
        out.update({"step_s": times, "tok_per_s": tps / float(np.median(times)), "loss_first": losses[0],
                    "loss_last": losses[-1]})
    if a.profile_steps > 0:
        from torch.autograd.profiler import profile
        with profile() as prof:
            t = time.perf_counter()
            for _ in range(a.profile_steps):
                step()
            total = time.perf_counter() - t
        self_s = {}
        for e in prof.key_averages():
            self_s[e.key] = self_s.get(e.key, 0.0) + e.self_cpu_time_total / 1e6 / a.profile_steps
        out["profile"] = {"step_s": total / a.profile_steps, "self_s": self_s}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
