/* Qwen3 and Gemma3 chat templates, statement by statement from their Jinja sources in
 * tokenizer_config.json (the comments quote the Jinja being mirrored). */
#include "engine/chat_template.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *p;
    size_t len, cap;
    int rc;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
    if (b->rc)
        return;
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->rc = -ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(struct sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

struct str {
    const char *p;
    size_t n;
};

static struct str S(const char *s)
{
    return (struct str){s, s ? strlen(s) : 0};
}

static bool starts(struct str s, const char *pre)
{
    size_t k = strlen(pre);
    return s.n >= k && !memcmp(s.p, pre, k);
}

static bool ends(struct str s, const char *suf)
{
    size_t k = strlen(suf);
    return s.n >= k && !memcmp(s.p + s.n - k, suf, k);
}

static const char *find_first(struct str s, const char *pat)
{
    size_t k = strlen(pat);
    return s.n >= k ? memmem(s.p, s.n, pat, k) : NULL;
}

static const char *find_last(struct str s, const char *pat)
{
    size_t k = strlen(pat);
    for (size_t i = s.n; i >= k; i--)
        if (!memcmp(s.p + i - k, pat, k))
            return s.p + i - k;
    return NULL;
}

/* Python str.lstrip('\n') / rstrip('\n') */
static struct str lstrip_nl(struct str s)
{
    while (s.n && s.p[0] == '\n')
        s.p++, s.n--;
    return s;
}

static struct str rstrip_nl(struct str s)
{
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}

/* Python's str.isspace() for one code point (what Jinja's trim strips). */
static bool py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Decodes one UTF-8 character at p (the text came from valid JSON); returns its length. */
static size_t u8_at(const char *p, size_t n, uint32_t *cp)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t k = u[0] < 0x80 ? 1 : u[0] < 0xe0 ? 2 : u[0] < 0xf0 ? 3 : 4;
    if (k > n)
        k = n;
    uint32_t c = k == 1 ? u[0] : (uint32_t)(u[0] & (0x7f >> k));
    for (size_t i = 1; i < k; i++)
        c = (c << 6) | (u[i] & 0x3f);
    *cp = c;
    return k;
}

/* Jinja's |trim (Python str.strip()). */
static struct str trim(struct str s)
{
    uint32_t cp;
    while (s.n) {
        size_t k = u8_at(s.p, s.n, &cp);
        if (!py_space(cp))
            break;
        s.p += k;
        s.n -= k;
    }
    while (s.n) {
        size_t i = s.n - 1;
        while (i > 0 && ((uint8_t)s.p[i] & 0xc0) == 0x80)
            i--;
        u8_at(s.p + i, s.n - i, &cp);
        if (!py_space(cp))
            break;
        s.n = i;
    }
    return s;
}

static void put_str(struct sbuf *b, struct str s)
{
    put(b, s.p, s.n);
}

static bool role_is(const struct fp8_chat_message *m, const char *r)
{
    return m->role && !strcmp(m->role, r);
}

int fp8_chat_template_init(struct fp8_chat_template *t, const char *arch, struct fp8_err *err)
{
    if (!t || !arch)
        return fp8_err_set(err, -EINVAL, "chat template: NULL argument");
    static const struct {
        const char *name;
        enum fp8_chat_family family;
    } known[] = {
        {"Qwen3ForCausalLM", FP8_CHAT_QWEN3},     {"Qwen3MoeForCausalLM", FP8_CHAT_QWEN3},
        {"qwen3", FP8_CHAT_QWEN3},                {"qwen3_moe", FP8_CHAT_QWEN3},
        {"Gemma3ForCausalLM", FP8_CHAT_GEMMA3},   {"Gemma3ForConditionalGeneration", FP8_CHAT_GEMMA3},
        {"gemma3", FP8_CHAT_GEMMA3},              {"gemma3_text", FP8_CHAT_GEMMA3},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(arch, known[i].name))
            continue;
        *t = (struct fp8_chat_template){.family = known[i].family};
        if (t->family == FP8_CHAT_GEMMA3)
            strcpy(t->bos_token, "<bos>");
        return 0;
    }
    return fp8_err_set(err, -ENOTSUP, "no chat template for architecture '%s' (supported: Qwen3, Qwen3-MoE, Gemma3)",
                       arch);
}

static int render_qwen3(const struct fp8_chat_message *m, size_t n, bool gen, int think,
                        struct sbuf *b, struct fp8_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (!m[i].content)
            return fp8_err_set(err, -EINVAL, "chat: message %zu: Qwen3's template needs string content", i);
    /* {%- if messages[0].role == 'system' %} */
    if (role_is(&m[0], "system")) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, m[0].content);
        puts_(b, "<|im_end|>\n");
    }
    /* ns.last_query_index: the last user turn that is not a <tool_response> wrapper */
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        struct str c = S(m[k].content);
        if (role_is(&m[k], "user") && !(starts(c, "<tool_response>") && ends(c, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct fp8_chat_message *msg = &m[i];
        if (role_is(msg, "user") || (role_is(msg, "system") && i > 0)) {
            puts_(b, "<|im_start|>");
            puts_(b, msg->role);
            puts_(b, "\n");
            puts_(b, msg->content);
            puts_(b, "<|im_end|>\n");
        } else if (role_is(msg, "assistant")) {
            struct str content = S(msg->content), reasoning = {"", 0};
            if (msg->reasoning_content) {
                reasoning = S(msg->reasoning_content);
            } else if (find_first(content, "</think>")) {
                /* content.split('</think>')[-1].lstrip('\n') */
                const char *last = find_last(content, "</think>") + 8;
                struct str whole = content;
                content = lstrip_nl((struct str){last, (size_t)(whole.p + whole.n - last)});
                /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
                struct str r = {whole.p, (size_t)(find_first(whole, "</think>") - whole.p)};
                r = rstrip_nl(r);
                const char *open = find_last(r, "<think>");
                if (open)
                    r = (struct str){open + 7, (size_t)(r.p + r.n - open - 7)};
                reasoning = lstrip_nl(r);
            }
            puts_(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || reasoning.n)) {
                puts_(b, "<think>\n");
                put_str(b, rstrip_nl(lstrip_nl(reasoning)));
                puts_(b, "\n</think>\n\n");
                put_str(b, lstrip_nl(content));
            } else {
                put_str(b, content);
            }
            puts_(b, "<|im_end|>\n");
        } else if (role_is(msg, "tool")) {
            if (i == 0 || !role_is(&m[i - 1], "tool"))
                puts_(b, "<|im_start|>user");
            puts_(b, "\n<tool_response>\n");
            puts_(b, msg->content);
            puts_(b, "\n</tool_response>");
            if (i == n - 1 || !role_is(&m[i + 1], "tool"))
                puts_(b, "<|im_end|>\n");
        }
        /* any other role renders nothing, as in the template */
    }
    if (gen) {
        puts_(b, "<|im_start|>assistant\n");
        if (think == 0)
            puts_(b, "<think>\n\n</think>\n\n");
    }
    return 0;
}

static int render_gemma3(const struct fp8_chat_template *t, const struct fp8_chat_message *m,
                         size_t n, bool gen, struct sbuf *b, struct fp8_err *err)
{
    puts_(b, t->bos_token);
    struct str prefix = {"", 0};
    size_t first = 0;
    if (role_is(&m[0], "system")) {
        if (m[0].content)
            prefix = S(m[0].content);
        else if (m[0].n_parts && m[0].parts[0].text)
            prefix = S(m[0].parts[0].text);
        else
            return fp8_err_set(err, -EINVAL, "chat: system message without text");
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        const struct fp8_chat_message *msg = &m[i];
        size_t idx = i - first;
        if (role_is(msg, "user") != (idx % 2 == 0))
            return fp8_err_set(err, -EINVAL, "chat: Conversation roles must alternate user/assistant/user/assistant/...");
        puts_(b, "<start_of_turn>");
        puts_(b, role_is(msg, "assistant") ? "model" : msg->role);
        puts_(b, "\n");
        if (idx == 0) {
            put_str(b, prefix);
            if (first)
                puts_(b, "\n\n");
        }
        if (msg->content) {
            put_str(b, trim(S(msg->content)));
        } else {
            for (size_t k = 0; k < msg->n_parts; k++) {
                const struct fp8_chat_part *p = &msg->parts[k];
                if (p->type && !strcmp(p->type, "image"))
                    puts_(b, "<start_of_image>");
                else if (p->type && !strcmp(p->type, "text") && p->text)
                    put_str(b, trim(S(p->text)));
            }
        }
        puts_(b, "<end_of_turn>\n");
    }
    if (gen)
        puts_(b, "<start_of_turn>model\n");
    return 0;
}

int fp8_chat_render(const struct fp8_chat_template *t, const struct fp8_chat_message *msgs,
                    size_t n_msgs, bool add_generation_prompt, int enable_thinking, char **out,
                    size_t *len, struct fp8_err *err)
{
    if (!t || (!msgs && n_msgs) || !out || !len)
        return fp8_err_set(err, -EINVAL, "chat: NULL argument");
    if (!n_msgs)
        return fp8_err_set(err, -EINVAL, "chat: no messages");
    for (size_t i = 0; i < n_msgs; i++)
        if (!msgs[i].role)
            return fp8_err_set(err, -EINVAL, "chat: message %zu has no role", i);
    struct sbuf b = {0};
    puts_(&b, "");
    int rc = t->family == FP8_CHAT_QWEN3
                 ? render_qwen3(msgs, n_msgs, add_generation_prompt, enable_thinking, &b, err)
                 : render_gemma3(t, msgs, n_msgs, add_generation_prompt, &b, err);
    if (rc == 0 && b.rc)
        rc = fp8_err_set(err, b.rc, "chat: out of memory");
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

int fp8_chat_messages_from_json(const struct json_t *carr, struct fp8_chat_message **msgs,
                                size_t *n_msgs, struct fp8_err *err)
{
    json_t *arr = (json_t *)carr;
    if (!json_is_array(arr) || !msgs || !n_msgs)
        return fp8_err_set(err, -EINVAL, "chat: \"messages\" must be an array");
    size_t n = json_array_size(arr);
    struct fp8_chat_message *m = calloc(n ? n : 1, sizeof(*m));
    if (!m)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it) {
        json_t *role = json_object_get(it, "role"), *content = json_object_get(it, "content");
        json_t *rc_ = json_object_get(it, "reasoning_content");
        if (!json_is_string(role)) {
            rc = fp8_err_set(err, -EINVAL, "chat: messages[%zu]: \"role\" must be a string", i);
            break;
        }
        if (json_object_get(it, "tool_calls")) {
            rc = fp8_err_set(err, -ENOTSUP, "chat: messages[%zu]: tool_calls are not supported", i);
            break;
        }
        m[i].role = json_string_value(role);
        if (json_is_string(rc_))
            m[i].reasoning_content = json_string_value(rc_);
        if (json_is_string(content)) {
            m[i].content = json_string_value(content);
        } else if (json_is_array(content)) {
            size_t k, np = json_array_size(content);
            json_t *p;
            struct fp8_chat_part *parts = calloc(np ? np : 1, sizeof(*parts));
            if (!parts) {
                rc = fp8_err_set(err, -ENOMEM, "out of memory");
                break;
            }
            m[i].parts = parts;
            m[i].n_parts = np;
            json_array_foreach(content, k, p) {
                parts[k].type = json_string_value(json_object_get(p, "type"));
                parts[k].text = json_string_value(json_object_get(p, "text"));
                if (!parts[k].type) {
                    rc = fp8_err_set(err, -EINVAL, "chat: messages[%zu].content[%zu]: no \"type\"", i, k);
                    break;
                }
            }
            if (rc < 0)
                break;
        } else {
            rc = fp8_err_set(err, -EINVAL, "chat: messages[%zu]: \"content\" must be a string or an array of parts", i);
            break;
        }
    }
    if (rc < 0) {
        fp8_chat_messages_free(m, n);
        return rc;
    }
    *msgs = m;
    *n_msgs = n;
    return 0;
}

void fp8_chat_messages_free(struct fp8_chat_message *msgs, size_t n_msgs)
{
    if (!msgs)
        return;
    for (size_t i = 0; i < n_msgs; i++)
        free((void *)msgs[i].parts);
    free(msgs);
}
