/* Tokenizer: Hugging Face tokenizer.json (BPE models) in C, byte-exact with HF tokenizers.
 *
 * Supported components (anything else is a load error naming it):
 *   model          BPE (byte-level alphabet or byte_fallback; merges as "a b" or ["a","b"])
 *   added_tokens   matched before the model, leftmost-longest, with HF's flags
 *   normalizer     NFC, Replace, Prepend, Sequence
 *   pre_tokenizer  Split (PCRE2, UTF+UCP, JIT), ByteLevel, Metaspace, Sequence
 *   post_processor ByteLevel, TemplateProcessing (only with add_special)
 *   decoder        ByteLevel, Replace, ByteFallback, Fuse, Strip, Sequence
 *
 * Encoding takes valid UTF-8 only: invalid input is rejected with -EILSEQ and the byte
 * offset of the first bad sequence (docs/tokenizer.md). Decoding never fails on ids in
 * range: undecodable byte sequences become U+FFFD exactly as HF does.
 * A loaded tokenizer is immutable apart from internal caches guarded by a mutex, so one
 * instance may encode and decode from several threads at once. */
#ifndef FP8_ENGINE_TOKENIZER_H
#define FP8_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct fp8_tokenizer;

/* Loads a tokenizer.json file. */
int fp8_tokenizer_load(struct fp8_tokenizer **out, const char *path, struct fp8_err *err);
/* Same from a JSON text in memory (len bytes). */
int fp8_tokenizer_load_mem(struct fp8_tokenizer **out, const char *json, size_t len,
                           struct fp8_err *err);
void fp8_tokenizer_free(struct fp8_tokenizer *tok);

/* Encodes len bytes of UTF-8 text. add_special applies the post-processor (e.g. Gemma's
 * <bos>), like HF's add_special_tokens=True. On success *ids (malloc'd, caller frees) holds
 * *n_ids ids and 0 is returned. */
int fp8_tokenizer_encode(const struct fp8_tokenizer *tok, const char *text, size_t len,
                         bool add_special, int32_t **ids, size_t *n_ids, struct fp8_err *err);

/* Decodes ids into malloc'd, NUL-terminated UTF-8 (*len excludes the NUL). skip_special
 * drops added tokens marked special, like HF's skip_special_tokens=True. */
int fp8_tokenizer_decode(const struct fp8_tokenizer *tok, const int32_t *ids, size_t n_ids,
                         bool skip_special, char **text, size_t *len, struct fp8_err *err);

/* Number of ids (model vocabulary and added tokens): valid ids are [0, n_vocab). */
int32_t fp8_tokenizer_n_vocab(const struct fp8_tokenizer *tok);
/* The token's string as stored in the file (byte-level or "▁" form), NULL if unknown. */
const char *fp8_tokenizer_id_to_token(const struct fp8_tokenizer *tok, int32_t id);
/* The id of a vocabulary or added token string, or -1. */
int32_t fp8_tokenizer_token_to_id(const struct fp8_tokenizer *tok, const char *token);
/* Whether id is an added token marked special. */
bool fp8_tokenizer_is_special(const struct fp8_tokenizer *tok, int32_t id);

/* Streaming detokenizer: tokens arrive one at a time; each push returns the text that is
 * final so far. Every returned piece is whole UTF-8 and the concatenation of all pieces
 * (including finish) equals fp8_tokenizer_decode of all ids. Text is held back only while
 * it may still change: an incomplete UTF-8 sequence (ByteLevel) or a run of byte-fallback
 * tokens (ByteFallback decodes a whole run at once). Decoder chains whose steps after Fuse or
 * ByteLevel could change text across chunk boundaries (a Strip of the end, a regex Replace)
 * are refused by fp8_detok_init with -ENOTSUP. */
struct fp8_detok {
    const struct fp8_tokenizer *tok;
    bool skip_special;
    int32_t *pending;   /* (cap) ids not yet emitted */
    size_t n_pending, cap;
    char *out;          /* last returned text, owned here */
    bool emitted;       /* some text was returned (a Strip after Fuse acts on the start only) */
    size_t stripped;    /* characters that Strip removed at the start so far */
};

int fp8_detok_init(struct fp8_detok *d, const struct fp8_tokenizer *tok, bool skip_special,
                   struct fp8_err *err);
/* Adds one id. *text points to the newly final text (valid until the next call; *len may
 * be 0). */
int fp8_detok_push(struct fp8_detok *d, int32_t id, const char **text, size_t *len,
                   struct fp8_err *err);
/* Ends the stream: returns whatever is still held back. The detokenizer is then empty
 * and may be reused. */
int fp8_detok_finish(struct fp8_detok *d, const char **text, size_t *len, struct fp8_err *err);
void fp8_detok_free(struct fp8_detok *d);

#endif
