#include "kv_blocks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Chain root: an arbitrary odd constant, so that block 0 of every sequence hashes from
 * the same state. */
#define KV_HASH_ROOT 0x6a09e667f3bcc909ull

static uint64_t hash_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_block(uint64_t parent, const int32_t *tokens, int32_t n)
{
    uint64_t h = parent;
    for (int32_t i = 0; i < n; i++)
        h = hash_mix(h + 0x9e3779b97f4a7c15ull + (uint32_t)tokens[i]);
    return h;
}

int fp8_kv_blocks_init(struct fp8_kv_blocks *kv, const struct fp8_kv_blocks_params *p,
                       struct fp8_err *err)
{
    if (!kv || !p)
        return fp8_err_set(err, -EINVAL, "kv blocks: NULL argument");
    if (p->block_size <= 0 || p->max_model_len <= 0 || p->bytes_per_block <= 0 ||
        p->budget_bytes < 0)
        return fp8_err_set(err, -EINVAL,
                           "kv blocks: block_size %d, max_model_len %d, bytes_per_block %lld "
                           "and budget %lld must be positive",
                           (int)p->block_size, (int)p->max_model_len,
                           (long long)p->bytes_per_block, (long long)p->budget_bytes);
    int64_t n_blocks = p->budget_bytes / p->bytes_per_block;
    int32_t per_seq = (int32_t)(((int64_t)p->max_model_len + p->block_size - 1) / p->block_size);
    if (n_blocks < per_seq)
        return fp8_err_set(err, -ENOMEM,
                           "kv blocks: a budget of %lld bytes holds %lld blocks of %lld bytes, "
                           "but one sequence of max_model_len %d needs %d blocks of %d tokens "
                           "(%lld bytes)",
                           (long long)p->budget_bytes, (long long)n_blocks,
                           (long long)p->bytes_per_block, (int)p->max_model_len, (int)per_seq,
                           (int)p->block_size, (long long)per_seq * p->bytes_per_block);
    if (n_blocks > (1 << 29))
        return fp8_err_set(err, -EINVAL, "kv blocks: %lld blocks exceed the limit of %d",
                           (long long)n_blocks, 1 << 29);

    struct fp8_kv_blocks k = {0};
    k.n_blocks = (int32_t)n_blocks;
    k.block_size = p->block_size;
    k.max_blocks_per_seq = per_seq;
    k.bytes_per_block = p->bytes_per_block;
    k.prefix_caching = p->prefix_caching;
    k.lru_head = k.lru_tail = -1;
    uint32_t cap = 2;
    while (cap < 2u * (uint32_t)k.n_blocks)
        cap <<= 1;
    k.table_mask = cap - 1;

    size_t n = (size_t)k.n_blocks;
    k.ref = calloc(n, sizeof(*k.ref));
    k.hash = calloc(n, sizeof(*k.hash));
    k.parent = calloc(n, sizeof(*k.parent));
    k.is_hashed = calloc(n, sizeof(*k.is_hashed));
    k.free_stack = malloc(n * sizeof(*k.free_stack));
    k.lru_prev = malloc(n * sizeof(*k.lru_prev));
    k.lru_next = malloc(n * sizeof(*k.lru_next));
    if (k.prefix_caching) {
        k.tokens = malloc(n * (size_t)k.block_size * sizeof(*k.tokens));
        k.table = malloc((size_t)cap * sizeof(*k.table));
    }
    if (!k.ref || !k.hash || !k.parent || !k.is_hashed || !k.free_stack || !k.lru_prev ||
        !k.lru_next || (k.prefix_caching && (!k.tokens || !k.table)))
        goto fail;
    /* Lowest ids on top, so that a fresh pool hands out 0, 1, 2, ... */
    for (int32_t i = 0; i < k.n_blocks; i++) {
        k.free_stack[i] = k.n_blocks - 1 - i;
        k.lru_prev[i] = k.lru_next[i] = -1;
    }
    k.n_free = k.n_blocks;
    if (k.table)
        memset(k.table, 0xff, (size_t)cap * sizeof(*k.table));
    *kv = k;
    return 0;
fail:
    fp8_kv_blocks_free(&k);
    return fp8_err_set(err, -ENOMEM, "kv blocks: out of host memory for %d block records",
                       (int)n);
}

void fp8_kv_blocks_free(struct fp8_kv_blocks *kv)
{
    if (!kv)
        return;
    free(kv->ref);
    free(kv->hash);
    free(kv->parent);
    free(kv->is_hashed);
    free(kv->tokens);
    free(kv->free_stack);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->table);
    memset(kv, 0, sizeof(*kv));
}

int fp8_kv_seq_init(struct fp8_kv_seq *seq, const struct fp8_kv_blocks *kv)
{
    if (!seq || !kv)
        return -EINVAL;
    int32_t *blocks = malloc((size_t)kv->max_blocks_per_seq * sizeof(*blocks));
    if (!blocks)
        return -ENOMEM;
    *seq = (struct fp8_kv_seq){.blocks = blocks, .chain = KV_HASH_ROOT};
    return 0;
}

void fp8_kv_seq_free(struct fp8_kv_seq *seq)
{
    if (!seq)
        return;
    free(seq->blocks);
    memset(seq, 0, sizeof(*seq));
}

/* ---- LRU of cached blocks ------------------------------------------------------------ */

static void lru_unlink(struct fp8_kv_blocks *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0)
        kv->lru_next[p] = n;
    else
        kv->lru_head = n;
    if (n >= 0)
        kv->lru_prev[n] = p;
    else
        kv->lru_tail = p;
    kv->lru_prev[b] = kv->lru_next[b] = -1;
    kv->n_cached--;
}

static void lru_push_tail(struct fp8_kv_blocks *kv, int32_t b)
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_cached++;
}

/* ---- hash table ------------------------------------------------------------------------ */

static uint32_t table_slot(const struct fp8_kv_blocks *kv, uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32)) & kv->table_mask;
}

static int32_t table_find(const struct fp8_kv_blocks *kv, uint64_t h, uint64_t parent,
                          const int32_t *tokens)
{
    for (uint32_t i = table_slot(kv, h);; i = (i + 1) & kv->table_mask) {
        int32_t b = kv->table[i];
        if (b < 0)
            return -1;
        if (kv->hash[b] == h && kv->parent[b] == parent &&
            !memcmp(kv->tokens + (size_t)b * kv->block_size, tokens,
                    (size_t)kv->block_size * sizeof(*tokens)))
            return b;
    }
}

/* Whether any block holds hash h (identical content is stored once). */
static bool table_has(const struct fp8_kv_blocks *kv, uint64_t h)
{
    for (uint32_t i = table_slot(kv, h);; i = (i + 1) & kv->table_mask) {
        int32_t b = kv->table[i];
        if (b < 0)
            return false;
        if (kv->hash[b] == h)
            return true;
    }
}

static void table_insert(struct fp8_kv_blocks *kv, int32_t b)
{
    uint32_t i = table_slot(kv, kv->hash[b]);
    while (kv->table[i] >= 0)
        i = (i + 1) & kv->table_mask;
    kv->table[i] = b;
}

/* Linear-probing deletion by backward shift, so that no tombstones accumulate. */
static void table_remove(struct fp8_kv_blocks *kv, int32_t b)
{
    uint32_t i = table_slot(kv, kv->hash[b]);
    while (kv->table[i] != b)
        i = (i + 1) & kv->table_mask;
    for (uint32_t j = (i + 1) & kv->table_mask;; j = (j + 1) & kv->table_mask) {
        int32_t c = kv->table[j];
        if (c < 0)
            break;
        uint32_t home = table_slot(kv, kv->hash[c]);
        /* c may move into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            kv->table[i] = c;
            i = j;
        }
    }
    kv->table[i] = -1;
}

/* ---- allocation -------------------------------------------------------------------------- */

static int32_t block_take(struct fp8_kv_blocks *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else {
        b = kv->lru_head;
        lru_unlink(kv, b);
        table_remove(kv, b);
        kv->is_hashed[b] = 0;
        kv->n_evictions++;
    }
    kv->ref[b] = 1;
    return b;
}

static void block_put(struct fp8_kv_blocks *kv, int32_t b)
{
    if (--kv->ref[b] > 0)
        return;
    if (kv->is_hashed[b])
        lru_push_tail(kv, b);
    else
        kv->free_stack[kv->n_free++] = b;
}

int32_t fp8_kv_blocks_match_prefix(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq,
                                   const int32_t *tokens, int32_t max_tokens)
{
    if (!kv->prefix_caching || seq->n_blocks != 0)
        return 0;
    int32_t n_full = max_tokens / kv->block_size;
    uint64_t chain = KV_HASH_ROOT;
    int32_t k = 0;
    for (; k < n_full; k++) {
        const int32_t *t = tokens + (size_t)k * kv->block_size;
        uint64_t h = hash_block(chain, t, kv->block_size);
        int32_t b = table_find(kv, h, chain, t);
        if (b < 0)
            break;
        if (kv->ref[b]++ == 0)
            lru_unlink(kv, b);
        seq->blocks[k] = b;
        chain = h;
    }
    seq->n_blocks = seq->n_hashed = k;
    seq->chain = chain;
    return k * kv->block_size;
}

int fp8_kv_blocks_reserve(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq, int32_t n_tokens)
{
    int32_t want = (n_tokens + kv->block_size - 1) / kv->block_size;
    if (want <= seq->n_blocks)
        return 0;
    if (want > kv->max_blocks_per_seq)
        return -E2BIG;
    if (want - seq->n_blocks > fp8_kv_blocks_n_available(kv))
        return -ENOSPC;
    while (seq->n_blocks < want)
        seq->blocks[seq->n_blocks++] = block_take(kv);
    return 0;
}

void fp8_kv_blocks_commit(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq,
                          const int32_t *tokens, int32_t n_computed)
{
    if (!kv->prefix_caching)
        return;
    int32_t full = n_computed / kv->block_size;
    if (full > seq->n_blocks)
        full = seq->n_blocks;
    for (int32_t k = seq->n_hashed; k < full; k++) {
        const int32_t *t = tokens + (size_t)k * kv->block_size;
        uint64_t h = hash_block(seq->chain, t, kv->block_size);
        int32_t b = seq->blocks[k];
        if (b >= 0 && !kv->is_hashed[b] && !table_has(kv, h)) {
            kv->hash[b] = h;
            kv->parent[b] = seq->chain;
            memcpy(kv->tokens + (size_t)b * kv->block_size, t,
                   (size_t)kv->block_size * sizeof(*t));
            kv->is_hashed[b] = 1;
            table_insert(kv, b);
        }
        seq->chain = h;
        seq->n_hashed = k + 1;
    }
}

void fp8_kv_blocks_release(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq)
{
    for (int32_t k = seq->n_blocks - 1; k >= 0; k--)
        if (seq->blocks[k] >= 0)
            block_put(kv, seq->blocks[k]);
    seq->n_blocks = seq->n_hashed = 0;
    seq->chain = KV_HASH_ROOT;
}

int32_t fp8_kv_blocks_drop_before(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq, int32_t pos)
{
    int32_t below = pos / kv->block_size;
    if (below > seq->n_blocks)
        below = seq->n_blocks;
    int32_t n = 0;
    for (int32_t k = 0; k < below; k++) {
        if (seq->blocks[k] < 0)
            continue;
        block_put(kv, seq->blocks[k]);
        seq->blocks[k] = -1;
        n++;
    }
    return n;
}

/* ---- invariants --------------------------------------------------------------------------- */

int fp8_kv_blocks_check(const struct fp8_kv_blocks *kv, const struct fp8_kv_seq *const *seqs,
                        int32_t n_seqs, struct fp8_err *err)
{
    int rc = 0;
    int32_t n = kv->n_blocks;
    int32_t *count = calloc((size_t)n, sizeof(*count));
    uint8_t *seen = calloc((size_t)n, 1); /* 1 free list, 2 LRU */
    if (!count || !seen) {
        rc = fp8_err_set(err, -ENOMEM, "kv check: out of memory");
        goto out;
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct fp8_kv_seq *q = seqs[s];
        if (q->n_blocks < 0 || q->n_blocks > kv->max_blocks_per_seq ||
            q->n_hashed > q->n_blocks) {
            rc = fp8_err_set(err, -EFAULT, "kv check: seq %d has %d blocks, %d hashed (max %d)",
                             (int)s, (int)q->n_blocks, (int)q->n_hashed,
                             (int)kv->max_blocks_per_seq);
            goto out;
        }
        for (int32_t k = 0; k < q->n_blocks; k++) {
            int32_t b = q->blocks[k];
            if (b < -1 || b >= n) {
                rc = fp8_err_set(err, -EFAULT, "kv check: seq %d entry %d names block %d",
                                 (int)s, (int)k, (int)b);
                goto out;
            }
            if (b >= 0)
                count[b]++;
        }
    }
    for (int32_t i = 0; i < kv->n_free; i++) {
        int32_t b = kv->free_stack[i];
        if (b < 0 || b >= n || seen[b]) {
            rc = fp8_err_set(err, -EFAULT, "kv check: free list entry %d is block %d (%s)",
                             (int)i, (int)b, b < 0 || b >= n ? "out of range" : "twice");
            goto out;
        }
        seen[b] = 1;
    }
    int32_t n_lru = 0;
    for (int32_t b = kv->lru_head, prev = -1; b >= 0; prev = b, b = kv->lru_next[b]) {
        if (b >= n || seen[b] || kv->lru_prev[b] != prev || n_lru >= n) {
            rc = fp8_err_set(err, -EFAULT, "kv check: LRU list broken at block %d", (int)b);
            goto out;
        }
        seen[b] = 2;
        n_lru++;
    }
    if (n_lru != kv->n_cached) {
        rc = fp8_err_set(err, -EFAULT, "kv check: LRU holds %d blocks, n_cached says %d",
                         (int)n_lru, (int)kv->n_cached);
        goto out;
    }
    int32_t n_used = 0, n_hashed = 0;
    for (int32_t b = 0; b < n; b++) {
        if (kv->ref[b] != count[b]) {
            rc = fp8_err_set(err, -EFAULT, "kv check: block %d has ref %d but %d tables hold it",
                             (int)b, (int)kv->ref[b], (int)count[b]);
            goto out;
        }
        if (kv->ref[b] > 0)
            n_used++;
        const char *bad = NULL;
        if (kv->ref[b] > 0 && seen[b])
            bad = "referenced but on a free/LRU list";
        else if (kv->ref[b] == 0 && !seen[b])
            bad = "unreferenced and on no list (leaked)";
        else if (seen[b] == 1 && kv->is_hashed[b])
            bad = "hashed but on the free list";
        else if (seen[b] == 2 && !kv->is_hashed[b])
            bad = "on the LRU list without a hash";
        if (bad) {
            rc = fp8_err_set(err, -EFAULT, "kv check: block %d is %s", (int)b, bad);
            goto out;
        }
        if (kv->is_hashed[b]) {
            n_hashed++;
            if (!kv->prefix_caching ||
                table_find(kv, kv->hash[b], kv->parent[b],
                           kv->tokens + (size_t)b * kv->block_size) != b) {
                rc = fp8_err_set(err, -EFAULT, "kv check: hashed block %d not in the table",
                                 (int)b);
                goto out;
            }
        }
    }
    if (kv->n_free + n_used + kv->n_cached != n) {
        rc = fp8_err_set(err, -EFAULT, "kv check: free %d + used %d + cached %d != %d blocks",
                         (int)kv->n_free, (int)n_used, (int)kv->n_cached, (int)n);
        goto out;
    }
    if (kv->table) {
        int32_t n_entries = 0;
        for (uint32_t i = 0; i <= kv->table_mask; i++)
            n_entries += kv->table[i] >= 0;
        if (n_entries != n_hashed)
            rc = fp8_err_set(err, -EFAULT, "kv check: table has %d entries for %d hashed blocks",
                             (int)n_entries, (int)n_hashed);
    }
out:
    free(count);
    free(seen);
    return rc;
}
