/* libfp8d: the client library of the fp8d inference daemon.
 *
 *     fp8d_client *c;
 *     fp8d_stream *s;
 *     struct fp8d_token t;
 *     if (fp8d_connect(NULL, 0, 5000, &c) < 0) ...
 *     if (fp8d_generate(c, "Once upon a time", NULL, &s) < 0) ...
 *     while ((rc = fp8d_stream_next(s, &t, -1)) == 1)
 *         fwrite(t.text, 1, t.text_len, stdout);
 *     // rc == 0: finished (fp8d_stream_result says why); rc < 0: an error
 *     fp8d_stream_free(s);
 *     fp8d_close(c);
 *
 * Every call returns 0 (or a count, or 1 for "one token") on success and a negative errno
 * code on failure; fp8d_strerror names it and, for errors the daemon reported,
 * fp8d_last_error gives the daemon's own one-line message. The library never prints,
 * never installs signal handlers and never exits.
 *
 * Tokens of a local daemon (ipc:// endpoint) arrive through a shared-memory ring that is
 * read without system calls; over tcp:// (or with FP8D_CONNECT_NO_SHM) they arrive as
 * messages. The calls are the same either way.
 *
 * Threads: a client and the streams made from it form one unit that must be used by one
 * thread at a time (serialize with your own lock if you share it). Distinct clients are
 * independent and may be used from different threads concurrently. Each call below says
 * which it is: "Thread-safe" (any thread, any time) or "Per client" (that rule). */
#ifndef FP8D_H
#define FP8D_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fp8d_client fp8d_client;
typedef struct fp8d_stream fp8d_stream;

/* Sampling options. Start from fp8d_sampling_init: every field then means "the model's
 * default", and only the fields you change are sent. */
struct fp8d_sampling {
    int32_t max_tokens;  /* >= 1; 0: until end of sequence or the model length */
    float temperature;   /* [0, 100], 0 greedy; < 0: model default */
    float top_p;         /* (0, 1]; <= 0: model default */
    int32_t top_k;       /* >= 0, 0 off; < 0: model default */
    float min_p;         /* [0, 1]; < 0: model default */
    uint64_t seed;       /* used when has_seed */
    int has_seed;
    const char *const *stop; /* (n_stop) stop strings, at most 16, each 1..256 bytes */
    uint32_t n_stop;
    int ignore_eos;
    int32_t priority;    /* higher is admitted first */
};

struct fp8d_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
};

/* One generated token. text points into the library's memory and stays valid until the
 * next fp8d_stream_next or fp8d_stream_free on the same stream. */
struct fp8d_token {
    int32_t id;          /* -1 for a piece of text without a token (flushed at the end) */
    const char *text;    /* (text_len) bytes of UTF-8 this token completed, not NUL-terminated */
    size_t text_len;
};

enum fp8d_finish {
    FP8D_FINISH_EOS,     /* end-of-sequence token */
    FP8D_FINISH_STOP,    /* a stop string matched */
    FP8D_FINISH_LENGTH,  /* max_tokens or the model length */
};

struct fp8d_result {
    enum fp8d_finish finish;
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    uint64_t queue_us;   /* submitted -> admitted */
    uint64_t prefill_us; /* admitted -> first token */
    uint64_t decode_us;  /* first -> last token */
};

struct fp8d_info {
    char name[257];
    char arch[257];
    char backend[257];
    char weights[257];
    char kv_cache_dtype[257];
    uint32_t vocab_size;
    uint32_t max_model_len;
    uint32_t max_num_seqs;
    char server_version[257];
};

enum fp8d_connect_flag {
    FP8D_CONNECT_NO_SHM = 1u << 0, /* stream tokens as messages even on a local endpoint */
};

/* Every call that talks to the daemon fails with -ECONNRESET once the connection to it
 * was lost (daemon crash or restart: its session state is gone). */

/* Connects and says hello. endpoint NULL means ipc://$XDG_RUNTIME_DIR/fp8d.sock (-EINVAL
 * when XDG_RUNTIME_DIR is not set).
 * timeout_ms bounds this call and every later request/reply call on the client (< 0: no
 * bound). Errors: -ETIMEDOUT (no daemon answered), -EPROTONOSUPPORT (the daemon speaks
 * another protocol version), -EPROTO (it sent something malformed), -EINVAL, -ENOMEM.
 * Thread-safe (it makes a new client). */
int fp8d_connect(const char *endpoint, unsigned flags, int timeout_ms, fp8d_client **out);

/* Says bye, cancels and frees streams still open, releases everything. Accepts NULL.
 * Per client; no other call on the client or its streams may run or follow. */
void fp8d_close(fp8d_client *c);

/* The daemon's message for the last error it reported on this client ("" if none). Valid
 * until the next call on the client. Per client. */
const char *fp8d_last_error(const fp8d_client *c);

/* A short description of a negative code returned by this library. Never NULL.
 * Thread-safe (static strings). */
const char *fp8d_strerror(int code);

/* Fills s with "model default" everywhere. Thread-safe. */
void fp8d_sampling_init(struct fp8d_sampling *s);

/* Starts a generation and returns once the daemon has admitted it (or refused it: -EINVAL
 * bad request, -E2BIG prompt too long, -EBUSY, -ESHUTDOWN, -EOPNOTSUPP). sampling may be
 * NULL (all defaults). fp8d_generate takes text as is, fp8d_generate_tokens token ids,
 * fp8d_chat a conversation rendered with the model's chat template (generation prompt
 * added, the template's own thinking default). Per client. */
int fp8d_generate(fp8d_client *c, const char *prompt, const struct fp8d_sampling *sampling,
                  fp8d_stream **out);
int fp8d_generate_tokens(fp8d_client *c, const int32_t *ids, size_t n_ids,
                         const struct fp8d_sampling *sampling, fp8d_stream **out);
int fp8d_chat(fp8d_client *c, const struct fp8d_message *messages, size_t n_messages,
              const struct fp8d_sampling *sampling, fp8d_stream **out);

/* The next token: 1 and *tok; 0 when the generation finished (fp8d_stream_result has the
 * details; later calls return the same); -EAGAIN when timeout_ms is 0 and nothing is
 * there yet; -ETIMEDOUT; -ECANCELED (cancelled, by fp8d_cancel or by the daemon after the
 * reader fell too far behind); -ESHUTDOWN; -EIO (daemon-side failure, see
 * fp8d_last_error); -ECONNRESET (the daemon went away: tokens it had already published
 * are still delivered first; the client is then unusable, close it); -EPROTO.
 * timeout_ms < 0 waits without bound. With shared memory and timeout_ms 0, a call makes
 * no system call while tokens are there (it looks at the socket at most every 100 ms).
 * Per client: two streams of one client may not be read from two threads at once. */
int fp8d_stream_next(fp8d_stream *s, struct fp8d_token *tok, int timeout_ms);

/* After fp8d_stream_next returned 0: why it finished, usage and timings. -EAGAIN before,
 * the stream's error after a failed one. Per client. */
int fp8d_stream_result(const fp8d_stream *s, struct fp8d_result *result);

/* Asks the daemon to stop the generation; fp8d_stream_next then drains what was already
 * produced and returns -ECANCELED (or 0 if it finished first). Per client. */
int fp8d_cancel(fp8d_stream *s);

/* The daemon-wide handle of the generation (from `accepted`): another process of the same
 * user can stop it with fp8d_cancel_handle. 0 when the daemon gave none. Per client. */
uint64_t fp8d_stream_handle(const fp8d_stream *s);

/* Cancels the generation with that handle, whichever session started it, and waits for the
 * daemon's answer: 0, or -EINVAL when no running generation of this user (same uid, or any
 * for root) has it, -EOPNOTSUPP over tcp:// (the daemon cannot see the peer's uid); the
 * message is in fp8d_last_error. Per client. */
int fp8d_cancel_handle(fp8d_client *c, uint64_t handle);

/* Cancels the generation if it is still running, waits (bounded by the client timeout)
 * for the daemon to close it, and frees the stream. Accepts NULL. Per client. */
void fp8d_stream_free(fp8d_stream *s);

/* Token ids of text (length len, may contain NUL bytes) in *ids, a malloc'd array of *n
 * ids (free() it). add_special adds the model's BOS and the like. Per client. */
int fp8d_tokenize(fp8d_client *c, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n);

/* Text of token ids in *text, malloc'd and NUL-terminated, *len bytes (free() it).
 * Per client. */
int fp8d_detokenize(fp8d_client *c, const int32_t *ids, size_t n, char **text, size_t *len);

/* The model the daemon serves (asks the daemon: the information is always current).
 * Per client. */
int fp8d_info(fp8d_client *c, struct fp8d_info *info);

#ifdef __cplusplus
}
#endif

#endif
