/* Paged KV block manager: a fixed pool of KV blocks (block_size token slots each), the
 * per-sequence block tables that map logical positions onto them, a free list, reference
 * counts, and a prefix cache of full blocks keyed by a content hash chain.
 *
 * Every block is in exactly one of three states:
 *   free    ref == 0, no hash, on the free list;
 *   used    ref >= 1 (one per sequence table that holds it), hashed or not;
 *   cached  ref == 0, hashed, on the LRU list: its KV is still valid and a new sequence
 *           with the same prefix takes it back; evicted (oldest first) when a block is
 *           needed and the free list is empty.
 * free + used + cached == n_blocks always; fp8_kv_blocks_check() verifies that and that
 * every reference count equals the number of tables holding the block.
 *
 * Hash chain: block k of a sequence hashes (hash of block k-1, its block_size token ids);
 * block 0 chains from a fixed root. Equal hashes therefore mean an equal token prefix at
 * equal positions, which is what makes the KV reusable. Lookups also compare the stored
 * token ids and parent hash, so a 64-bit collision can only alias two prefixes whose
 * parent chains collided too (see docs/scheduler.md).
 *
 * The manager knows nothing of what a block holds: the backend says how many bytes one
 * block costs across all layers (K and V, data and scales) and the pool is sized from a
 * byte budget. Not thread-safe: the engine thread owns it. */
#ifndef FP8_ENGINE_KV_BLOCKS_H
#define FP8_ENGINE_KV_BLOCKS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct fp8_kv_blocks_params {
    int64_t budget_bytes;    /* KV memory the pool may use */
    int64_t bytes_per_block; /* backend's cost of one block, all layers, K+V+scales */
    int32_t block_size;      /* token slots per block */
    int32_t max_model_len;   /* longest sequence (tokens); one such must fit in the pool */
    bool prefix_caching;     /* keep full blocks for reuse after their sequences end */
};

/* One sequence's block table. Owned by the sequence, filled by the manager. */
struct fp8_kv_seq {
    int32_t *blocks;  /* (max_blocks_per_seq) block ids in position order; -1 where dropped */
    int32_t n_blocks; /* entries in use: positions [0, n_blocks * block_size) are mapped */
    int32_t n_hashed; /* leading full blocks whose chain hash is known */
    uint64_t chain;   /* hash of block n_hashed - 1 (the root when n_hashed == 0) */
};

struct fp8_kv_blocks {
    int32_t n_blocks;
    int32_t block_size;
    int32_t max_blocks_per_seq; /* ceil(max_model_len / block_size) */
    int64_t bytes_per_block;
    bool prefix_caching;

    int32_t *ref;        /* (n_blocks) number of sequence tables holding the block */
    uint64_t *hash;      /* (n_blocks) chain hash, valid when is_hashed */
    uint64_t *parent;    /* (n_blocks) chain hash of the previous block, for verification */
    uint8_t *is_hashed;  /* (n_blocks) 1 while the block is in the hash table */
    int32_t *tokens;     /* (n_blocks, block_size) token ids of hashed blocks */

    int32_t *free_stack; /* (n_blocks) free block ids; the top is at n_free - 1 */
    int32_t n_free;

    /* LRU of cached blocks, a doubly linked list through prev/next (-1 ends). */
    int32_t *lru_prev; /* (n_blocks) */
    int32_t *lru_next; /* (n_blocks) */
    int32_t lru_head;  /* least recently used: evicted first */
    int32_t lru_tail;
    int32_t n_cached;

    /* Open-addressing hash table (linear probing) from chain hash to block id. */
    int32_t *table;    /* (table_cap) block id or -1 */
    uint32_t table_mask; /* table_cap - 1, table_cap a power of two >= 2 * n_blocks */

    int64_t n_evictions; /* cached blocks reclaimed for new content (stats) */
};

/* Sizes the pool as floor(budget_bytes / bytes_per_block) blocks; fails with -ENOMEM and a
 * message naming the figures when one max_model_len sequence would not fit (so that any
 * admitted request can always run once the others are preempted). */
int fp8_kv_blocks_init(struct fp8_kv_blocks *kv, const struct fp8_kv_blocks_params *p,
                       struct fp8_err *err);
void fp8_kv_blocks_free(struct fp8_kv_blocks *kv);

int fp8_kv_seq_init(struct fp8_kv_seq *seq, const struct fp8_kv_blocks *kv);
void fp8_kv_seq_free(struct fp8_kv_seq *seq);

/* Blocks a new allocation can take now: free plus cached (evictable). */
static inline int32_t fp8_kv_blocks_n_available(const struct fp8_kv_blocks *kv)
{
    return kv->n_free + kv->n_cached;
}

static inline int64_t fp8_kv_blocks_bytes_used(const struct fp8_kv_blocks *kv)
{
    return (int64_t)(kv->n_blocks - kv->n_free - kv->n_cached) * kv->bytes_per_block;
}

/* For an empty table: appends the cached blocks matching the longest prefix of tokens made
 * of whole blocks, at most max_tokens tokens, taking a reference on each. Returns the
 * number of tokens covered (a multiple of block_size); 0 when caching is off. */
int32_t fp8_kv_blocks_match_prefix(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq,
                                   const int32_t *tokens, int32_t max_tokens);

/* Grows the table so that positions [0, n_tokens) are mapped. All or nothing: returns
 * -ENOSPC with the table unchanged when the pool cannot supply the blocks, -E2BIG past
 * max_blocks_per_seq. Evicts cached blocks (LRU) when the free list is empty. */
int fp8_kv_blocks_reserve(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq, int32_t n_tokens);

/* Blocks fp8_kv_blocks_reserve would need to take for n_tokens. */
static inline int32_t fp8_kv_blocks_needed(const struct fp8_kv_blocks *kv,
                                           const struct fp8_kv_seq *seq, int32_t n_tokens)
{
    int32_t want = (n_tokens + kv->block_size - 1) / kv->block_size;
    return want > seq->n_blocks ? want - seq->n_blocks : 0;
}

/* Tells the manager that the KV of positions [0, n_computed) is written, with tokens the
 * sequence's ids: every block that is now full gets its chain hash and enters the prefix
 * cache (unless an identical block is already there). */
void fp8_kv_blocks_commit(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq,
                          const int32_t *tokens, int32_t n_computed);

/* Drops the sequence's references (last block first, so that a prefix's tail is evicted
 * before its head) and empties the table. Hashed blocks nobody holds become cached. */
void fp8_kv_blocks_release(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq);

/* Sliding-window recycling: releases the blocks that hold only positions < pos (a local
 * layer with window W at context length L needs positions >= L - W) and marks them -1 in
 * the table. Meant for a pool that serves sliding-window layers only, with prefix caching
 * off (see docs/scheduler.md). Returns the number of blocks released. */
int32_t fp8_kv_blocks_drop_before(struct fp8_kv_blocks *kv, struct fp8_kv_seq *seq, int32_t pos);

/* Verifies the accounting against the given live tables: state counts sum to n_blocks,
 * each ref equals the number of table entries naming the block, free and LRU lists hold
 * exactly the unreferenced blocks, the hash table indexes exactly the hashed blocks.
 * Returns 0 or -EFAULT with the first violation in err. O(n_blocks + table entries). */
int fp8_kv_blocks_check(const struct fp8_kv_blocks *kv, const struct fp8_kv_seq *const *seqs,
                        int32_t n_seqs, struct fp8_err *err);

#endif
