/* The BPE model: initial symbols (byte-level alphabet, characters, byte fallback, unk),
 * then merges in rank order through a binary heap over a linked list of symbols, so a
 * word of n symbols costs O(n log n). Mirrors HF tokenizers' Word::merge_all, including
 * how it validates a queued merge, so that ties and stale entries resolve identically. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_internal.h"

struct bpe_sym {
    int32_t id;
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint32_t len;       /* bytes covered; 0 once merged into its left neighbour */
};

struct bpe_heap_item {
    uint32_t rank;
    uint32_t pos;
    int32_t id;
};

static inline uint64_t merge_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static inline uint64_t merge_slot_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static int merges_grow(struct fp8_tokenizer *tok, size_t cap)
{
    struct tok_merge_slot *s = malloc(cap * sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        s[i].key = UINT64_MAX;
    for (size_t i = 0; i < tok->merge_cap; i++) {
        struct tok_merge_slot *o = &tok->merges[i];
        if (o->key == UINT64_MAX)
            continue;
        size_t j = merge_slot_hash(o->key) & (cap - 1);
        while (s[j].key != UINT64_MAX)
            j = (j + 1) & (cap - 1);
        s[j] = *o;
    }
    free(tok->merges);
    tok->merges = s;
    tok->merge_cap = cap;
    return 0;
}

int tok_merges_reserve(struct fp8_tokenizer *tok, size_t n)
{
    size_t cap = 1024;
    while (cap < 2 * n + 2)
        cap *= 2;
    return cap > tok->merge_cap ? merges_grow(tok, cap) : 0;
}

int tok_merges_put(struct fp8_tokenizer *tok, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    if ((tok->n_merges + 1) * 2 > tok->merge_cap) {
        int rc = merges_grow(tok, tok->merge_cap ? tok->merge_cap * 2 : 1024);
        if (rc < 0)
            return rc;
    }
    uint64_t k = merge_key(a, b);
    size_t mask = tok->merge_cap - 1;
    for (size_t j = merge_slot_hash(k) & mask;; j = (j + 1) & mask) {
        struct tok_merge_slot *s = &tok->merges[j];
        if (s->key == UINT64_MAX) {
            *s = (struct tok_merge_slot){k, rank, id};
            tok->n_merges++;
            return 0;
        }
        if (s->key == k) { /* HF collects merges into a HashMap: a repeated pair's last
                              * rank wins */
            s->rank = rank;
            s->id = id;
            return 0;
        }
    }
}

static inline const struct tok_merge_slot *merges_get(const struct fp8_tokenizer *tok,
                                                      int32_t a, int32_t b)
{
    if (!tok->merge_cap)
        return NULL;
    uint64_t k = merge_key(a, b);
    size_t mask = tok->merge_cap - 1;
    for (size_t j = merge_slot_hash(k) & mask;; j = (j + 1) & mask) {
        const struct tok_merge_slot *s = &tok->merges[j];
        if (s->key == k)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

static inline bool heap_less(const struct bpe_heap_item *x, const struct bpe_heap_item *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(struct bpe_heap_item *h, size_t *n, struct bpe_heap_item it)
{
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static struct bpe_heap_item heap_pop(struct bpe_heap_item *h, size_t *n)
{
    struct bpe_heap_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static int ids_push(int32_t **out, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*out, c * sizeof(*p));
        if (!p)
            return -ENOMEM;
        *out = p;
        *cap = c;
    }
    (*out)[(*n)++] = id;
    return 0;
}

static int ws_reserve(struct tok_ws *ws, size_t n)
{
    if (ws->sym_cap < n) {
        struct bpe_sym *s = realloc(ws->sym, n * sizeof(*s));
        if (!s)
            return -ENOMEM;
        ws->sym = s;
        ws->sym_cap = n;
    }
    /* Each merge queues at most two entries on top of the initial n - 1. */
    size_t hn = 3 * n + 4;
    if (ws->heap_cap < hn) {
        struct bpe_heap_item *h = realloc(ws->heap, hn * sizeof(*h));
        if (!h)
            return -ENOMEM;
        ws->heap = h;
        ws->heap_cap = hn;
    }
    return 0;
}

/* Appends symbol (id, len); fused unknowns extend the previous unknown symbol. */
static void sym_add(struct bpe_sym *sym, size_t *ns, int32_t id, uint32_t len, bool unk,
                    bool *prev_unk, bool fuse_unk)
{
    if (unk && fuse_unk && *prev_unk) {
        sym[*ns - 1].len += len;
        return;
    }
    sym[*ns] = (struct bpe_sym){id, (int32_t)*ns - 1, (int32_t)*ns + 1, len};
    (*ns)++;
    *prev_unk = unk;
}

static size_t build_symbols(const struct fp8_tokenizer *tok, struct bpe_sym *sym, const char *w,
                            size_t n)
{
    size_t ns = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < n;) {
        size_t k = 1;
        int32_t id;
        if (tok->bytelevel) {
            id = tok->bl_id[(uint8_t)w[i]];
        } else {
            uint32_t cp;
            k = tok_utf8_next(w + i, n - i, &cp);
            id = tok_map_get(&tok->vocab, w + i, k);
            if (id < 0 && tok->byte_fallback) {
                bool all = true;
                for (size_t j = 0; j < k; j++)
                    all = all && tok->byte_id[(uint8_t)w[i + j]] >= 0;
                if (all) {
                    for (size_t j = 0; j < k; j++)
                        sym_add(sym, &ns, tok->byte_id[(uint8_t)w[i + j]], 1, false, &prev_unk,
                                false);
                    i += k;
                    continue;
                }
            }
        }
        if (id >= 0)
            sym_add(sym, &ns, id, (uint32_t)k, false, &prev_unk, false);
        else if (tok->unk_id >= 0)
            sym_add(sym, &ns, tok->unk_id, (uint32_t)k, true, &prev_unk, tok->fuse_unk);
        i += k;
    }
    if (ns)
        sym[ns - 1].next = -1;
    return ns;
}

static void merge_all(const struct fp8_tokenizer *tok, struct tok_ws *ws, size_t ns)
{
    struct bpe_sym *sym = ws->sym;
    struct bpe_heap_item *heap = ws->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const struct tok_merge_slot *m = merges_get(tok, sym[i].id, sym[i + 1].id);
        if (m)
            heap_push(heap, &nh, (struct bpe_heap_item){m->rank, (uint32_t)i, m->id});
    }
    while (nh) {
        struct bpe_heap_item top = heap_pop(heap, &nh);
        struct bpe_sym *cur = &sym[top.pos];
        if (!cur->len || cur->next < 0)
            continue;
        struct bpe_sym *right = &sym[cur->next];
        const struct tok_merge_slot *m = merges_get(tok, cur->id, right->id);
        if (!m || m->id != top.id)
            continue;
        cur->id = top.id;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0)
            sym[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = merges_get(tok, sym[cur->prev].id, cur->id);
            if (m)
                heap_push(heap, &nh, (struct bpe_heap_item){m->rank, (uint32_t)cur->prev, m->id});
        }
        if (cur->next >= 0) {
            m = merges_get(tok, cur->id, sym[cur->next].id);
            if (m)
                heap_push(heap, &nh, (struct bpe_heap_item){m->rank, top.pos, m->id});
        }
    }
}

int tok_bpe_word(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *w, size_t n,
                 int32_t **out, size_t *n_out, size_t *cap_out)
{
    int rc;
    if (!n)
        return 0;
    if (tok->ignore_merges) {
        int32_t id;
        if (tok->bytelevel) {
            ws->tmp.len = 0;
            for (size_t i = 0; i < n; i++) {
                const struct tok_bytechar *c = &tok_byte_to_char[(uint8_t)w[i]];
                if ((rc = tok_buf_put(&ws->tmp, c->s, c->n)) < 0)
                    return rc;
            }
            id = tok_map_get(&tok->vocab, ws->tmp.p, ws->tmp.len);
        } else {
            id = tok_map_get(&tok->vocab, w, n);
        }
        if (id >= 0)
            return ids_push(out, n_out, cap_out, id);
    }

    uint64_t h = 0;
    struct tok_cache_slot *slot = NULL;
    if (n <= TOK_CACHE_KEY) {
        h = tok_hash(w, n);
        slot = &tok->cache[h & (TOK_CACHE_SLOTS - 1)];
        struct fp8_tokenizer *mtok = (struct fp8_tokenizer *)tok;
        pthread_mutex_lock(&mtok->lock);
        if (slot->klen == n && slot->hash == h && !memcmp(slot->key, w, n)) {
            int32_t ids[TOK_CACHE_IDS];
            size_t k = slot->n_ids;
            memcpy(ids, slot->ids, k * sizeof(ids[0]));
            pthread_mutex_unlock(&mtok->lock);
            for (size_t i = 0; i < k; i++)
                if ((rc = ids_push(out, n_out, cap_out, ids[i])) < 0)
                    return rc;
            return 0;
        }
        pthread_mutex_unlock(&mtok->lock);
    }

    if ((rc = ws_reserve(ws, n)) < 0)
        return rc;
    size_t ns = build_symbols(tok, ws->sym, w, n);
    merge_all(tok, ws, ns);
    size_t first = *n_out;
    for (int32_t i = ns ? 0 : -1; i >= 0; i = ws->sym[i].next)
        if ((rc = ids_push(out, n_out, cap_out, ws->sym[i].id)) < 0)
            return rc;

    size_t k = *n_out - first;
    if (slot && k <= TOK_CACHE_IDS) {
        struct fp8_tokenizer *mtok = (struct fp8_tokenizer *)tok;
        pthread_mutex_lock(&mtok->lock);
        slot->hash = h;
        slot->klen = (uint8_t)n;
        slot->n_ids = (uint8_t)k;
        memcpy(slot->key, w, n);
        memcpy(slot->ids, *out + first, k * sizeof(int32_t));
        pthread_mutex_unlock(&mtok->lock);
    }
    return 0;
}

void tok_ws_free(struct tok_ws *ws)
{
    if (!ws)
        return;
    pcre2_match_data_free(ws->md);
    pcre2_match_context_free(ws->mctx);
    pcre2_jit_stack_free(ws->jit);
    tok_buf_free(&ws->norm);
    tok_buf_free(&ws->tmp);
    tok_strv_free(&ws->words);
    tok_strv_free(&ws->words2);
    free(ws->sym);
    free(ws->heap);
    free(ws->span);
    free(ws);
}
