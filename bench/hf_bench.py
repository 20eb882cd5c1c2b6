#!/usr/bin/env python3
"""HF transformers bf16 decode throughput on Qwen3-8B shapes with random weights: the peer
row beside `fp8d bench --synthetic qwen3-8b` (run both in the same device call).

Each row: B random prompts of --context tokens, then greedy generate() of exactly --tokens
new tokens (eos disabled), timed with a device sync; tok/s = B * tokens / seconds (the
prompt's prefill is included, as in a user's call). One warm-up generate per
implementation first.

usage: hf_bench.py [--batch 1,16] [--tokens 128] [--context 32] [--attn eager,sdpa]"""
import argparse
import json
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

QWEN3_8B = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
                rope_theta=1000000.0, tie_word_embeddings=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--attn", default="eager,sdpa")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = Qwen3Config(**QWEN3_8B)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.time()
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).eval()
    torch.cuda.synchronize()
    print(f"hf: Qwen3-8B shapes, random bf16 weights, built on the GPU in {time.time() - t0:.1f} s; "
          f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'attn':>6} {'batch':>6} {'tokens':>8} {'seconds':>9} {'tok/s':>9} {'peak GB':>8}")
    rows = []
    for impl in a.attn.split(","):
        model.config._attn_implementation = impl
        for bs in [int(x) for x in a.batch.split(",")]:
            ids = torch.randint(0, cfg.vocab_size, (bs, a.context), device="cuda")
            kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0,
                      attention_mask=torch.ones_like(ids))
            with torch.no_grad():
                model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                t = time.time()
                out = model.generate(ids, max_new_tokens=a.tokens, min_new_tokens=a.tokens, **kw)
                torch.cuda.synchronize()
                secs = time.time() - t
            n = out.shape[1] - a.context
            assert n == a.tokens, n
            peak = torch.cuda.max_memory_allocated() / 1e9
            print(f"{impl:>6} {bs:>6} {bs * n:>8} {secs:>9.3f} {bs * n / secs:>9.1f} {peak:>8.2f}")
            rows.append(dict(attn=impl, batch=bs, tokens=bs * n, seconds=secs,
                             tok_s=bs * n / secs, peak_gb=peak))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
