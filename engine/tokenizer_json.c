/* Loading tokenizer.json into struct fp8_tokenizer (jansson). Every component type the
 * file names must be one this tokenizer implements exactly; anything else is a load error
 * naming it, never an approximation. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_internal.h"

/* GPT-2's pre-tokenization regex, used by ByteLevel with use_regex. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Unicode White_Space, which is what Oniguruma's \s matches (HF compiles with Oniguruma).
 * PCRE2's \s also takes U+180E, so \s and \S are spelled out before compiling. */
#define WHITE_SPACE "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static int rewrite_space(const char *re, size_t n, struct tok_buf *out, struct fp8_err *err)
{
    bool in_class = false;
    size_t class_start = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            char e = re[i + 1];
            i++;
            if (e == 's')
                rc = tok_buf_put(out, in_class ? WHITE_SPACE : "[" WHITE_SPACE "]",
                                 strlen(WHITE_SPACE) + (in_class ? 0 : 2));
            else if (e == 'S' && !in_class)
                rc = tok_buf_put(out, "[^" WHITE_SPACE "]", strlen(WHITE_SPACE) + 3);
            else if (e == 'S')
                return fp8_err_set(err, -ENOTSUP, "regex /%.*s/: \\S inside a character class is not supported",
                                   (int)(n > 200 ? 200 : n), re);
            else
                rc = tok_buf_put(out, re + i - 1, 2);
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            class_start = i + 1;
            if (i + 1 < n && re[i + 1] == '^')
                class_start++;
        } else if (in_class && c == '[' && i + 1 < n && re[i + 1] == ':') {
            const char *end = memmem(re + i, n - i, ":]", 2);
            if (end) { /* POSIX class [:name:] copied whole */
                size_t k = (size_t)(end - re) + 2 - i;
                rc = tok_buf_put(out, re + i, k);
                i += k - 1;
                continue;
            }
        } else if (in_class && c == ']' && i != class_start) {
            in_class = false;
        }
        rc = tok_buf_put(out, &c, 1);
    }
    return rc < 0 ? fp8_err_set(err, rc, "out of memory") : 0;
}

int tok_pattern_compile(struct tok_pattern *p, const char *regex, size_t len, struct fp8_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    struct tok_buf rw = {0};
    int rc = rewrite_space(regex, len, &rw, err);
    if (rc < 0) {
        tok_buf_free(&rw);
        return rc;
    }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(rw.p ? rw.p : ""), rw.len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    tok_buf_free(&rw);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        return fp8_err_set(err, -EINVAL, "regex /%.*s/ at offset %zu: %s", (int)(len > 200 ? 200 : len),
                           regex, (size_t)eo, (const char *)msg);
    }
    ec = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    if (ec < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        pcre2_code_free(re);
        return fp8_err_set(err, -ENOTSUP, "regex /%.*s/: PCRE2 JIT compilation failed: %s",
                           (int)(len > 200 ? 200 : len), regex, (const char *)msg);
    }
    p->re = re;
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* {"String": "..."} or {"Regex": "..."} */
static int load_pattern(struct tok_pattern *p, json_t *j, const char *what, struct fp8_err *err)
{
    json_t *s = json_object_get(j, "String"), *r = json_object_get(j, "Regex");
    if (json_is_string(s)) {
        p->lit_len = json_string_length(s);
        p->lit = dup_n(json_string_value(s), p->lit_len);
        return p->lit ? 0 : fp8_err_set(err, -ENOMEM, "out of memory");
    }
    if (json_is_string(r)) {
        int rc = tok_pattern_compile(p, json_string_value(r), json_string_length(r), err);
        return rc < 0 ? fp8_err_prefix(err, rc, "%s", what) : 0;
    }
    return fp8_err_set(err, -EINVAL, "%s: pattern is neither {\"String\"} nor {\"Regex\"}", what);
}

static const char *type_of(json_t *j)
{
    const char *t = json_string_value(json_object_get(j, "type"));
    return t ? t : "(missing)";
}

static bool flag(json_t *j, const char *key, bool dflt)
{
    json_t *v = json_object_get(j, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 4;
    void *p = realloc(*arr, c * size);
    if (!p)
        return -ENOMEM;
    memset((char *)p + *cap * size, 0, (c - *cap) * size);
    *arr = p;
    *cap = c;
    return 0;
}

/* Appends one normalizer, pre-tokenizer or decoder j of type t (never "Sequence") to
 * tok's array of them, whose capacity is *cap. */
typedef int (*load_component_fn)(struct fp8_tokenizer *tok, json_t *j, const char *t, size_t *cap,
                                 struct fp8_err *err);

/* A component, null/absent for none, or {"type": "Sequence", list_key: [...]} nesting more of
 * them to any depth: they apply in order, so the tree is flattened into one array. */
static int load_components(struct fp8_tokenizer *tok, json_t *j, const char *list_key,
                           load_component_fn load_one, size_t *cap, struct fp8_err *err)
{
    if (json_is_null(j) || !j)
        return 0;
    const char *t = type_of(j);
    if (strcmp(t, "Sequence"))
        return load_one(tok, j, t, cap, err);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(j, list_key), i, it) {
        int rc = load_components(tok, it, list_key, load_one, cap, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_normalizer(struct fp8_tokenizer *tok, json_t *j, const char *t, size_t *cap,
                           struct fp8_err *err)
{
    if (grow((void **)&tok->norm, cap, tok->n_norm, sizeof(*tok->norm)) < 0)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    struct tok_norm *n = &tok->norm[tok->n_norm];
    if (!strcmp(t, "NFC")) {
        n->type = TOK_NORM_NFC;
    } else if (!strcmp(t, "Replace") || !strcmp(t, "Prepend")) {
        bool rep = t[0] == 'R';
        json_t *c = json_object_get(j, rep ? "content" : "prepend");
        if (!json_is_string(c))
            return fp8_err_set(err, -EINVAL, "normalizer %s: missing string \"%s\"", t,
                               rep ? "content" : "prepend");
        n->type = rep ? TOK_NORM_REPLACE : TOK_NORM_PREPEND;
        n->content_len = json_string_length(c);
        if (!(n->content = dup_n(json_string_value(c), n->content_len)))
            return fp8_err_set(err, -ENOMEM, "out of memory");
        if (rep) {
            int rc = load_pattern(&n->pat, json_object_get(j, "pattern"), "normalizer Replace", err);
            if (rc < 0) {
                free(n->content);
                return rc;
            }
        }
    } else {
        return fp8_err_set(err, -ENOTSUP,
                           "unsupported normalizer type '%s' (supported: NFC, Replace, Prepend, Sequence)", t);
    }
    tok->n_norm++;
    return 0;
}

static int load_pretok(struct fp8_tokenizer *tok, json_t *j, const char *t, size_t *cap,
                       struct fp8_err *err)
{
    int rc;
    if (grow((void **)&tok->pre, cap, tok->n_pre, sizeof(*tok->pre)) < 0)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    struct tok_pre *p = &tok->pre[tok->n_pre];
    if (!strcmp(t, "Split")) {
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                      "Contiguous"};
        const char *b = json_string_value(json_object_get(j, "behavior"));
        size_t k = 0;
        while (k < 5 && !(b && !strcmp(b, names[k])))
            k++;
        if (k == 5)
            return fp8_err_set(err, -ENOTSUP, "pre_tokenizer Split: unsupported behavior '%s'",
                               b ? b : "(missing)");
        p->type = TOK_PRE_SPLIT;
        p->behavior = (enum tok_split_behavior)k;
        p->invert = flag(j, "invert", false);
        if ((rc = load_pattern(&p->pat, json_object_get(j, "pattern"), "pre_tokenizer Split", err)) < 0)
            return rc;
    } else if (!strcmp(t, "ByteLevel")) {
        p->type = TOK_PRE_BYTELEVEL;
        p->add_prefix_space = flag(j, "add_prefix_space", true);
        p->use_regex = flag(j, "use_regex", true);
        if (p->use_regex &&
            (rc = tok_pattern_compile(&p->pat, gpt2_regex, sizeof(gpt2_regex) - 1, err)) < 0)
            return rc;
    } else if (!strcmp(t, "Metaspace")) {
        json_t *r = json_object_get(j, "replacement");
        const char *scheme = json_string_value(json_object_get(j, "prepend_scheme"));
        p->type = TOK_PRE_METASPACE;
        if (!json_is_string(r) || json_string_length(r) >= sizeof(p->repl) ||
            tok_utf8_valid_len((const uint8_t *)json_string_value(r), json_string_length(r)) !=
                json_string_length(r))
            return fp8_err_set(err, -EINVAL, "pre_tokenizer Metaspace: replacement must be one character");
        p->repl_len = json_string_length(r);
        memcpy(p->repl, json_string_value(r), p->repl_len);
        p->split = flag(j, "split", true);
        if (!scheme)
            p->prepend = flag(j, "add_prefix_space", true) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
        else if (!strcmp(scheme, "always"))
            p->prepend = TOK_PREPEND_ALWAYS;
        else if (!strcmp(scheme, "first"))
            p->prepend = TOK_PREPEND_FIRST;
        else if (!strcmp(scheme, "never"))
            p->prepend = TOK_PREPEND_NEVER;
        else
            return fp8_err_set(err, -ENOTSUP, "pre_tokenizer Metaspace: unsupported prepend_scheme '%s'", scheme);
    } else {
        return fp8_err_set(err, -ENOTSUP,
                           "unsupported pre_tokenizer type '%s' (supported: Split, ByteLevel, Metaspace, Sequence)", t);
    }
    tok->n_pre++;
    return 0;
}

static int load_decoder(struct fp8_tokenizer *tok, json_t *j, const char *t, size_t *cap,
                        struct fp8_err *err)
{
    int rc;
    if (grow((void **)&tok->dec, cap, tok->n_dec, sizeof(*tok->dec)) < 0)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    struct tok_dec *d = &tok->dec[tok->n_dec];
    if (!strcmp(t, "ByteLevel")) {
        d->type = TOK_DEC_BYTELEVEL;
    } else if (!strcmp(t, "ByteFallback")) {
        d->type = TOK_DEC_BYTEFALLBACK;
    } else if (!strcmp(t, "Fuse")) {
        d->type = TOK_DEC_FUSE;
    } else if (!strcmp(t, "Replace") || !strcmp(t, "Strip")) {
        bool rep = t[0] == 'R';
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c))
            return fp8_err_set(err, -EINVAL, "decoder %s: missing string \"content\"", t);
        d->content_len = json_string_length(c);
        if (!rep && tok_utf8_valid_len((const uint8_t *)json_string_value(c), d->content_len) !=
                        d->content_len)
            return fp8_err_set(err, -EINVAL, "decoder Strip: content must be one character");
        if (!(d->content = dup_n(json_string_value(c), d->content_len)))
            return fp8_err_set(err, -ENOMEM, "out of memory");
        d->type = rep ? TOK_DEC_REPLACE : TOK_DEC_STRIP;
        if (rep) {
            if ((rc = load_pattern(&d->pat, json_object_get(j, "pattern"), "decoder Replace", err)) < 0) {
                free(d->content);
                return rc;
            }
        } else {
            json_int_t a = json_integer_value(json_object_get(j, "start"));
            json_int_t b = json_integer_value(json_object_get(j, "stop"));
            if (a < 0 || b < 0) {
                free(d->content);
                return fp8_err_set(err, -EINVAL, "decoder Strip: negative start/stop");
            }
            d->start = (size_t)a;
            d->stop = (size_t)b;
        }
    } else {
        return fp8_err_set(err, -ENOTSUP,
                           "unsupported decoder type '%s' (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Sequence)", t);
    }
    tok->n_dec++;
    return 0;
}

static int ids_append(int32_t **arr, size_t *n, int32_t id)
{
    int32_t *p = realloc(*arr, (*n + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    p[(*n)++] = id;
    *arr = p;
    return 0;
}

static int load_post(struct fp8_tokenizer *tok, json_t *j, struct fp8_err *err)
{
    if (json_is_null(j) || !j)
        return 0;
    const char *t = type_of(j);
    if (!strcmp(t, "ByteLevel"))
        return 0; /* offsets only */
    if (!strcmp(t, "Sequence")) {
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(j, "processors"), i, it) {
            int rc = load_post(tok, it, err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(t, "TemplateProcessing"))
        return fp8_err_set(err, -ENOTSUP,
                           "unsupported post_processor type '%s' (supported: ByteLevel, TemplateProcessing, Sequence)", t);
    if (tok->n_post_before || tok->n_post_after)
        return fp8_err_set(err, -ENOTSUP, "post_processor: more than one TemplateProcessing");
    json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    size_t i;
    json_t *it;
    bool seen_a = false;
    json_array_foreach(single, i, it) {
        json_t *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
        if (sq) {
            const char *id = json_string_value(json_object_get(sq, "id"));
            if (!id || strcmp(id, "A") || seen_a)
                return fp8_err_set(err, -ENOTSUP, "post_processor TemplateProcessing: single template must hold sequence A once");
            seen_a = true;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return fp8_err_set(err, -EINVAL, "post_processor TemplateProcessing: special token '%s' has no ids",
                               name ? name : "(missing)");
        size_t k;
        json_t *v;
        json_array_foreach(ids, k, v) {
            json_int_t id = json_integer_value(v);
            if (id < 0 || id >= tok->n_vocab)
                return fp8_err_set(err, -EINVAL, "post_processor: id %lld of '%s' out of range",
                                   (long long)id, name);
            if (ids_append(seen_a ? &tok->post_after : &tok->post_before,
                           seen_a ? &tok->n_post_after : &tok->n_post_before, (int32_t)id) < 0)
                return fp8_err_set(err, -ENOMEM, "out of memory");
        }
    }
    if (!seen_a)
        return fp8_err_set(err, -EINVAL, "post_processor TemplateProcessing: no sequence A in single");
    return 0;
}

static int trie_node(struct tok_trie *t)
{
    if (t->n_nodes == t->cap) {
        size_t c = t->cap ? t->cap * 2 : 256;
        uint32_t *a = realloc(t->child, c * sizeof(*a));
        if (!a)
            return -ENOMEM;
        t->child = a;
        if (!(a = realloc(t->sibling, c * sizeof(*a))))
            return -ENOMEM;
        t->sibling = a;
        uint8_t *b = realloc(t->byte, c);
        if (!b)
            return -ENOMEM;
        t->byte = b;
        int32_t *m = realloc(t->term, c * sizeof(*m));
        if (!m)
            return -ENOMEM;
        t->term = m;
        t->cap = c;
    }
    size_t i = t->n_nodes++;
    t->child[i] = t->sibling[i] = 0;
    t->byte[i] = 0;
    t->term[i] = -1;
    return (int)i;
}

static int trie_add(struct tok_trie *t, const char *s, size_t n, int32_t idx)
{
    if (!t->n_nodes && trie_node(t) < 0)
        return -ENOMEM;
    if (!n)
        return 0; /* an empty token never matches (aho-corasick skips it too) */
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        uint32_t c = t->child[node];
        while (c && t->byte[c] != b)
            c = t->sibling[c];
        if (!c) {
            int k = trie_node(t);
            if (k < 0)
                return -ENOMEM;
            c = (uint32_t)k;
            t->byte[c] = b;
            t->sibling[c] = t->child[node];
            t->child[node] = c;
        }
        node = c;
    }
    if (t->term[node] < 0)
        t->term[node] = idx;
    t->first[(uint8_t)s[0]] = true;
    t->empty = false;
    return 0;
}

static void trie_free(struct tok_trie *t)
{
    free(t->child);
    free(t->sibling);
    free(t->byte);
    free(t->term);
}

static int load_model(struct fp8_tokenizer *tok, json_t *model, json_t *added, struct fp8_err *err)
{
    const char *t = type_of(model);
    if (strcmp(t, "BPE"))
        return fp8_err_set(err, -ENOTSUP, "unsupported model type '%s' (supported: BPE)", t);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return fp8_err_set(err, -EINVAL, "model: missing vocab or merges");
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) != 0.0)
        return fp8_err_set(err, -ENOTSUP, "model BPE: dropout %g is not supported", json_number_value(dropout));
    const char *csp = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *eow = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if ((csp && *csp) || (eow && *eow))
        return fp8_err_set(err, -ENOTSUP, "model BPE: continuing_subword_prefix/end_of_word_suffix are not supported");
    int rc = 0;
    tok->byte_fallback = flag(model, "byte_fallback", false);
    tok->fuse_unk = flag(model, "fuse_unk", false);
    tok->ignore_merges = flag(model, "ignore_merges", false);

    /* ids: the vocabulary and the added tokens together */
    json_int_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > INT32_MAX - 1)
            return fp8_err_set(err, -EINVAL, "model vocab: bad id for token '%.60s'", key);
        if (id > max_id)
            max_id = id;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!json_is_string(json_object_get(v, "content")) || id < 0 || id > INT32_MAX - 1)
            return fp8_err_set(err, -EINVAL, "added_tokens[%zu]: bad id or content", i);
        if (id > max_id)
            max_id = id;
    }
    tok->n_vocab = (int32_t)(max_id + 1);
    tok->tokens = calloc((size_t)tok->n_vocab, sizeof(*tok->tokens));
    tok->token_len = calloc((size_t)tok->n_vocab, sizeof(*tok->token_len));
    tok->special = calloc((size_t)tok->n_vocab, sizeof(*tok->special));
    if (!tok->tokens || !tok->token_len || !tok->special ||
        tok_map_init(&tok->vocab, json_object_size(vocab)) < 0)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    /* All vocabulary strings live in one block (one allocation instead of one per token). */
    size_t pool = 0;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it))
        pool += json_object_iter_key_len(it) + 1;
    if (!(tok->pool = malloc(pool ? pool : 1)))
        return fp8_err_set(err, -ENOMEM, "out of memory");
    char *at = tok->pool;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        size_t klen = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        if (tok->tokens[id])
            return fp8_err_set(err, -EINVAL, "model vocab: id %d used twice", id);
        memcpy(at, json_object_iter_key(it), klen);
        at[klen] = 0;
        tok->tokens[id] = at;
        tok->token_len[id] = (uint32_t)klen;
        tok_map_put(&tok->vocab, at, klen, id);
        at += klen + 1;
    }
    if ((rc = tok_merges_reserve(tok, json_array_size(merges))) < 0)
        return fp8_err_set(err, rc, "out of memory");

    /* merges: "a b" strings or ["a", "b"] pairs; rank = position */
    struct tok_buf cat = {0};
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t an, bn;
        if (json_is_string(v)) {
            a = json_string_value(v);
            const char *sp = memchr(a, ' ', json_string_length(v));
            if (!sp) {
                rc = fp8_err_set(err, -EINVAL, "model merges[%zu]: '%.60s' is not \"a b\"", i, a);
                break;
            }
            an = (size_t)(sp - a);
            b = sp + 1;
            bn = json_string_length(v) - an - 1;
        } else if (json_is_array(v) && json_array_size(v) == 2 &&
                   json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
            a = json_string_value(json_array_get(v, 0));
            an = json_string_length(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            bn = json_string_length(json_array_get(v, 1));
        } else {
            rc = fp8_err_set(err, -EINVAL, "model merges[%zu]: neither \"a b\" nor [\"a\", \"b\"]", i);
            break;
        }
        int32_t ia = tok_map_get(&tok->vocab, a, an), ib = tok_map_get(&tok->vocab, b, bn);
        cat.len = 0;
        if ((rc = tok_buf_put(&cat, a, an)) < 0 || (rc = tok_buf_put(&cat, b, bn)) < 0) {
            rc = fp8_err_set(err, rc, "out of memory");
            break;
        }
        int32_t im = tok_map_get(&tok->vocab, cat.p, cat.len);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = fp8_err_set(err, -EINVAL, "model merges[%zu]: '%.*s' + '%.*s' not in the vocabulary",
                             i, (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b);
            break;
        }
        if ((rc = tok_merges_put(tok, ia, ib, (uint32_t)i, im)) < 0) {
            rc = fp8_err_set(err, rc, "out of memory");
            break;
        }
    }
    tok_buf_free(&cat);
    if (rc < 0)
        return rc;

    json_t *unk = json_object_get(model, "unk_token");
    tok->unk_id = -1;
    if (json_is_string(unk)) {
        tok->unk_id = tok_map_get(&tok->vocab, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0)
            return fp8_err_set(err, -EINVAL, "model: unk_token '%s' not in the vocabulary", json_string_value(unk));
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", b);
        tok->byte_id[b] = tok_map_get(&tok->vocab, name, 6);
    }

    /* added tokens */
    tok->n_added = json_array_size(added);
    tok->added = calloc(tok->n_added ? tok->n_added : 1, sizeof(*tok->added));
    if (!tok->added || tok_map_init(&tok->added_map, tok->n_added) < 0)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    json_array_foreach(added, i, v) {
        struct tok_added *a = &tok->added[i];
        json_t *c = json_object_get(v, "content");
        a->len = json_string_length(c);
        if (!(a->content = dup_n(json_string_value(c), a->len)))
            return fp8_err_set(err, -ENOMEM, "out of memory");
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->special = flag(v, "special", false);
        a->normalized = flag(v, "normalized", !a->special);
        a->lstrip = flag(v, "lstrip", false);
        a->rstrip = flag(v, "rstrip", false);
        a->single_word = flag(v, "single_word", false);
        tok->special[a->id] = a->special;
        /* HF answers id -> token from the added vocabulary first; ids shared with the
         * model vocabulary must therefore carry the same string. */
        if (tok->tokens[a->id] && (tok->token_len[a->id] != a->len ||
                                   memcmp(tok->tokens[a->id], a->content, a->len)))
            return fp8_err_set(err, -ENOTSUP, "added token %d '%.40s' differs from vocabulary token '%.40s'",
                               a->id, a->content, tok->tokens[a->id]);
        if (!tok->tokens[a->id]) {
            tok->tokens[a->id] = a->content;
            tok->token_len[a->id] = (uint32_t)a->len;
        }
        tok_map_put(&tok->added_map, a->content, a->len, a->id);
    }
    tok->dec_str = calloc((size_t)tok->n_vocab, sizeof(*tok->dec_str));
    tok->dec_len = calloc((size_t)tok->n_vocab, sizeof(*tok->dec_len));
    if (!tok->dec_str || !tok->dec_len)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        tok->dec_str[id] = tok->tokens[id];
        tok->dec_len[id] = tok->token_len[id];
    }
    return 0;
}

/* Non-normalized added tokens are matched on the raw text; normalized ones on normalized
 * text, so HF runs their content through the normalizer first (refresh_added_tokens). */
static int build_tries(struct fp8_tokenizer *tok, struct fp8_err *err)
{
    struct tok_ws *ws = tok_ws_acquire(tok);
    struct tok_buf norm = {0};
    int rc = ws ? 0 : -ENOMEM;
    for (size_t i = 0; i < tok->n_added && rc == 0; i++) {
        const struct tok_added *a = &tok->added[i];
        if (!a->normalized) {
            rc = trie_add(&tok->trie_raw, a->content, a->len, (int32_t)i);
            continue;
        }
        if ((rc = tok_normalize(tok, ws, a->content, a->len, &norm)) < 0 ||
            (rc = trie_add(&tok->trie_norm, norm.p, norm.len, (int32_t)i)) < 0)
            break;
        if (norm.len != a->len || memcmp(norm.p, a->content, a->len)) {
            struct tok_added *m = &tok->added[i];
            if (!(m->norm = dup_n(norm.p ? norm.p : "", norm.len))) {
                rc = -ENOMEM;
                break;
            }
            m->norm_len = norm.len;
            tok->dec_str[m->id] = m->norm;
            tok->dec_len[m->id] = (uint32_t)m->norm_len;
        }
    }
    if (ws)
        tok_ws_release(tok, ws);
    tok_buf_free(&norm);
    return rc < 0 ? fp8_err_set(err, rc, "added tokens: %s", rc == -ENOMEM ? "out of memory" : "cannot normalize") : 0;
}

static int load_root(struct fp8_tokenizer *tok, json_t *root, struct fp8_err *err)
{
    int rc;
    size_t cap = 0;
    if (!json_is_object(root))
        return fp8_err_set(err, -EINVAL, "not a JSON object");
    tok->trie_raw.empty = tok->trie_norm.empty = true;
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_array(added))
        added = NULL;
    if ((rc = load_model(tok, json_object_get(root, "model"), added, err)) < 0)
        return rc;
    if ((rc = load_components(tok, json_object_get(root, "normalizer"), "normalizers",
                              load_normalizer, &cap, err)) < 0)
        return rc;
    if ((rc = build_tries(tok, err)) < 0)
        return rc;
    cap = 0;
    if ((rc = load_components(tok, json_object_get(root, "pre_tokenizer"), "pretokenizers",
                              load_pretok, &cap, err)) < 0)
        return rc;
    cap = 0;
    json_t *dec = json_object_get(root, "decoder");
    tok->has_decoder = dec && !json_is_null(dec);
    if ((rc = load_components(tok, dec, "decoders", load_decoder, &cap, err)) < 0)
        return rc;
    if ((rc = load_post(tok, json_object_get(root, "post_processor"), err)) < 0)
        return rc;
    for (size_t i = 0; i < tok->n_pre; i++) {
        if (tok->pre[i].type != TOK_PRE_BYTELEVEL)
            continue;
        if (i + 1 != tok->n_pre)
            return fp8_err_set(err, -ENOTSUP, "pre_tokenizer ByteLevel must be the last pre-tokenizer");
        tok->bytelevel = true;
        for (int b = 0; b < 256; b++) {
            const struct tok_bytechar *c = &tok_byte_to_char[b];
            tok->bl_id[b] = tok_map_get(&tok->vocab, c->s, c->n);
        }
    }
    return 0;
}

int fp8_tokenizer_load_mem(struct fp8_tokenizer **out, const char *json, size_t len,
                           struct fp8_err *err)
{
    if (!out || !json)
        return fp8_err_set(err, -EINVAL, "tokenizer: NULL argument");
    tok_bytelevel_init();
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root)
        return fp8_err_set(err, -EINVAL, "tokenizer.json: line %d column %d: %s", je.line, je.column, je.text);
    struct fp8_tokenizer *tok = calloc(1, sizeof(*tok));
    int rc = -ENOMEM;
    if (!tok || !(tok->cache = calloc(TOK_CACHE_SLOTS, sizeof(*tok->cache)))) {
        fp8_err_set(err, rc, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&tok->lock, NULL);
    rc = load_root(tok, root, err);
    if (rc < 0) {
        fp8_err_prefix(err, rc, "tokenizer.json");
        goto fail;
    }
    json_decref(root);
    *out = tok;
    return 0;
fail:
    json_decref(root);
    fp8_tokenizer_free(tok);
    return rc;
}

int fp8_tokenizer_load(struct fp8_tokenizer **out, const char *path, struct fp8_err *err)
{
    if (!out || !path)
        return fp8_err_set(err, -EINVAL, "tokenizer: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f)
        return fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
    struct tok_buf b = {0};
    char chunk[1 << 16];
    size_t k;
    int rc = 0;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if ((rc = tok_buf_put(&b, chunk, k)) < 0)
            break;
    if (!rc && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc < 0) {
        tok_buf_free(&b);
        return fp8_err_set(err, rc, "%s: read failed", path);
    }
    rc = fp8_tokenizer_load_mem(out, b.p ? b.p : "", b.len, err);
    tok_buf_free(&b);
    if (rc < 0)
        fp8_err_prefix(err, rc, "%s", path);
    return rc;
}

void fp8_tokenizer_free(struct fp8_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->pool);
    free(tok->tokens);
    free(tok->token_len);
    free(tok->special);
    tok_map_free(&tok->vocab);
    tok_map_free(&tok->added_map);
    free(tok->merges);
    for (size_t i = 0; i < tok->n_norm; i++) {
        tok_pattern_free(&tok->norm[i].pat);
        free(tok->norm[i].content);
    }
    free(tok->norm);
    for (size_t i = 0; i < tok->n_pre; i++)
        tok_pattern_free(&tok->pre[i].pat);
    free(tok->pre);
    for (size_t i = 0; i < tok->n_dec; i++) {
        tok_pattern_free(&tok->dec[i].pat);
        free(tok->dec[i].content);
    }
    free(tok->dec);
    free(tok->post_before);
    free(tok->post_after);
    free(tok->dec_str);
    free(tok->dec_len);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].norm);
    }
    free(tok->added);
    trie_free(&tok->trie_raw);
    trie_free(&tok->trie_norm);
    while (tok->ws_free) {
        struct tok_ws *ws = tok->ws_free;
        tok->ws_free = ws->next_free;
        tok_ws_free(ws);
    }
    if (tok->cache) /* the mutex was initialised right after the cache was allocated */
        pthread_mutex_destroy(&tok->lock);
    free(tok->cache);
    free(tok);
}
