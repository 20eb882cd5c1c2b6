#!/usr/bin/env python3
"""Makes the tokenizer golden fixtures with Hugging Face tokenizers / transformers.

Runs on the GPU machine (where tokenizers 0.23 and transformers 5.17 are installed):
  hf_reference.py TOKENIZERS_DIR STRINGS.jsonl CHATS.jsonl OUTDIR
For NAME in qwen3, gemma3 it writes
  OUTDIR/NAME-encode.jsonl  {"s": text, "ids": encode(text, add_special_tokens=False).ids,
                             "dec": decode(ids, skip_special_tokens=False) (only when != s),
                             "decs": decode(ids, skip_special_tokens=True) (only when != dec),
                             "ids_sp": encode(text, add_special_tokens=True).ids (some lines)}
                            and decode-only lines {"ids": random ids, "dec": ..., "decs": ...}
  OUTDIR/NAME-chat.jsonl    {"req": request, "out": apply_chat_template(...)} or
                            {"req": request, "error": message}
"""
import json
import os
import random
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from hf_records import decode_record, encode_record


def encode_fixtures(name, tdir, strings, out):
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    with open(out, "w", encoding="utf-8") as f:
        for i, s in enumerate(strings):
            f.write(json.dumps(encode_record(tok, s, i % 20 == 0), ensure_ascii=False) + "\n")
        # Decoding arbitrary ids: partial UTF-8 sequences, byte-fallback runs, specials.
        r = random.Random(5)
        n = tok.get_vocab_size(with_added_tokens=True)
        for _ in range(400):
            ids = []
            for _ in range(r.randint(1, 12)):
                k = r.random()
                ids.append(r.randrange(0, 400) if k < 0.6 else r.randrange(0, n))
            f.write(json.dumps(decode_record(tok, ids), ensure_ascii=False) + "\n")


def chat_fixtures(name, tdir, chats, out):
    at = AutoTokenizer.from_pretrained(tdir)
    with open(out, "w", encoding="utf-8") as f:
        for req in chats:
            kw = {}
            if req.get("enable_thinking") is not None:
                kw["enable_thinking"] = req["enable_thinking"]
            rec = {"req": req}
            try:
                rec["out"] = at.apply_chat_template(req["messages"], tokenize=False,
                                                    add_generation_prompt=req["add_generation_prompt"], **kw)
            except Exception as e:  # the template's raise_exception, e.g. roles not alternating
                rec["error"] = "%s: %s" % (type(e).__name__, e)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main():
    tdir, strings_path, chats_path, outdir = sys.argv[1:5]
    print("tokenizers", tokenizers.__version__, "transformers", transformers.__version__)
    strings = [json.loads(l) for l in open(strings_path, encoding="utf-8")]
    chats = [json.loads(l) for l in open(chats_path, encoding="utf-8")]
    for name in ("qwen3", "gemma3"):
        d = os.path.join(tdir, name)
        encode_fixtures(name, d, strings, os.path.join(outdir, name + "-encode.jsonl"))
        try:
            chat_fixtures(name, d, chats, os.path.join(outdir, name + "-chat.jsonl"))
        except Exception as e:
            print("chat fixtures for", name, "failed:", type(e).__name__, e)
            raise


if __name__ == "__main__":
    main()
