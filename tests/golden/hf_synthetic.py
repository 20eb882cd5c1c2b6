#!/usr/bin/env python3
"""Golden fixtures for tokenizer components the real Qwen3/Gemma3 files do not use.

Runs on the GPU machine with HF tokenizers 0.23:
  hf_synthetic.py STRINGS.jsonl OUT.jsonl
Trains two small BPE models (byte-level, and SentencePiece-style with byte fallback) on the
test strings, builds tokenizers around them with other normalizers, pre-tokenizers
(Split behaviors, invert, empty matches, ByteLevel options, Metaspace schemes), added-token
flags, decoders (Strip) and post-processors, and writes for each variant a header line
{"variant": name, "tokenizer": tokenizer.to_str()} followed by the same records as
hf_reference.py writes (hf_records.py: {"s", "ids", "dec", "decs", "ids_sp"} and
decode-only {"ids", ...}).
"""
import json
import random
import sys
import traceback

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

from hf_records import decode_record, encode_record

EXTRA = ["[L]", "  [L]x", "a [L]", "a [R]  b", "[R]\n\nz", "the theater the", "xthe the_ the.",
         "ab7 ab1 ab", "x9y x5y xy", "<s>hello world", "hello <s> world</s>", "a,b.c!d", "1234abc56",
         "aaa baaa", "ooo foo  o", "  leading", "\u2581already", "a\u2581b", "", " ", "a", "\u00e9\u0301",
         "caf\u0065\u0301 <s> na\u00efve", "ZZZ\u4e2d\u6587", "\U0001F600 \U0001F600\U0001F600"]


def model_parts(tok):
    m = json.loads(tok.to_str())["model"]
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ", 1)) for x in m["merges"]]
    return m["vocab"], merges


def train_bytelevel(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tr = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(corpus, trainer=tr)
    return model_parts(tok)


def train_sp(corpus):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, limit_alphabet=120,
                             show_progress=False)
    tok.train_from_iterator(corpus, trainer=tr)
    return model_parts(tok)


def variants(bl, sp):
    v = {}

    def bl_tok(**kw):
        return Tokenizer(models.BPE(vocab=dict(bl[0]), merges=list(bl[1]), **kw))

    def sp_tok(**kw):
        return Tokenizer(models.BPE(vocab=dict(sp[0]), merges=list(sp[1]), **kw))

    t = bl_tok()
    t.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex("[0-9]"), "1")])
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=True)
    t.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    t.add_tokens([AddedToken("[L]", lstrip=True, normalized=False), AddedToken("[R]", rstrip=True, normalized=False),
                  AddedToken("the", single_word=True, normalized=False), AddedToken("ab1", normalized=True),
                  AddedToken("x9y", normalized=True)])
    v["bl_prefix_regex_flags"] = t

    t = bl_tok()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("[,.!?]"), "merged_with_next"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    v["bl_split_merged_with_next"] = t

    t = bl_tok()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    v["bl_split_removed_string"] = t

    t = bl_tok()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("\\p{N}+"), "contiguous", invert=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    v["bl_split_contiguous_invert"] = t

    t = bl_tok(ignore_merges=True)
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("o|\\s"), "merged_with_previous"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    v["bl_split_merged_with_previous_ignore_merges"] = t

    t = bl_tok()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("a*"), "isolated"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    v["bl_split_empty_matches"] = t

    sp_dec = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                decoders.Strip(content=" ", left=1, right=0)])
    specials = [AddedToken("<unk>", special=True), AddedToken("<s>", special=True), AddedToken("</s>", special=True)]

    t = sp_tok(unk_token="<unk>", byte_fallback=True)
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    t.decoder = sp_dec
    t.add_special_tokens(specials)
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                     special_tokens=[("<s>", t.token_to_id("<s>")),
                                                                     ("</s>", t.token_to_id("</s>"))])
    v["sp_metaspace_always_split_template"] = t

    t = sp_tok(unk_token="<unk>", byte_fallback=True)
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    t.decoder = sp_dec
    t.add_special_tokens(specials)
    v["sp_metaspace_first_nosplit"] = t

    t = sp_tok(unk_token="<unk>", byte_fallback=True)
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    t.decoder = sp_dec
    t.add_special_tokens(specials)
    v["sp_prepend_replace_never"] = t

    for fuse in (True, False):
        t = sp_tok(unk_token="<unk>", byte_fallback=False, fuse_unk=fuse)
        t.pre_tokenizer = pre_tokenizers.Metaspace()
        t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse(),
                                       decoders.Strip(content=" ", left=1, right=0)])
        t.add_special_tokens(specials)
        v["sp_unk_fuse_%s" % ("on" if fuse else "off")] = t
    return v


def main():
    strings = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
    sel = [s for i, s in enumerate(strings) if len(s) <= 200 and i % 4 == 0] + EXTRA
    bl = train_bytelevel(strings)
    sp = train_sp(strings)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        for name, tok in variants(bl, sp).items():
            try:
                lines = [json.dumps({"variant": name, "tokenizer": tok.to_str()}, ensure_ascii=False)]
                for i, s in enumerate(sel):
                    lines.append(json.dumps(encode_record(tok, s, i % 10 == 0), ensure_ascii=False))
                r = random.Random(11)
                n = tok.get_vocab_size(with_added_tokens=True)
                for _ in range(100):
                    ids = [r.randrange(0, n) for _ in range(r.randint(1, 10))]
                    lines.append(json.dumps(decode_record(tok, ids), ensure_ascii=False))
                f.write("\n".join(lines) + "\n")
                print("variant", name, "ok:", len(lines) - 1, "records")
            except Exception:
                print("variant", name, "FAILED")
                traceback.print_exc()


if __name__ == "__main__":
    main()
