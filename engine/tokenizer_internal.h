/* Internals shared by the tokenizer's files (engine/tokenizer*.c, bpe.c, pretok.c, decode.c).
 * Not a public interface: only engine/tokenizer.h is. */
#ifndef FP8_ENGINE_TOKENIZER_INTERNAL_H
#define FP8_ENGINE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/tokenizer.h"

/* ---- growable byte buffer and list of string spans --------------------------------- */
struct tok_buf {
    char *p;
    size_t len, cap;
};

int tok_buf_reserve(struct tok_buf *b, size_t extra);
int tok_buf_put(struct tok_buf *b, const void *data, size_t n);
void tok_buf_free(struct tok_buf *b);

/* Strings stored back to back in one buffer: string i is buf.p[off[i] .. off[i]+len[i]). */
struct tok_strv {
    struct tok_buf buf;
    size_t *off;  /* (cap) */
    size_t *len;  /* (cap) */
    size_t n, cap;
};

int tok_strv_push(struct tok_strv *v, const char *s, size_t n);
/* Appends to the last string (which must exist). */
int tok_strv_append(struct tok_strv *v, const char *s, size_t n);
void tok_strv_clear(struct tok_strv *v);
void tok_strv_free(struct tok_strv *v);

/* ---- string -> int32 hash map (open addressing) ------------------------------------ */
struct tok_map_slot {
    const char *key; /* NULL: empty */
    uint32_t len;
    int32_t val;
};

struct tok_map {
    struct tok_map_slot *slot; /* (cap) */
    size_t cap;                /* power of two */
    size_t n;
};

uint64_t tok_hash(const void *data, size_t n);
int tok_map_init(struct tok_map *m, size_t expected);
/* key must outlive the map. Returns -EEXIST (and keeps the old value) on a duplicate. */
int tok_map_put(struct tok_map *m, const char *key, size_t len, int32_t val);
/* The value, or -1. */
int32_t tok_map_get(const struct tok_map *m, const char *key, size_t len);
void tok_map_free(struct tok_map *m);

/* ---- byte-level alphabet (GPT-2): every byte <-> one printable code point ---------- */
/* UTF-8 of the code point standing for byte b. */
struct tok_bytechar {
    char s[3];
    uint8_t n;
};
extern struct tok_bytechar tok_byte_to_char[256];
/* Code point -> byte, or -1 (code points < 324 are enough). */
extern int16_t tok_char_to_byte[324];
void tok_bytelevel_init(void);

/* ---- UTF-8 helpers ---------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid or truncated. */
size_t tok_utf8_valid_len(const uint8_t *s, size_t n);
/* Offset of the first invalid byte in s, or n when s is valid UTF-8. */
size_t tok_utf8_check(const char *s, size_t n);
/* Unicode White_Space (Rust's char::is_whitespace). */
bool tok_is_space(uint32_t cp);
/* Decodes the (valid) sequence at s and returns its length. */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Appends s as UTF-8 the way Rust's String::from_utf8_lossy does (one U+FFFD per maximal
 * invalid subpart). Returns whether s ends inside a sequence that more bytes could
 * complete (then that tail was replaced by U+FFFD too). */
int tok_utf8_lossy(struct tok_buf *out, const char *s, size_t n, bool *incomplete_tail);

/* ---- patterns: a literal string or a PCRE2 regex ----------------------------------- */
struct tok_pattern {
    char *lit;          /* literal (String) pattern, or NULL */
    size_t lit_len;
    pcre2_code *re;     /* Regex pattern, JIT-compiled, or NULL */
};

/* Calls fn(ctx, start, end) for each non-overlapping match in s[0..n), left to right; an
 * empty match advances by one character, like HF (Oniguruma's find_iter). */
typedef int (*tok_match_fn)(void *ctx, size_t start, size_t end);
struct tok_ws;
int tok_pattern_each(const struct tok_pattern *p, struct tok_ws *ws, const char *s, size_t n,
                     tok_match_fn fn, void *ctx);
void tok_pattern_free(struct tok_pattern *p);

/* ---- components ------------------------------------------------------------------- */
enum tok_norm_type { TOK_NORM_NFC, TOK_NORM_REPLACE, TOK_NORM_PREPEND };

struct tok_norm {
    enum tok_norm_type type;
    struct tok_pattern pat; /* REPLACE */
    char *content;          /* REPLACE replacement / PREPEND prefix */
    size_t content_len;
};

enum tok_split_behavior {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};

enum tok_pre_type { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE };

enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };

struct tok_pre {
    enum tok_pre_type type;
    struct tok_pattern pat;          /* SPLIT; BYTELEVEL with use_regex (GPT-2's regex) */
    enum tok_split_behavior behavior;
    bool invert;
    bool add_prefix_space;           /* BYTELEVEL */
    bool use_regex;                  /* BYTELEVEL */
    char repl[8];                    /* METASPACE replacement character (UTF-8) */
    size_t repl_len;
    enum tok_prepend_scheme prepend; /* METASPACE */
    bool split;                      /* METASPACE */
};

enum tok_dec_type {
    TOK_DEC_BYTELEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTEFALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
};

struct tok_dec {
    enum tok_dec_type type;
    struct tok_pattern pat; /* REPLACE */
    char *content;          /* REPLACE replacement; STRIP the character (UTF-8) */
    size_t content_len;
    size_t start, stop;     /* STRIP: at most this many characters from each end */
};

/* Added tokens: matched on the raw text (normalized=false) or after normalization. */
struct tok_added {
    char *content;
    size_t len;
    char *norm;         /* normalized content when normalized and different, else NULL */
    size_t norm_len;
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
};

/* Byte trie over added-token contents for leftmost-longest matching. */
struct tok_trie {
    uint32_t *child;    /* (n_nodes) first child node, 0 = none */
    uint32_t *sibling;  /* (n_nodes) next sibling, 0 = none */
    uint8_t *byte;      /* (n_nodes) edge byte into the node */
    int32_t *term;      /* (n_nodes) index into added[] ending here, or -1 */
    size_t n_nodes, cap;
    bool first[256];    /* bytes that start some token */
    bool empty;
};

/* Merge table: (left id, right id) -> (rank, merged id). */
struct tok_merge_slot {
    uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t id;
};

#define TOK_CACHE_SLOTS 16384
#define TOK_CACHE_KEY 48
#define TOK_CACHE_IDS 24

struct tok_cache_slot {
    uint64_t hash;
    uint8_t klen, n_ids; /* klen 0: empty */
    char key[TOK_CACHE_KEY];
    int32_t ids[TOK_CACHE_IDS];
};

struct tok_span {
    size_t start, end;
    bool match;
};

/* Scratch space for one encode call; pooled so that calls allocate nothing in steady
 * state and may run on several threads. */
struct tok_ws {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    struct tok_buf norm, tmp;
    struct tok_strv words, words2;
    struct bpe_sym *sym;
    size_t sym_cap;
    struct bpe_heap_item *heap;
    size_t heap_cap;
    struct tok_span *span;
    size_t n_span, span_cap;
    struct tok_ws *next_free;
};

struct fp8_tokenizer {
    /* model */
    char *pool;                 /* the vocabulary's strings, NUL-separated */
    char **tokens;              /* (n_vocab) id -> token string, into pool or an added
                                 * token's content (added content wins) */
    uint32_t *token_len;        /* (n_vocab) */
    int32_t n_vocab;
    /* (n_vocab) the string decoding starts from: the token, except that a normalized
     * added token decodes from its normalized content (HF's simple_id_to_token) */
    const char **dec_str;
    uint32_t *dec_len;
    struct tok_map vocab;       /* model vocabulary: token -> id */
    struct tok_merge_slot *merges; /* (merge_cap) */
    size_t merge_cap, n_merges;
    int32_t unk_id;             /* -1: none */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256];       /* byte-fallback "<0xXX>" ids, or -1 */

    /* pipeline */
    struct tok_norm *norm;      /* (n_norm) applied in order */
    size_t n_norm;
    struct tok_pre *pre;        /* (n_pre) applied in order */
    size_t n_pre;
    bool bytelevel;             /* the last pre-tokenizer is ByteLevel: BPE starts from bytes */
    int32_t bl_id[256];         /* byte-level: byte -> id of its alphabet character */
    struct tok_dec *dec;        /* (n_dec) */
    size_t n_dec;
    bool has_decoder;
    int32_t *post_before, *post_after; /* add_special: ids around the sequence */
    size_t n_post_before, n_post_after;

    /* added tokens */
    struct tok_added *added;    /* (n_added) */
    size_t n_added;
    bool *special;              /* (n_vocab) */
    struct tok_map added_map;   /* content -> id */
    struct tok_trie trie_raw, trie_norm;

    /* caches */
    pthread_mutex_t lock;       /* guards cache and ws_free */
    struct tok_cache_slot *cache; /* (TOK_CACHE_SLOTS) */
    struct tok_ws *ws_free;
};

/* bpe.c */
/* Sizes the merge table for n merges up front (no rehashing while loading). */
int tok_merges_reserve(struct fp8_tokenizer *tok, size_t n);
int tok_merges_put(struct fp8_tokenizer *tok, int32_t a, int32_t b, uint32_t rank, int32_t id);
/* Appends the ids of one pre-token (raw bytes; for a byte-level model the bytes before
 * the alphabet mapping) to out. */
int tok_bpe_word(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *w, size_t n,
                 int32_t **out, size_t *n_out, size_t *cap_out);
void tok_ws_free(struct tok_ws *ws);

/* tokenizer.c: pooled scratch space (NULL when out of memory) */
struct tok_ws *tok_ws_acquire(const struct fp8_tokenizer *tok);
void tok_ws_release(const struct fp8_tokenizer *tok, struct tok_ws *ws);

/* pretok.c */
/* Replaces every match of p in s by content, into out (replacing its contents). */
int tok_replace_all(const struct tok_pattern *p, struct tok_ws *ws, const char *s, size_t n,
                    const char *content, size_t content_len, struct tok_buf *out);
/* Normalizes s into out (replacing its contents). */
int tok_normalize(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                  struct tok_buf *out);
/* Splits s into words (appended to ws->words). first: s starts the input. */
int tok_pretokenize(const struct fp8_tokenizer *tok, struct tok_ws *ws, const char *s, size_t n,
                    bool first);

/* tokenizer_json.c */
int tok_pattern_compile(struct tok_pattern *p, const char *regex, size_t len, struct fp8_err *err);

#endif
