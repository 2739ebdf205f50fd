#!/usr/bin/env python3
"""Independent reference for the pico-decoder forward pass (python3-torch, float64).

Reads DIR/config.json, DIR/<param>.npy for every parameter and DIR/tokens.npy, writes
DIR/reference_logits.npy. Written from the architecture description, not from pico's code:
RMSNorm -> grouped-query attention with half-split rotary embeddings (Hugging Face Llama's
layout) -> residual; RMSNorm -> SwiGLU -> residual; final RMSNorm; output projection.
"""
import json
import math
import sys

import numpy as np
import torch


def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    # x: (B, H, T, D); pairs (i, i + D/2) rotate by angle t * theta^(-2i/D)
    B, H, T, D = x.shape
    half = D // 2
    inv = theta ** (-(torch.arange(half, dtype=torch.float64) * 2) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def main(d):
    cfg = json.load(open(f"{d}/config.json"))
    W = lambda name: torch.from_numpy(np.load(f"{d}/{name}.npy")).double()
    tok = torch.from_numpy(np.load(f"{d}/tokens.npy")).long()
    C, H, KV = cfg["d_model"], cfg["attention_n_heads"], cfg["attention_n_kv_heads"]
    hd = C // H
    eps, theta = cfg["norm_eps"], cfg["position_emb_theta"]
    B, T = tok.shape
    x = W("embedding_proj.weight")[tok]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        h = rms_norm(x, W(p + "attention_norm.weight"), eps)
        q = (h @ W(p + "attention.q_proj.weight").T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ W(p + "attention.k_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ W(p + "attention.v_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q, theta), rope(k, theta)
        out = torch.empty(B, H, T, hd, dtype=torch.float64)
        for head in range(H):
            kv = head // (H // KV)
            s = q[:, head] @ k[:, kv].transpose(-1, -2) / math.sqrt(hd)
            s = s.masked_fill(mask, float("-inf"))
            out[:, head] = torch.softmax(s, -1) @ v[:, kv]
        x = x + out.transpose(1, 2).reshape(B, T, C) @ W(p + "attention.o_proj.weight").T
        h = rms_norm(x, W(p + "swiglu_norm.weight"), eps)
        g = h @ W(p + "swiglu.w_0.weight").T
        u = h @ W(p + "swiglu.w_1.weight").T
        x = x + (g * torch.sigmoid(g) * u) @ W(p + "swiglu.w_2.weight").T
    x = rms_norm(x, W("output_norm.weight"), eps)
    logits = x @ W("de_embedding_proj.weight").T
    np.save(f"{d}/reference_logits.npy", logits.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
