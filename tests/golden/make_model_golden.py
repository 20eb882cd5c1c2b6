#!/usr/bin/env python3
"""Tiny random checkpoints and their Hugging Face transformers logits: the references that
tests/test-model-golden.c compares fp8d's ref backend against.

Run on a machine with torch + transformers (CPU is fine):
    python3 tests/golden/make_model_golden.py OUT_DIR
(tests/golden/models/make_model_golden.log is the output of the run that made the
committed fixtures.)

For each model OUT_DIR/<name>/ gets
  config.json        in the Hub's own style (rope_theta / rope_scaling / ... keys), which
                     transformers itself reads back below, so both sides parse the same file
  model.safetensors  written by transformers' save_pretrained
  hf_saved_config.json  the config as transformers 5 writes it back (rope_parameters,
                     layer_types, dtype): a record of how it read config.json
  golden.json        {"transformers": version, "sequences": [{"tokens": [...],
                      "logits": "logitsN.f32"}]}
  logitsN.f32        little-endian float32 [n_tokens, vocab], teacher-forced, fp32, eager

Weights are random with scales that keep activations O(1) (so logits have structure and
top-1 is meaningful), every norm weight is randomized (so a missing or misapplied norm
shows), and every value is rounded to bf16 and stored as fp32: the checkpoint is fp32
(Gemma3's embed_scale = sqrt(hidden) stays fp32 on both sides) while `--weights bf16`
holds it exactly.
"""
import json
import os
import shutil
import sys
import tempfile
import traceback
import zlib

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

SEQ_LENS = (64, 23)


def qwen3(name, vocab, hidden, inter, layers, heads, kv, hd, theta, tied):
    return name, {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
        "eos_token_id": 2, "head_dim": hd, "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 512, "max_window_layers": layers,
        "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "rms_norm_eps": 1e-6, "rope_scaling": None,
        "rope_theta": theta, "sliding_window": None, "tie_word_embeddings": tied,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False,
        "vocab_size": vocab,
    }


def qwen3_moe(name, vocab, hidden, layers, experts, top_k, moe_inter, step, mlp_only,
              norm_topk, tied):
    n, c = qwen3(name, vocab, hidden, 96, layers, 4, 2, 16, 1000000.0, tied)
    c.update({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "decoder_sparse_step": step, "mlp_only_layers": mlp_only,
        "moe_intermediate_size": moe_inter, "norm_topk_prob": norm_topk,
        "num_experts": experts, "num_experts_per_tok": top_k,
        "output_router_logits": False, "router_aux_loss_coef": 0.001,
    })
    return n, c


def gemma3(name, vocab, hidden, inter, layer_types, heads, kv, hd, qpas, window,
           softcap, pattern):
    c = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
        "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
        "final_logit_softcapping": softcap, "head_dim": hd,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 512, "num_attention_heads": heads,
        "num_hidden_layers": len(layer_types), "num_key_value_heads": kv,
        "query_pre_attn_scalar": qpas, "rms_norm_eps": 1e-6,
        "rope_local_base_freq": 10000.0, "rope_theta": 1000000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": window, "layer_types": layer_types,
        "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True,
        "vocab_size": vocab,
    }
    if pattern:
        c["sliding_window_pattern"] = pattern
    return name, c


S, F = "sliding_attention", "full_attention"
MODELS = [
    qwen3("qwen3-tiny", 256, 64, 128, 2, 4, 2, 16, 10000.0, True),
    qwen3("qwen3-small", 320, 96, 160, 3, 6, 2, 32, 1000000.0, False),
    qwen3_moe("qwen3-moe-tiny", 256, 64, 3, 8, 2, 32, 1, [1], True, False),
    qwen3_moe("qwen3-moe-small", 288, 64, 4, 10, 3, 24, 2, [], False, True),
    gemma3("gemma3-tiny", 256, 64, 128, [S, F, S], 4, 2, 16, 24, 8, None, 2),
    gemma3("gemma3-small", 272, 48, 96, [S, S, F, S], 3, 1, 32, 32, 12, 5.0, None),
]


def randomize(model, arch):
    """Scales that keep every layer's output O(1); all values bf16-representable."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms: Gemma applies (1 + w), Qwen w
                base = 0.0 if arch == "gemma3" else 1.0
                v = base + 0.1 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g)
            else:
                v = torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def load(path):
    try:
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                    dtype=torch.float32)
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                    torch_dtype=torch.float32)


def main():
    out_root = sys.argv[1]
    torch.manual_seed(0)
    failed = []
    for name, cfg in MODELS:
        try:
            make_one(out_root, name, cfg)
        except Exception:  # keep the other fixtures; report and fail at the end
            traceback.print_exc()
            failed.append(name)
    if failed:
        sys.exit(f"failed: {failed}")


def make_one(out_root, name, cfg):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    config = AutoConfig.from_pretrained(d)
    config._attn_implementation = "eager"
    arch = "gemma3" if cfg["model_type"].startswith("gemma3") else "qwen3"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()
    randomize(model, arch)
    probe = torch.arange(16).reshape(1, 16) % cfg["vocab_size"]
    with torch.no_grad():
        before = model.eval()(input_ids=probe, use_cache=False).logits
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(os.path.join(tmp, "model.safetensors"), d)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(d, "hf_saved_config.json"))
    model = load(d).eval()
    with torch.no_grad():
        after = model(input_ids=probe, use_cache=False).logits
    assert torch.equal(before, after), f"{name}: logits changed through save/load"
    print(f"== {name}: {type(model).__name__}, transformers {transformers.__version__}")
    for key in ("layer_types", "rope_parameters", "rope_scaling", "sliding_window",
                "mlp_only_layers", "decoder_sparse_step", "query_pre_attn_scalar"):
        if hasattr(model.config, key):
            print(f"   {key} = {getattr(model.config, key)}")
    from safetensors import safe_open
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    print(f"   {len(keys)} tensors, e.g. {[k for k in keys if 'layers.0.' in k]}")

    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    seqs = []
    for i, n in enumerate(SEQ_LENS):
        tokens = torch.randint(0, cfg["vocab_size"], (1, n), generator=gen)
        with torch.no_grad():
            logits = model(input_ids=tokens, use_cache=False).logits[0].float()
        fn = f"logits{i}.f32"
        logits.contiguous().numpy().astype("<f4").tofile(os.path.join(d, fn))
        seqs.append({"tokens": tokens[0].tolist(), "logits": fn})
        print(f"   seq {i}: {n} tokens, max|logit| {logits.abs().max():.3f}, "
              f"std {logits.std():.3f}")
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "sequences": seqs}, f, indent=1)


if __name__ == "__main__":
    main()
