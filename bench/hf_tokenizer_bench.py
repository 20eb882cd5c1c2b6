#!/usr/bin/env python3
"""HF tokenizers single-threaded encode throughput, the baseline for `fp8d tokenize --bench`.
  TOKENIZERS_PARALLELISM=false hf_tokenizer_bench.py TOKENIZER.json CORPUS.jsonl [FP8D_IDS.jsonl]
One encode(doc, add_special_tokens=False) per document, best of 3 passes; prints one line.
With FP8D_IDS.jsonl (`fp8d tokenize --jsonl < CORPUS.jsonl`), also checks that every
document's ids are identical to HF's."""
import json
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402

path, corpus = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
tok = Tokenizer.from_file(path)
load_s = time.perf_counter() - t0
docs = [json.loads(l) for l in open(corpus, encoding="utf-8")]
nbytes = sum(len(d.encode("utf-8")) for d in docs)
best = None
for _ in range(3):
    t0 = time.perf_counter()
    ntok = 0
    for d in docs:
        ntok += len(tok.encode(d, add_special_tokens=False).ids)
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
if len(sys.argv) > 3:
    theirs = [json.loads(l) for l in open(sys.argv[3], encoding="utf-8")]
    diff = sum(1 for d, ids in zip(docs, theirs) if tok.encode(d, add_special_tokens=False).ids != ids)
    diff += abs(len(theirs) - len(docs))
    print("ids compared on %d documents: %d differ" % (len(docs), diff))
print("hf %s: load %.3f s, %d docs, %.2f MB, %d tokens, encode %.3f s, %.2f MB/s, %.0f tok/s"
      % (path, load_s, len(docs), nbytes / 1e6, ntok, best, nbytes / 1e6 / best, ntok / best))
