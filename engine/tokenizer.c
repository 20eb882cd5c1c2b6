/* Encoding: added tokens on the raw text, normalizer, added tokens on the normalized text,
 * pre-tokenizer, BPE per word, then (add_special) the post-processor, in HF's order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/tokenizer_internal.h"

struct tok_ws *tok_ws_acquire(const struct fp8_tokenizer *ctok)
{
    struct fp8_tokenizer *tok = (struct fp8_tokenizer *)ctok;
    pthread_mutex_lock(&tok->lock);
    struct tok_ws *ws = tok->ws_free;
    if (ws)
        tok->ws_free = ws->next_free;
    pthread_mutex_unlock(&tok->lock);
    if (ws)
        return ws;
    ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    /* Long whitespace runs make `\s+(?!\S)` backtrack deep: give JIT a large stack. */
    ws->md = pcre2_match_data_create(1, NULL);
    ws->mctx = pcre2_match_context_create(NULL);
    ws->jit = pcre2_jit_stack_create(64 << 10, 8 << 20, NULL);
    if (!ws->md || !ws->mctx || !ws->jit) {
        tok_ws_free(ws);
        return NULL;
    }
    pcre2_jit_stack_assign(ws->mctx, NULL, ws->jit);
    return ws;
}

void tok_ws_release(const struct fp8_tokenizer *ctok, struct tok_ws *ws)
{
    struct fp8_tokenizer *tok = (struct fp8_tokenizer *)ctok;
    pthread_mutex_lock(&tok->lock);
    ws->next_free = tok->ws_free;
    tok->ws_free = ws;
    pthread_mutex_unlock(&tok->lock);
}

struct ids {
    int32_t *p;
    size_t n, cap;
};

static int ids_put(struct ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, c * sizeof(*p));
        if (!p)
            return -ENOMEM;
        v->p = p;
        v->cap = c;
    }
    v->p[v->n++] = id;
    return 0;
}

/* Rust regex's \w, which single_word tests next to a match: letters (Alphabetic is
 * approximated by L and Nl), marks, decimal digits, connector punctuation, ZWNJ/ZWJ. */
static bool is_word_char(uint32_t cp)
{
    if (cp == 0x200c || cp == 0x200d)
        return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NL) || c == UTF8PROC_CATEGORY_PC;
}

static uint32_t last_char(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && ((uint8_t)s[i - 1] & 0xc0) == 0x80)
        i--;
    uint32_t cp = 0;
    if (i > 0)
        tok_utf8_next(s + i - 1, n - i + 1, &cp);
    return cp;
}

/* Longest added token starting at s[0], as an index into tok->added, or -1. */
static int32_t trie_longest(const struct tok_trie *t, const char *s, size_t n, size_t *len)
{
    int32_t best = -1;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t->child[node];
        while (c && t->byte[c] != (uint8_t)s[i])
            c = t->sibling[c];
        if (!c)
            break;
        node = c;
        if (t->term[node] >= 0) {
            best = t->term[node];
            *len = i + 1;
        }
    }
    return best;
}

/* Segments of s: text pieces go to on_text, added tokens to on_token. HF's
 * AddedVocabulary::find_matches: leftmost-longest, non-overlapping, then the flags. */
typedef int (*text_fn)(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s,
                       size_t n, bool first, struct ids *out);

static int split_added(const struct fp8_tokenizer *tok, const struct tok_trie *t,
                       struct tok_ws *ws, const char *s, size_t n, bool first, text_fn on_text,
                       struct ids *out)
{
    int rc;
    size_t done = 0; /* end of the last emitted piece */
    if (!t->empty) {
        for (size_t i = 0; i < n;) {
            if (!t->first[(uint8_t)s[i]]) {
                i++;
                continue;
            }
            size_t len = 0;
            int32_t k = trie_longest(t, s + i, n - i, &len);
            if (k < 0) {
                i++;
                continue;
            }
            const struct tok_added *a = &tok->added[k];
            size_t st = i, en = i + len;
            i = en;
            if (a->single_word) {
                uint32_t cp = 0;
                bool before = st > 0 && is_word_char(last_char(s, st));
                bool after = en < n && (tok_utf8_next(s + en, n - en, &cp), is_word_char(cp));
                if (before || after)
                    continue;
            }
            if (a->lstrip) {
                while (st > done) {
                    uint32_t cp = last_char(s, st);
                    if (!tok_is_space(cp))
                        break;
                    size_t w = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
                    st -= w;
                }
            }
            if (a->rstrip) {
                while (en < n) {
                    uint32_t cp;
                    size_t w = tok_utf8_next(s + en, n - en, &cp);
                    if (!tok_is_space(cp))
                        break;
                    en += w;
                }
                i = en;
            }
            if (st > done && (rc = on_text(tok, ws, s + done, st - done, first && done == 0, out)) < 0)
                return rc;
            if ((rc = ids_put(out, a->id)) < 0)
                return rc;
            done = en;
        }
    }
    if (n > done)
        return on_text(tok, ws, s + done, n - done, first && done == 0, out);
    return 0;
}

static int model_text(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                      bool first, struct ids *out)
{
    int rc = tok_pretokenize(tok, ws, s, n, first);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < ws->words.n; i++) {
        rc = tok_bpe_word(tok, ws, ws->words.buf.p + ws->words.off[i], ws->words.len[i], &out->p,
                          &out->n, &out->cap);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int raw_text(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                    bool first, struct ids *out)
{
    if (!tok->n_norm)
        return split_added(tok, &tok->trie_norm, ws, s, n, first, model_text, out);
    int rc = tok_normalize(tok, ws, s, n, &ws->norm);
    if (rc < 0)
        return rc;
    /* ws->norm stays untouched below: pre-tokenizers work in words/words2/tmp */
    return split_added(tok, &tok->trie_norm, ws, ws->norm.p, ws->norm.len, first, model_text, out);
}

int fp8_tokenizer_encode(const struct fp8_tokenizer *tok, const char *text, size_t len,
                         bool add_special, int32_t **ids, size_t *n_ids, struct fp8_err *err)
{
    if (!tok || (!text && len) || !ids || !n_ids)
        return fp8_err_set(err, -EINVAL, "tokenizer encode: NULL argument");
    size_t bad = tok_utf8_check(text, len);
    if (bad != len)
        return fp8_err_set(err, -EILSEQ, "tokenizer encode: invalid UTF-8 at byte offset %zu (0x%02x)",
                           bad, (uint8_t)text[bad]);
    struct tok_ws *ws = tok_ws_acquire(tok);
    if (!ws)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    struct ids out = {0};
    int rc = 0;
    if (add_special)
        for (size_t i = 0; i < tok->n_post_before && rc == 0; i++)
            rc = ids_put(&out, tok->post_before[i]);
    if (rc == 0 && len)
        rc = split_added(tok, &tok->trie_raw, ws, text, len, true, raw_text, &out);
    if (add_special)
        for (size_t i = 0; i < tok->n_post_after && rc == 0; i++)
            rc = ids_put(&out, tok->post_after[i]);
    tok_ws_release(tok, ws);
    if (rc < 0) {
        free(out.p);
        if (rc == -E2BIG)
            return fp8_err_set(err, rc, "tokenizer encode: pre-tokenizer regex ran out of JIT stack");
        return fp8_err_set(err, rc, "tokenizer encode: %s", rc == -ENOMEM ? "out of memory" : "failed");
    }
    if (!out.p && !(out.p = malloc(sizeof(int32_t))))
        return fp8_err_set(err, -ENOMEM, "out of memory");
    *ids = out.p;
    *n_ids = out.n;
    return 0;
}

int32_t fp8_tokenizer_n_vocab(const struct fp8_tokenizer *tok)
{
    return tok ? tok->n_vocab : 0;
}

const char *fp8_tokenizer_id_to_token(const struct fp8_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->n_vocab)
        return NULL;
    return tok->tokens[id];
}

int32_t fp8_tokenizer_token_to_id(const struct fp8_tokenizer *tok, const char *token)
{
    if (!tok || !token)
        return -1;
    size_t n = strlen(token);
    int32_t id = tok_map_get(&tok->added_map, token, n);
    return id >= 0 ? id : tok_map_get(&tok->vocab, token, n);
}

bool fp8_tokenizer_is_special(const struct fp8_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n_vocab && tok->special[id];
}
