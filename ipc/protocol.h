/* The request channel between clients and the daemon: typed messages and their msgpack
 * form (docs/protocol.md is the wire reference; keep the two in step).
 *
 * Every message is one msgpack map with string keys: `v` (protocol version), `op` (what
 * the message is), `id` (chosen by the client, echoed by every reply to that request)
 * and the fields of that op. Decoding treats its input as hostile: size-capped, every
 * declared length checked against the bytes that remain before anything is allocated,
 * nesting depth-limited, unknown keys skipped, wrong types and out-of-range values
 * rejected with one clear line in err.
 *
 * Ownership: a decoded message owns its strings and arrays (fp8_msg_free releases them).
 * A message built by hand for encoding only borrows the caller's pointers: never pass it
 * to fp8_msg_free. Strings carry their length; a decoded string that was present also has
 * a terminating NUL, one that was absent is {NULL, 0}. */
#ifndef FP8_IPC_PROTOCOL_H
#define FP8_IPC_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define FP8_PROTO_VERSION 1

/* Limits every decoder enforces (the daemon also sets ZMQ_MAXMSGSIZE to FP8_MSG_MAX_BYTES,
 * so an oversized message never reaches the decoder over ZeroMQ). */
#define FP8_MSG_MAX_BYTES      (8u << 20) /* one encoded message */
#define FP8_MSG_MAX_DEPTH      8          /* nested maps/arrays, the top-level map is 1 */
#define FP8_MSG_MAX_STOP       16         /* stop strings per request */
#define FP8_MSG_MAX_STOP_BYTES 256        /* bytes of one stop string */
#define FP8_MSG_MAX_NAME_BYTES 256        /* client name, roles, model name and the like */

enum fp8_msg_op {
    /* requests, client -> daemon */
    FP8_MSG_OP_HELLO,
    FP8_MSG_OP_GENERATE,
    FP8_MSG_OP_CANCEL,
    FP8_MSG_OP_TOKENIZE,
    FP8_MSG_OP_DETOKENIZE,
    FP8_MSG_OP_INFO,
    FP8_MSG_OP_STATS,
    FP8_MSG_OP_PING,
    FP8_MSG_OP_BYE,
    /* replies, daemon -> client */
    FP8_MSG_OP_WELCOME,  /* to hello */
    FP8_MSG_OP_ACCEPTED, /* to generate: admitted, where its tokens will stream */
    FP8_MSG_OP_CHUNK,    /* to generate, when tokens stream as messages (no shared memory) */
    FP8_MSG_OP_DONE,     /* to generate: the last reply of a finished generation */
    FP8_MSG_OP_TOKENS,   /* to tokenize */
    FP8_MSG_OP_TEXT,     /* to detokenize */
    FP8_MSG_OP_MODEL,    /* to info */
    FP8_MSG_OP_COUNTERS, /* to stats */
    FP8_MSG_OP_PONG,     /* to ping */
    FP8_MSG_OP_OK,       /* to cancel and bye */
    FP8_MSG_OP_ERROR,    /* to anything */
    FP8_MSG_OP_COUNT
};

/* Who sent the bytes being decoded: each side accepts only the other side's ops. */
enum fp8_msg_dir {
    FP8_MSG_DIR_REQUEST, /* client -> daemon */
    FP8_MSG_DIR_REPLY,   /* daemon -> client */
};

/* Stable error codes of `error` replies (their wire names are the lower-case suffixes). */
enum fp8_msg_errc {
    FP8_MSG_ERRC_BAD_REQUEST,   /* malformed message, wrong type, value out of range */
    FP8_MSG_ERRC_TOO_LONG,      /* message, prompt or prompt + max_tokens over a limit */
    FP8_MSG_ERRC_BUSY,          /* no room now (slots, queue); retry later */
    FP8_MSG_ERRC_CANCELLED,     /* cancelled by the client or by backpressure timeout */
    FP8_MSG_ERRC_UNSUPPORTED,   /* protocol version, op or option this daemon lacks */
    FP8_MSG_ERRC_SHUTTING_DOWN, /* the daemon is stopping */
    FP8_MSG_ERRC_INTERNAL,      /* a daemon-side failure; the message says which */
    FP8_MSG_ERRC_COUNT
};

enum fp8_msg_finish {
    FP8_MSG_FINISH_EOS,    /* the model produced an end-of-sequence token */
    FP8_MSG_FINISH_STOP,   /* a stop string matched */
    FP8_MSG_FINISH_LENGTH, /* max_tokens or the model length was reached */
    FP8_MSG_FINISH_COUNT
};

/* aux of the FINAL record of a shared-memory stream (ring.h): how it ended. The `done` or
 * `error` message on the request channel carries the details. */
enum fp8_msg_ring_end {
    FP8_MSG_RING_END_EOS = FP8_MSG_FINISH_EOS,
    FP8_MSG_RING_END_STOP = FP8_MSG_FINISH_STOP,
    FP8_MSG_RING_END_LENGTH = FP8_MSG_FINISH_LENGTH,
    FP8_MSG_RING_END_CANCELLED = 3,
    FP8_MSG_RING_END_ERROR = 4,
};

enum fp8_msg_prompt {
    FP8_MSG_PROMPT_TEXT,   /* `prompt`: text, tokenized by the daemon */
    FP8_MSG_PROMPT_TOKENS, /* `tokens`: token ids, used as given */
    FP8_MSG_PROMPT_CHAT,   /* `messages`: rendered with the model's chat template */
};

struct fp8_msg_str {
    const char *s; /* (len) bytes; NUL-terminated when decoded */
    uint32_t len;
};

struct fp8_msg_ids {
    int32_t *ids; /* (n) token ids, each in [0, INT32_MAX] */
    uint32_t n;
};

struct fp8_msg_turn {
    struct fp8_msg_str role;    /* "system", "user", "assistant", ... (not interpreted here) */
    struct fp8_msg_str content;
};

/* Bits of fp8_msg_sampling.set: which fields the client gave. The daemon fills the others
 * from the model's generation defaults, so "absent" and "the default value" differ. */
enum fp8_msg_sampling_field {
    FP8_MSG_SAMPLING_MAX_TOKENS = 1u << 0,
    FP8_MSG_SAMPLING_TEMPERATURE = 1u << 1,
    FP8_MSG_SAMPLING_TOP_P = 1u << 2,
    FP8_MSG_SAMPLING_TOP_K = 1u << 3,
    FP8_MSG_SAMPLING_MIN_P = 1u << 4,
    FP8_MSG_SAMPLING_SEED = 1u << 5,
    FP8_MSG_SAMPLING_ALL = (1u << 6) - 1,
};

struct fp8_msg_sampling {
    uint32_t set;        /* enum fp8_msg_sampling_field bits */
    uint32_t max_tokens; /* >= 1 */
    float temperature;   /* [0, 100], 0 = greedy */
    float top_p;         /* (0, 1] */
    int32_t top_k;       /* >= 0, 0 = off */
    float min_p;         /* [0, 1] */
    uint64_t seed;
};

struct fp8_msg_hello {
    struct fp8_msg_str client; /* free-form name for logs, may be empty */
    bool shm;                  /* wants a shared-memory segment (default true) */
};

struct fp8_msg_generate {
    enum fp8_msg_prompt kind;
    struct fp8_msg_str prompt;     /* kind TEXT */
    struct fp8_msg_ids tokens;     /* kind TOKENS, n >= 1 */
    struct fp8_msg_turn *messages; /* (n_messages) kind CHAT, n_messages >= 1 */
    uint32_t n_messages;
    bool add_generation_prompt;    /* CHAT only, default true */
    int8_t enable_thinking;        /* CHAT only: -1 template default, 0 false, 1 true */
    struct fp8_msg_sampling sampling;
    struct fp8_msg_str *stop;      /* (n_stop) stop strings, each 1..FP8_MSG_MAX_STOP_BYTES */
    uint32_t n_stop;
    bool ignore_eos;
    int32_t priority;              /* higher is served first, default 0 */
};

struct fp8_msg_cancel {
    uint64_t target; /* id of the generate request to cancel (this session's) */
    uint64_t handle; /* nonzero: the daemon-wide handle of a generation instead */
};

struct fp8_msg_tokenize {
    struct fp8_msg_str text;
    bool add_special; /* add the model's BOS and the like (default false) */
};

struct fp8_msg_model {
    struct fp8_msg_str name;           /* model directory name or synthetic preset */
    struct fp8_msg_str arch;           /* "qwen3", "qwen3_moe", "gemma3" */
    struct fp8_msg_str backend;        /* "cuda" or "ref" */
    struct fp8_msg_str weights;        /* "fp8", "nvfp4", "bf16" */
    struct fp8_msg_str kv_cache_dtype; /* "fp8", "bf16", "f32" */
    uint32_t vocab_size;
    uint32_t max_model_len;
    uint32_t max_num_seqs;
};

struct fp8_msg_welcome {
    uint64_t session;          /* daemon-chosen session number, for logs */
    struct fp8_msg_str server; /* daemon version string */
    struct fp8_msg_model model;
    struct fp8_msg_str shm;    /* segment name for shm_open, empty when tokens stream as chunks */
    uint64_t shm_bytes;        /* its size */
};

struct fp8_msg_accepted {
    int32_t slot;           /* ring slot of the segment, -1 when tokens stream as chunks */
    uint32_t prompt_tokens; /* prompt length after tokenization / templating */
    uint64_t handle;        /* daemon-wide id of the generation (for `cancel` from elsewhere); 0
                             * from a daemon that has none */
};

struct fp8_msg_chunk {
    struct fp8_msg_ids tokens;
    struct fp8_msg_str text; /* the text those tokens completed (may be empty) */
};

struct fp8_msg_done {
    enum fp8_msg_finish finish;
    uint32_t prompt_tokens;     /* usage */
    uint32_t completion_tokens;
    uint64_t queue_us;          /* timings: submitted -> admitted */
    uint64_t prefill_us;        /* admitted -> first token sampled */
    uint64_t decode_us;         /* first token -> last token */
};

struct fp8_msg_counters {
    uint32_t running;           /* sequences in the batch */
    uint32_t waiting;           /* sequences queued */
    uint32_t sessions;          /* connected clients */
    uint32_t kv_blocks_used;
    uint32_t kv_blocks_total;
    uint64_t uptime_ms;
    uint64_t prompt_tokens;     /* totals since start */
    uint64_t generated_tokens;
};

struct fp8_msg_error {
    enum fp8_msg_errc code;
    struct fp8_msg_str message; /* one human-readable line */
};

struct fp8_msg {
    uint32_t v; /* FP8_PROTO_VERSION (set by decode; encode always writes its own) */
    enum fp8_msg_op op;
    uint64_t id;
    union {
        struct fp8_msg_hello hello;
        struct fp8_msg_generate generate;
        struct fp8_msg_cancel cancel;
        struct fp8_msg_tokenize tokenize;
        struct fp8_msg_ids detokenize; /* token ids to turn into text */
        struct fp8_msg_welcome welcome;
        struct fp8_msg_accepted accepted;
        struct fp8_msg_chunk chunk;
        struct fp8_msg_done done;
        struct fp8_msg_ids tokens;     /* reply to tokenize */
        struct fp8_msg_str text;       /* reply to detokenize */
        struct fp8_msg_model model;    /* reply to info */
        struct fp8_msg_counters counters;
        struct fp8_msg_error error;
    } u;
};

/* Wire names ("hello", "bad_request", "eos", ...); NULL when out of range. */
const char *fp8_msg_op_name(enum fp8_msg_op op);
const char *fp8_msg_errc_name(enum fp8_msg_errc code);
const char *fp8_msg_finish_name(enum fp8_msg_finish finish);

/* The error code a reply should carry for a negative errno returned by fp8_msg_decode. */
enum fp8_msg_errc fp8_msg_errc_from_errno(int code);

/* A zeroed message of that op with the protocol's defaults (hello.shm and
 * generate.add_generation_prompt true, generate.enable_thinking -1). */
void fp8_msg_init(struct fp8_msg *msg, enum fp8_msg_op op, uint64_t id);

/* Encodes msg into a new malloc'd buffer (*buf, *len; free() it). Refuses (-EINVAL) a
 * message the decoder would reject, so both sides agree on what is valid. */
int fp8_msg_encode(const struct fp8_msg *msg, void **buf, size_t *len, struct fp8_err *err);

/* Decodes one message sent in direction dir. Returns 0, or:
 *   -EMSGSIZE         len over FP8_MSG_MAX_BYTES
 *   -EBADMSG          not a well-formed map, wrong type, bad value, trailing bytes
 *   -EPROTONOSUPPORT  `v` is not FP8_PROTO_VERSION
 *   -EOPNOTSUPP       unknown op, or an op of the other direction
 *   -ENOMEM
 * On failure *out is untouched; fp8_msg_peek_id may still find the request id. */
int fp8_msg_decode(const void *buf, size_t len, enum fp8_msg_dir dir, struct fp8_msg *out,
                   struct fp8_err *err);

/* Best effort for error replies: the top-level `id` of a message that failed to decode.
 * Returns 0 and sets *id, or -ENOENT when no well-formed id is found. */
int fp8_msg_peek_id(const void *buf, size_t len, uint64_t *id);

/* Releases what fp8_msg_decode allocated and zeroes msg. Accepts NULL. */
void fp8_msg_free(struct fp8_msg *msg);

#endif
