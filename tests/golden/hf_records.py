"""The fixture records hf_reference.py and hf_synthetic.py both write, from a HF tokenizers
Tokenizer (what the C tests compare against)."""


def encode_record(tok, s, with_special):
    """{"s": text, "ids": encode(text, add_special_tokens=False).ids,
    "dec": decode(ids, skip_special_tokens=False) (only when != s),
    "decs": decode(ids, skip_special_tokens=True) (only when != dec),
    "ids_sp": encode(text, add_special_tokens=True).ids (only when with_special)}"""
    ids = tok.encode(s, add_special_tokens=False).ids
    rec = {"s": s, "ids": ids}
    dec = tok.decode(ids, skip_special_tokens=False)
    if dec != s:
        rec["dec"] = dec
    decs = tok.decode(ids, skip_special_tokens=True)
    if decs != dec:
        rec["decs"] = decs
    if with_special:
        rec["ids_sp"] = tok.encode(s, add_special_tokens=True).ids
    return rec


def decode_record(tok, ids):
    """{"ids": ids, "dec": decode(ids, skip_special_tokens=False),
    "decs": decode(ids, skip_special_tokens=True) (only when != dec)}"""
    rec = {"ids": ids, "dec": tok.decode(ids, skip_special_tokens=False)}
    decs = tok.decode(ids, skip_special_tokens=True)
    if decs != rec["dec"]:
        rec["decs"] = decs
    return rec
