/* Tokenizer building blocks: buffers, the string hash map, UTF-8 and the byte-level
 * alphabet, pattern matching. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_internal.h"

int tok_buf_reserve(struct tok_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok_buf_put(struct tok_buf *b, const void *data, size_t n)
{
    int rc = tok_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

void tok_buf_free(struct tok_buf *b)
{
    free(b->p);
    *b = (struct tok_buf){0};
}

int tok_strv_push(struct tok_strv *v, const char *s, size_t n)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        size_t *off = realloc(v->off, cap * sizeof(*off));
        if (!off)
            return -ENOMEM;
        v->off = off;
        size_t *len = realloc(v->len, cap * sizeof(*len));
        if (!len)
            return -ENOMEM;
        v->len = len;
        v->cap = cap;
    }
    size_t at = v->buf.len;
    int rc = tok_buf_put(&v->buf, s, n);
    if (rc < 0)
        return rc;
    v->off[v->n] = at;
    v->len[v->n] = n;
    v->n++;
    return 0;
}

int tok_strv_append(struct tok_strv *v, const char *s, size_t n)
{
    int rc = tok_buf_put(&v->buf, s, n);
    if (rc < 0)
        return rc;
    v->len[v->n - 1] += n;
    return 0;
}

void tok_strv_clear(struct tok_strv *v)
{
    v->buf.len = 0;
    v->n = 0;
}

void tok_strv_free(struct tok_strv *v)
{
    tok_buf_free(&v->buf);
    free(v->off);
    free(v->len);
    *v = (struct tok_strv){0};
}

/* FNV-1a over 8-byte words with a final avalanche: fast on short tokens. */
uint64_t tok_hash(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    while (n--) 
        h = (h ^ *p++) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

int tok_map_init(struct tok_map *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2)
        cap *= 2;
    m->slot = calloc(cap, sizeof(*m->slot));
    if (!m->slot)
        return -ENOMEM;
    m->cap = cap;
    m->n = 0;
    return 0;
}

static int tok_map_grow(struct tok_map *m)
{
    struct tok_map bigger;
    int rc = tok_map_init(&bigger, m->cap);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].key)
            tok_map_put(&bigger, m->slot[i].key, m->slot[i].len, m->slot[i].val);
    free(m->slot);
    *m = bigger;
    return 0;
}

int tok_map_put(struct tok_map *m, const char *key, size_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        int rc = tok_map_grow(m);
        if (rc < 0)
            return rc;
    }
    size_t mask = m->cap - 1;
    for (size_t i = tok_hash(key, len) & mask;; i = (i + 1) & mask) {
        struct tok_map_slot *s = &m->slot[i];
        if (!s->key) {
            *s = (struct tok_map_slot){key, (uint32_t)len, val};
            m->n++;
            return 0;
        }
        if (s->len == len && !memcmp(s->key, key, len))
            return -EEXIST;
    }
}

int32_t tok_map_get(const struct tok_map *m, const char *key, size_t len)
{
    if (!m->cap)
        return -1;
    size_t mask = m->cap - 1;
    for (size_t i = tok_hash(key, len) & mask;; i = (i + 1) & mask) {
        const struct tok_map_slot *s = &m->slot[i];
        if (!s->key)
            return -1;
        if (s->len == len && !memcmp(s->key, key, len))
            return s->val;
    }
}

void tok_map_free(struct tok_map *m)
{
    free(m->slot);
    *m = (struct tok_map){0};
}

struct tok_bytechar tok_byte_to_char[256];
int16_t tok_char_to_byte[324];

static void tok_bytelevel_build(void)
{
    /* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
     * 68 bytes take code points 256, 257, ... in byte order. */
    uint32_t next = 256;
    for (int i = 0; i < 324; i++)
        tok_char_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        uint32_t cp = printable ? (uint32_t)b : next++;
        struct tok_bytechar *c = &tok_byte_to_char[b];
        if (cp < 0x80) {
            c->s[0] = (char)cp;
            c->n = 1;
        } else {
            c->s[0] = (char)(0xc0 | (cp >> 6));
            c->s[1] = (char)(0x80 | (cp & 0x3f));
            c->n = 2;
        }
        tok_char_to_byte[cp] = (int16_t)b;
    }
}

void tok_bytelevel_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tok_bytelevel_build);
}

/* Length of the valid sequence at s, 0 when invalid; *need > 0 reports a truncated but so
 * far valid prefix, and *bad the length of the maximal invalid subpart otherwise. */
static size_t utf8_scan(const uint8_t *s, size_t n, size_t *bad, bool *truncated)
{
    uint8_t b = s[0];
    *truncated = false;
    *bad = 1;
    if (b < 0x80)
        return 1;
    size_t w;
    uint8_t lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) {
        w = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        w = 3;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        w = 4;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    for (size_t i = 1; i < w; i++) {
        if (i >= n) {
            *truncated = true;
            *bad = i;
            return 0;
        }
        uint8_t c = s[i];
        if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) {
            *bad = i;
            return 0;
        }
    }
    return w;
}

size_t tok_utf8_valid_len(const uint8_t *s, size_t n)
{
    size_t bad;
    bool trunc;
    return n ? utf8_scan(s, n, &bad, &trunc) : 0;
}

size_t tok_utf8_check(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = tok_utf8_valid_len(u + i, n - i);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

bool tok_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t k = tok_utf8_valid_len(u, n);
    if (k <= 1) {
        *cp = n ? u[0] : 0;
        return n ? 1 : 0;
    }
    uint32_t c = u[0] & (0x7f >> k);
    for (size_t i = 1; i < k; i++)
        c = (c << 6) | (u[i] & 0x3f);
    *cp = c;
    return k;
}

int tok_utf8_lossy(struct tok_buf *out, const char *s, size_t n, bool *incomplete_tail)
{
    static const char fffd[3] = {(char)0xef, (char)0xbf, (char)0xbd};
    const uint8_t *u = (const uint8_t *)s;
    bool trunc = false;
    size_t i = 0, run = 0; /* run: start of the pending valid bytes */
    int rc = tok_buf_reserve(out, n + 3);
    if (rc < 0)
        return rc;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad;
        size_t k = utf8_scan(u + i, n - i, &bad, &trunc);
        if (k) {
            i += k;
            continue;
        }
        if ((rc = tok_buf_put(out, s + run, i - run)) < 0 || (rc = tok_buf_put(out, fffd, 3)) < 0)
            return rc;
        i += bad;
        run = i;
    }
    if ((rc = tok_buf_put(out, s + run, i - run)) < 0)
        return rc;
    if (incomplete_tail)
        *incomplete_tail = trunc;
    return 0;
}

int tok_pattern_each(const struct tok_pattern *p, struct tok_ws *ws, const char *s, size_t n,
                     tok_match_fn fn, void *ctx)
{
    int rc;
    if (p->lit) {
        if (!p->lit_len)
            return 0;
        for (size_t pos = 0; pos + p->lit_len <= n;) {
            const char *hit = memmem(s + pos, n - pos, p->lit, p->lit_len);
            if (!hit)
                break;
            size_t at = (size_t)(hit - s);
            if ((rc = fn(ctx, at, at + p->lit_len)) < 0)
                return rc;
            pos = at + p->lit_len;
        }
        return 0;
    }
    /* Oniguruma's find_iter as HF uses it: an empty match right where the previous match
     * ended is skipped by moving one character on. */
    size_t last_end = 0, last_match_end = 0;
    bool have_last = false;
    while (last_end <= n) {
        int m = pcre2_jit_match(p->re, (PCRE2_SPTR)s, n, last_end, 0, ws->md, ws->mctx);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0)
            return m == PCRE2_ERROR_JIT_STACKLIMIT ? -E2BIG : -EINVAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ws->md);
        size_t st = ov[0], en = ov[1];
        if (st == en && have_last && last_match_end == en) {
            if (last_end >= n)
                break;
            uint32_t cp;
            last_end += tok_utf8_next(s + last_end, n - last_end, &cp);
            continue;
        }
        last_end = en;
        last_match_end = en;
        have_last = true;
        if ((rc = fn(ctx, st, en)) < 0)
            return rc;
    }
    return 0;
}

void tok_pattern_free(struct tok_pattern *p)
{
    if (!p)
        return;
    free(p->lit);
    pcre2_code_free(p->re);
    *p = (struct tok_pattern){0};
}
