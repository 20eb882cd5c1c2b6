/* One engine step as the scheduler hands it to the model: a flat list of tokens from
 * several sequences (prefill chunks and single decode tokens mixed), where each token's
 * K/V goes in the paged cache, and which blocks each sequence may attend to.
 *
 * KV addressing: the cache is a pool of blocks of block_size token slots. Slot s lives in
 * block s / block_size at offset s % block_size. A sequence's logical position p is in
 * block block_table[seq * max_blocks_per_seq + p / block_size]. */
#ifndef FP8_ENGINE_BATCH_H
#define FP8_ENGINE_BATCH_H

#include <stdint.h>

struct fp8_batch {
    int32_t n_tokens;
    const int32_t *tokens;    /* (n_tokens) token ids */
    const int32_t *positions; /* (n_tokens) position of each token in its sequence */
    const int32_t *slots;     /* (n_tokens) KV slot each token's K/V is written to */

    int32_t n_seqs;
    const int32_t *seq_start; /* (n_seqs + 1) seq i owns tokens [seq_start[i], seq_start[i+1]) */
    const int32_t *seq_len;   /* (n_seqs) tokens in the cache after this step (context length) */
    const int32_t *block_table; /* (n_seqs, max_blocks_per_seq) block ids, -1 past the end */
    int32_t max_blocks_per_seq;
    int32_t block_size;

    /* Logits are produced for the last token of each sequence whose flag is set (a
     * prefill chunk that does not end the prompt needs none), in sequence order. */
    const uint8_t *want_logits; /* (n_seqs) */
    /* Optional (NULL: none): sequences whose every token gets logits, in token order, in
     * place of the last one only (teacher-forced scoring: `fp8d logits`). */
    const uint8_t *want_all_logits; /* (n_seqs) */
};

#endif
