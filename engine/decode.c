/* Decoding ids to text through the decoder chain (HF's decode_chain over a list of token
 * strings), and the streaming detokenizer built on it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_internal.h"

static const char fffd[3] = {(char)0xef, (char)0xbf, (char)0xbd};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* HF ByteFallback: a 6-byte token "<0xHH>" whose HH parses with u8::from_str_radix(.., 16)
 * (which also takes a leading '+'). Returns the byte or -1. */
static int byte_token(const char *t, size_t n)
{
    if (n != 6 || memcmp(t, "<0x", 3) || t[5] != '>')
        return -1;
    if (t[3] == '+') {
        int v = hexval(t[4]);
        return v;
    }
    int hi = hexval(t[3]), lo = hexval(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Token string -> bytes for ByteLevel: through the alphabet when every character is in it,
 * else the string's own bytes (HF falls back to them the same way). */
static int bytelevel_bytes(struct tok_buf *out, const char *t, size_t n)
{
    size_t start = out->len;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = tok_utf8_next(t + i, n - i, &cp);
        if (cp >= 324 || tok_char_to_byte[cp] < 0) {
            out->len = start;
            return tok_buf_put(out, t, n);
        }
        uint8_t b = (uint8_t)tok_char_to_byte[cp];
        int rc = tok_buf_put(out, &b, 1);
        if (rc < 0)
            return rc;
        i += k;
    }
    return 0;
}

/* Streaming state of a Strip that follows Fuse/ByteLevel: such a Strip sees the whole text,
 * so only the stream's start may be stripped, however the text is cut into chunks. */
struct strip_state {
    bool emitted;   /* some text has been returned already */
    size_t stripped; /* characters stripped so far at the start */
};

static int step(const struct tok_dec *d, struct tok_ws *ws, const struct tok_strv *in,
                struct tok_strv *out, struct strip_state *ss)
{
    int rc = 0;
    tok_strv_clear(out);
    switch (d->type) {
    case TOK_DEC_BYTELEVEL: {
        struct tok_buf *raw = &ws->tmp;
        raw->len = 0;
        for (size_t i = 0; i < in->n && rc == 0; i++)
            rc = bytelevel_bytes(raw, in->buf.p + in->off[i], in->len[i]);
        if (rc == 0 && (rc = tok_strv_push(out, "", 0)) == 0) {
            rc = tok_utf8_lossy(&out->buf, raw->p, raw->len, NULL);
            out->len[0] = out->buf.len;
        }
        return rc;
    }
    case TOK_DEC_FUSE:
        if ((rc = tok_strv_push(out, "", 0)) < 0)
            return rc;
        for (size_t i = 0; i < in->n && rc == 0; i++)
            rc = tok_strv_append(out, in->buf.p + in->off[i], in->len[i]);
        return rc;
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < in->n && rc == 0; i++) {
            rc = tok_replace_all(&d->pat, ws, in->buf.p + in->off[i], in->len[i], d->content,
                                 d->content_len, &ws->tmp);
            if (rc == 0)
                rc = tok_strv_push(out, ws->tmp.p, ws->tmp.len);
        }
        return rc;
    case TOK_DEC_BYTEFALLBACK: {
        struct tok_buf *run = &ws->tmp;
        run->len = 0;
        for (size_t i = 0; i <= in->n && rc == 0; i++) {
            const char *t = i < in->n ? in->buf.p + in->off[i] : NULL;
            int b = t ? byte_token(t, in->len[i]) : -1;
            if (b >= 0) {
                uint8_t c = (uint8_t)b;
                rc = tok_buf_put(run, &c, 1);
                continue;
            }
            if (run->len) { /* a run is decoded strictly: one U+FFFD per byte if invalid */
                if (tok_utf8_check(run->p, run->len) == run->len) {
                    rc = tok_strv_push(out, run->p, run->len);
                } else {
                    for (size_t k = 0; k < run->len && rc == 0; k++)
                        rc = tok_strv_push(out, fffd, 3);
                }
                run->len = 0;
            }
            if (t && rc == 0)
                rc = tok_strv_push(out, t, in->len[i]);
        }
        return rc;
    }
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < in->n && rc == 0; i++) {
            const char *t = in->buf.p + in->off[i];
            size_t n = in->len[i], c = d->content_len, a = 0, z = n;
            size_t start = !ss ? d->start : ss->emitted ? 0 : d->start - ss->stripped;
            for (size_t k = 0; k < start && a + c <= z && !memcmp(t + a, d->content, c); k++)
                a += c;
            if (ss)
                ss->stripped += c ? a / c : 0;
            for (size_t k = 0; k < d->stop && z >= a + c && !memcmp(t + z - c, d->content, c); k++)
                z -= c;
            rc = tok_strv_push(out, t + a, z - a);
        }
        return rc;
    }
    return -EINVAL;
}

/* Whether decoding drops id: ids without a string, and with skip_special the strings HF
 * lists as special tokens (its check is by string, not by id). */
static bool dropped(const struct fp8_tokenizer *tok, int32_t id, bool skip_special)
{
    if (!tok->dec_str[id])
        return true;
    if (!skip_special)
        return false;
    int32_t sid = tok_map_get(&tok->added_map, tok->dec_str[id], tok->dec_len[id]);
    return sid >= 0 && tok->special[sid];
}

/* Decodes into out (appending). ss: streaming state, NULL for a whole decode. */
static int decode_into(const struct fp8_tokenizer *tok, struct tok_ws *ws, const int32_t *ids,
                       size_t n, bool skip_special, struct strip_state *ss, struct tok_buf *out)
{
    bool fused = false;
    int rc = 0;
    struct tok_strv *a = &ws->words, *b = &ws->words2;
    tok_strv_clear(a);
    for (size_t i = 0; i < n && rc == 0; i++) {
        int32_t id = ids[i];
        if (dropped(tok, id, skip_special))
            continue;
        if (!tok->has_decoder && a->n)
            rc = tok_strv_append(a, " ", 1);
        if (rc == 0 && !tok->has_decoder && a->n)
            rc = tok_strv_append(a, tok->dec_str[id], tok->dec_len[id]);
        else if (rc == 0)
            rc = tok_strv_push(a, tok->dec_str[id], tok->dec_len[id]);
    }
    for (size_t i = 0; i < tok->n_dec && rc == 0; i++) {
        const struct tok_dec *d = &tok->dec[i];
        if ((rc = step(d, ws, a, b, fused && d->type == TOK_DEC_STRIP ? ss : NULL)) < 0)
            break;
        fused = fused || d->type == TOK_DEC_FUSE || d->type == TOK_DEC_BYTELEVEL;
        struct tok_strv t = *a; /* contents swap: the result stays in ws->words */
        *a = *b;
        *b = t;
    }
    for (size_t i = 0; i < a->n && rc == 0; i++)
        rc = tok_buf_put(out, a->buf.p + a->off[i], a->len[i]);
    return rc;
}

static int check_ids(const struct fp8_tokenizer *tok, const int32_t *ids, size_t n,
                     struct fp8_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return fp8_err_set(err, -EINVAL, "tokenizer decode: id %d at position %zu out of range [0, %d)",
                               ids[i], i, tok->n_vocab);
    return 0;
}

int fp8_tokenizer_decode(const struct fp8_tokenizer *tok, const int32_t *ids, size_t n_ids,
                         bool skip_special, char **text, size_t *len, struct fp8_err *err)
{
    if (!tok || (!ids && n_ids) || !text || !len)
        return fp8_err_set(err, -EINVAL, "tokenizer decode: NULL argument");
    int rc = check_ids(tok, ids, n_ids, err);
    if (rc < 0)
        return rc;
    struct tok_ws *ws = tok_ws_acquire(tok);
    if (!ws)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    struct tok_buf out = {0};
    rc = decode_into(tok, ws, ids, n_ids, skip_special, NULL, &out);
    tok_ws_release(tok, ws);
    if (rc == 0)
        rc = tok_buf_put(&out, "", 1);
    if (rc < 0) {
        tok_buf_free(&out);
        return fp8_err_set(err, rc, "tokenizer decode: out of memory");
    }
    *text = out.p;
    *len = out.len - 1;
    return 0;
}

/* ---- streaming ----------------------------------------------------------------------- */
int fp8_detok_init(struct fp8_detok *d, const struct fp8_tokenizer *tok, bool skip_special,
                   struct fp8_err *err)
{
    if (!d || !tok)
        return fp8_err_set(err, -EINVAL, "detokenizer: NULL argument");
    if (!tok->has_decoder)
        return fp8_err_set(err, -ENOTSUP, "detokenizer: the tokenizer has no decoder (HF joins tokens with spaces), "
                                          "which streaming does not support");
    /* After Fuse or ByteLevel a decoder sees the whole text at once: chunking stays exact
     * only for a Strip of the start and single-character literal Replaces. */
    bool fused = false, strip_seen = false;
    for (size_t i = 0; i < tok->n_dec; i++) {
        const struct tok_dec *dec = &tok->dec[i];
        if (fused) {
            bool ok = (dec->type == TOK_DEC_STRIP && !dec->stop && !strip_seen) ||
                      (dec->type == TOK_DEC_REPLACE && dec->pat.lit &&
                       tok_utf8_valid_len((const uint8_t *)dec->pat.lit, dec->pat.lit_len) == dec->pat.lit_len);
            if (!ok)
                return fp8_err_set(err, -ENOTSUP,
                                   "detokenizer: decoder step %zu (%s) after Fuse/ByteLevel cannot be streamed exactly",
                                   i, dec->type == TOK_DEC_STRIP ? "Strip of the end or a second Strip"
                                                                 : "Replace/ByteFallback/Fuse/ByteLevel");
            strip_seen = strip_seen || dec->type == TOK_DEC_STRIP;
        }
        fused = fused || dec->type == TOK_DEC_FUSE || dec->type == TOK_DEC_BYTELEVEL;
    }
    *d = (struct fp8_detok){.tok = tok, .skip_special = skip_special};
    return 0;
}

/* Whether decoding the pending ids now gives text that no later id can change. */
static int pending_final(const struct fp8_detok *d, struct tok_ws *ws, bool *final)
{
    const struct fp8_tokenizer *tok = d->tok;
    int32_t last = d->pending[d->n_pending - 1];
    *final = true;
    for (size_t i = 0; i < tok->n_dec; i++) {
        if (tok->dec[i].type == TOK_DEC_BYTEFALLBACK &&
            byte_token(tok->dec_str[last], tok->dec_len[last]) >= 0)
            *final = false;
        if (tok->dec[i].type == TOK_DEC_BYTELEVEL) {
            struct tok_buf *raw = &ws->norm, *tmp = &ws->tmp;
            raw->len = tmp->len = 0;
            int rc = 0;
            for (size_t k = 0; k < d->n_pending && rc == 0; k++)
                rc = bytelevel_bytes(raw, tok->dec_str[d->pending[k]], tok->dec_len[d->pending[k]]);
            bool incomplete = false;
            if (rc == 0)
                rc = tok_utf8_lossy(tmp, raw->p, raw->len, &incomplete);
            if (rc < 0)
                return rc;
            if (incomplete)
                *final = false;
        }
    }
    return 0;
}

static int flush(struct fp8_detok *d, struct tok_ws *ws, const char **text, size_t *len)
{
    struct tok_buf out = {0};
    struct strip_state ss = {d->emitted, d->stripped};
    int rc = decode_into(d->tok, ws, d->pending, d->n_pending, d->skip_special, &ss, &out);
    if (rc == 0)
        rc = tok_buf_put(&out, "", 1);
    if (rc < 0) {
        tok_buf_free(&out);
        return rc;
    }
    free(d->out);
    d->out = out.p;
    d->n_pending = 0;
    d->stripped = ss.stripped;
    d->emitted = d->emitted || out.len > 1;
    *text = d->out;
    *len = out.len - 1;
    return 0;
}

int fp8_detok_push(struct fp8_detok *d, int32_t id, const char **text, size_t *len,
                   struct fp8_err *err)
{
    if (!d || !d->tok || !text || !len)
        return fp8_err_set(err, -EINVAL, "detokenizer: NULL argument");
    int rc = check_ids(d->tok, &id, 1, err);
    if (rc < 0)
        return rc;
    *text = "";
    *len = 0;
    if (dropped(d->tok, id, d->skip_special))
        return 0; /* decode drops these ids entirely */
    if (d->n_pending == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        int32_t *p = realloc(d->pending, cap * sizeof(*p));
        if (!p)
            return fp8_err_set(err, -ENOMEM, "out of memory");
        d->pending = p;
        d->cap = cap;
    }
    d->pending[d->n_pending++] = id;
    struct tok_ws *ws = tok_ws_acquire(d->tok);
    if (!ws)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    bool final;
    rc = pending_final(d, ws, &final);
    if (rc == 0 && final)
        rc = flush(d, ws, text, len);
    tok_ws_release(d->tok, ws);
    if (rc < 0) {
        *text = "";
        *len = 0;
        return fp8_err_set(err, rc, "detokenizer: out of memory");
    }
    return 0;
}

int fp8_detok_finish(struct fp8_detok *d, const char **text, size_t *len, struct fp8_err *err)
{
    if (!d || !d->tok || !text || !len)
        return fp8_err_set(err, -EINVAL, "detokenizer: NULL argument");
    *text = "";
    *len = 0;
    int rc = 0;
    if (d->n_pending) {
        struct tok_ws *ws = tok_ws_acquire(d->tok);
        if (!ws)
            return fp8_err_set(err, -ENOMEM, "out of memory");
        rc = flush(d, ws, text, len);
        tok_ws_release(d->tok, ws);
    }
    d->emitted = false; /* the next stream starts afresh */
    d->stripped = 0;
    if (rc < 0) {
        *text = "";
        *len = 0;
        return fp8_err_set(err, rc, "detokenizer: out of memory");
    }
    return 0;
}

void fp8_detok_free(struct fp8_detok *d)
{
    if (!d)
        return;
    free(d->pending);
    free(d->out);
    *d = (struct fp8_detok){0};
}
