#!/usr/bin/env python3
"""Independent reference for `pico export --format hf`: a minimal LlamaForCausalLM forward.

Usage: llama_reference.py EXPORT_DIR TOKENS.npy OUT_LOGITS.npy [float32|float64]

Reads EXPORT_DIR/model.safetensors (the safetensors format parsed here with json + numpy,
no `safetensors` package) and EXPORT_DIR/config.json, and runs the forward pass the way
Hugging Face transformers' modeling_llama.py does — written from its conventions, not from
pico's code:
  * LlamaRotaryEmbedding: inv_freq = 1 / theta^(arange(0, d, 2) / d) in float32,
    emb = cat(freqs, freqs), q·cos + rotate_half(q)·sin with rotate_half(x) = [-x2, x1];
  * LlamaRMSNorm: variance in float32, weight * normed.to(input dtype);
  * grouped-query attention with repeat_kv, scaling head_dim^-0.5, causal mask, softmax in
    float32; MLP down(silu(gate(x)) * up(x)); untied lm_head.
Writes the logits (B, T, V) as float32 .npy.
"""
import json
import sys

import numpy as np
import torch

SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
                      "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[base + begin:base + end], dtype=SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out, header.get("__metadata__", {})


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotary_cos_sin(head_dim, theta, T, dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    pos = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rms_norm(x, weight, eps):
    input_dtype = x.dtype
    h = x.to(torch.float32) if input_dtype != torch.float64 else x
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


def repeat_kv(x, n_rep):
    b, kv, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def forward(W, cfg, tokens, dtype=torch.float32, record=None):
    """tokens (B, T) int64 → logits (B, T, V). W: HF names → tensors. record: dict that
    receives the outputs (B, T, out) of every v_proj, o_proj and down_proj by HF module name."""
    F = torch.nn.functional
    W = {k: v.to(dtype) if v.is_floating_point() else v for k, v in W.items()}
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", C // H)
    eps = cfg["rms_norm_eps"]
    B, T = tokens.shape
    x = F.embedding(tokens, W["model.embed_tokens.weight"])
    cos, sin = rotary_cos_sin(hd, cfg["rope_theta"], T, dtype)
    mask = torch.full((T, T), torch.finfo(dtype).min, dtype=dtype).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = F.linear(h, W[p + "self_attn.q_proj.weight"]).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, W[p + "self_attn.k_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        v_out = F.linear(h, W[p + "self_attn.v_proj.weight"])
        v = v_out.view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
        scores = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
        a = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, H * hd)
        o_out = F.linear(a, W[p + "self_attn.o_proj.weight"])
        x = x + o_out
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        d_out = F.linear(F.silu(F.linear(h, W[p + "mlp.gate_proj.weight"])) * F.linear(h, W[p + "mlp.up_proj.weight"]),
                         W[p + "mlp.down_proj.weight"])
        x = x + d_out
        if record is not None:
            record[p + "self_attn.v_proj"] = v_out
            record[p + "self_attn.o_proj"] = o_out
            record[p + "mlp.down_proj"] = d_out
    x = rms_norm(x, W["model.norm.weight"], eps)
    return F.linear(x, W["lm_head.weight"])


def main(export_dir, tokens_path, out_path, dtype_name="float32"):
    cfg = json.load(open(f"{export_dir}/config.json"))
    assert cfg["architectures"] == ["LlamaForCausalLM"], cfg["architectures"]
    assert cfg["tie_word_embeddings"] is False
    W, _ = load_safetensors(f"{export_dir}/model.safetensors")
    tokens = torch.from_numpy(np.load(tokens_path)).long()
    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    torch.set_num_threads(1)
    with torch.no_grad():
        logits = forward(W, cfg, tokens, dtype)
    np.save(out_path, logits.to(torch.float32).numpy())


if __name__ == "__main__":
    main(*sys.argv[1:])
