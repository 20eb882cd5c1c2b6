/* Normalizers (NFC, Replace, Prepend) and pre-tokenizers (Split, ByteLevel, Metaspace), each
 * a list of steps run in order, as HF's Sequence does. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/tokenizer_internal.h"

struct replace_ctx {
    struct tok_buf *out;
    const char *s;
    size_t done;
    const char *content;
    size_t content_len;
};

static int replace_match(void *vctx, size_t start, size_t end)
{
    struct replace_ctx *c = vctx;
    int rc = tok_buf_put(c->out, c->s + c->done, start - c->done);
    if (rc < 0)
        return rc;
    c->done = end;
    return tok_buf_put(c->out, c->content, c->content_len);
}

int tok_replace_all(const struct tok_pattern *p, struct tok_ws *ws, const char *s, size_t n,
                    const char *content, size_t content_len, struct tok_buf *out)
{
    struct replace_ctx c = {out, s, 0, content, content_len};
    out->len = 0;
    int rc = tok_pattern_each(p, ws, s, n, replace_match, &c);
    if (rc < 0)
        return rc;
    return tok_buf_put(out, s + c.done, n - c.done);
}

/* Below U+0300 (lead bytes < 0xCC) no character decomposes or combines, so such text is
 * already NFC. */
static bool nfc_trivial(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0xcc)
            return false;
    return true;
}

static int nfc(const char *s, size_t n, struct tok_buf *out)
{
    out->len = 0;
    if (nfc_trivial(s, n))
        return tok_buf_put(out, s, n);
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (k < 0)
        return k == UTF8PROC_ERROR_NOMEM ? -ENOMEM : -EILSEQ;
    int rc = tok_buf_put(out, dst, (size_t)k);
    free(dst);
    return rc;
}

int tok_normalize(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                  struct tok_buf *out)
{
    int rc;
    struct tok_buf *a = out, *b = &ws->tmp;
    a->len = 0;
    if ((rc = tok_buf_put(a, s, n)) < 0)
        return rc;
    for (size_t i = 0; i < tok->n_norm; i++) {
        const struct tok_norm *nm = &tok->norm[i];
        switch (nm->type) {
        case TOK_NORM_NFC:
            rc = nfc(a->p, a->len, b);
            break;
        case TOK_NORM_REPLACE:
            rc = tok_replace_all(&nm->pat, ws, a->p, a->len, nm->content, nm->content_len, b);
            break;
        case TOK_NORM_PREPEND:
            b->len = 0;
            rc = a->len ? tok_buf_put(b, nm->content, nm->content_len) : 0;
            if (rc == 0)
                rc = tok_buf_put(b, a->p, a->len);
            break;
        default:
            rc = -EINVAL;
        }
        if (rc < 0)
            return rc;
        struct tok_buf t = *a; /* contents swap: the result stays in out */
        *a = *b;
        *b = t;
    }
    return 0;
}

/* ---- Split --------------------------------------------------------------------------- */
static int span_push(struct tok_ws *ws, size_t start, size_t end, bool match)
{
    if (ws->n_span == ws->span_cap) {
        size_t cap = ws->span_cap ? ws->span_cap * 2 : 64;
        struct tok_span *p = realloc(ws->span, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        ws->span = p;
        ws->span_cap = cap;
    }
    ws->span[ws->n_span++] = (struct tok_span){start, end, match};
    return 0;
}

struct split_ctx {
    struct tok_ws *ws;
    size_t prev;
};

static int split_match(void *vctx, size_t start, size_t end)
{
    struct split_ctx *c = vctx;
    int rc;
    if (c->prev != start && (rc = span_push(c->ws, c->prev, start, false)) < 0)
        return rc;
    c->prev = end;
    return span_push(c->ws, start, end, true);
}

/* HF's Pattern::find_matches then NormalizedString::split: pushes the pieces of w[0..n)
 * onto out (empty pieces are dropped, as PreTokenizedString::split does). */
static int split_word(struct tok_ws *ws, const struct tok_pattern *pat,
                      enum tok_split_behavior behavior, bool invert, const char *w, size_t n,
                      struct tok_strv *out)
{
    int rc;
    ws->n_span = 0;
    struct split_ctx c = {ws, 0};
    if (n && (rc = tok_pattern_each(pat, ws, w, n, split_match, &c)) < 0)
        return rc;
    if (c.prev != n && (rc = span_push(ws, c.prev, n, false)) < 0)
        return rc;
    struct tok_span *sp = ws->span;
    size_t ns = ws->n_span, k = 0;
    if (invert)
        for (size_t i = 0; i < ns; i++)
            sp[i].match = !sp[i].match;
    /* Rewrite sp[] in place into the pieces to keep (match = remove). */
    switch (behavior) {
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < ns; i++)
            if (!sp[i].match)
                sp[k++] = sp[i];
        break;
    case TOK_SPLIT_ISOLATED:
        k = ns;
        break;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS: {
        bool prev_match = false;
        for (size_t i = 0; i < ns; i++) {
            bool m = sp[i].match;
            if (m && !prev_match && k)
                sp[k - 1].end = sp[i].end;
            else
                sp[k++] = sp[i];
            prev_match = m;
        }
        break;
    }
    case TOK_SPLIT_MERGED_WITH_NEXT: {
        bool prev_match = false;
        size_t j = ns; /* built from the right into sp[j..ns) */
        for (size_t i = ns; i-- > 0;) {
            bool m = sp[i].match;
            if (m && !prev_match && j < ns)
                sp[j].start = sp[i].start;
            else
                sp[--j] = sp[i];
            prev_match = m;
        }
        memmove(sp, sp + j, (ns - j) * sizeof(*sp));
        k = ns - j;
        break;
    }
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ns; i++) {
            if (k && sp[k - 1].match == sp[i].match)
                sp[k - 1].end = sp[i].end;
            else
                sp[k++] = sp[i];
        }
        break;
    }
    for (size_t i = 0; i < k; i++)
        if (sp[i].end > sp[i].start &&
            (rc = tok_strv_push(out, w + sp[i].start, sp[i].end - sp[i].start)) < 0)
            return rc;
    return 0;
}

static int metaspace_word(const struct tok_pre *p, struct tok_ws *ws, const char *w, size_t n,
                          bool first, struct tok_strv *out)
{
    static const struct tok_pattern space = {.lit = " ", .lit_len = 1};
    int rc;
    struct tok_buf r = {0};
    struct tok_buf *t = &ws->tmp;
    /* HF replaces the spaces first, then looks for the replacement at the start. */
    if ((rc = tok_replace_all(&space, ws, w, n, p->repl, p->repl_len, &r)) < 0)
        goto out;
    bool starts = r.len >= p->repl_len && !memcmp(r.p, p->repl, p->repl_len);
    bool prepend = p->prepend == TOK_PREPEND_ALWAYS || (p->prepend == TOK_PREPEND_FIRST && first);
    t->len = 0;
    if (!starts && prepend && (rc = tok_buf_put(t, p->repl, p->repl_len)) < 0)
        goto out;
    if ((rc = tok_buf_put(t, r.p, r.len)) < 0)
        goto out;
    if (p->split) {
        struct tok_pattern rp = {.lit = (char *)p->repl, .lit_len = p->repl_len};
        rc = split_word(ws, &rp, TOK_SPLIT_MERGED_WITH_NEXT, false, t->p, t->len, out);
    } else {
        rc = t->len ? tok_strv_push(out, t->p, t->len) : 0;
    }
out:
    tok_buf_free(&r);
    return rc;
}

int tok_pretokenize(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                    bool first)
{
    int rc;
    struct tok_strv *cur = &ws->words, *nxt = &ws->words2;
    tok_strv_clear(cur);
    if (!n)
        return 0;
    if ((rc = tok_strv_push(cur, s, n)) < 0)
        return rc;
    for (size_t i = 0; i < tok->n_pre; i++) {
        const struct tok_pre *p = &tok->pre[i];
        tok_strv_clear(nxt);
        for (size_t j = 0; j < cur->n; j++) {
            const char *w = cur->buf.p + cur->off[j];
            size_t wn = cur->len[j];
            switch (p->type) {
            case TOK_PRE_SPLIT:
                rc = split_word(ws, &p->pat, p->behavior, p->invert, w, wn, nxt);
                break;
            case TOK_PRE_BYTELEVEL:
                /* The byte -> alphabet mapping itself happens in the BPE model's first
                 * step (bl_id), which is why ByteLevel must be the last pre-tokenizer. */
                if (p->add_prefix_space && (!wn || w[0] != ' ')) {
                    struct tok_buf *t = &ws->tmp;
                    t->len = 0;
                    if ((rc = tok_buf_put(t, " ", 1)) < 0 || (rc = tok_buf_put(t, w, wn)) < 0)
                        return rc;
                    w = t->p;
                    wn = t->len;
                }
                if (p->use_regex)
                    rc = split_word(ws, &p->pat, TOK_SPLIT_ISOLATED, false, w, wn, nxt);
                else
                    rc = wn ? tok_strv_push(nxt, w, wn) : 0;
                break;
            case TOK_PRE_METASPACE:
                rc = metaspace_word(p, ws, w, wn, first && j == 0, nxt);
                break;
            default:
                rc = -EINVAL;
            }
            if (rc < 0)
                return rc;
        }
        struct tok_strv t = *cur; /* contents swap: the result stays in ws->words */
        *cur = *nxt;
        *nxt = t;
    }
    return 0;
}
