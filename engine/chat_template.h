/* Chat templates without Jinja: the Qwen3 and Gemma3 templates re-implemented in C so that
 * the rendered prompt equals HF apply_chat_template(messages, tokenize=False, ...) with the
 * model's own template, byte for byte (the tests/golden chat fixtures). Tools and tool calls
 * are not supported (an error says so). */
#ifndef FP8_ENGINE_CHAT_TEMPLATE_H
#define FP8_ENGINE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

struct json_t;

enum fp8_chat_family {
    FP8_CHAT_QWEN3,  /* ChatML with <think> handling (Qwen3ForCausalLM, Qwen3MoeForCausalLM) */
    FP8_CHAT_GEMMA3, /* <start_of_turn> (Gemma3ForCausalLM, Gemma3ForConditionalGeneration) */
};

struct fp8_chat_template {
    enum fp8_chat_family family;
    char bos_token[64]; /* rendered by Gemma3's template ("<bos>") */
};

/* One content part: type "text" (text set) or "image" (text NULL). */
struct fp8_chat_part {
    const char *type;
    const char *text;
};

struct fp8_chat_message {
    const char *role;
    const char *content;                /* string content, or NULL when given as parts */
    const struct fp8_chat_part *parts;  /* (n_parts) when content is NULL */
    size_t n_parts;
    const char *reasoning_content;      /* Qwen3: explicit reasoning; NULL when absent */
};

/* Picks the template for a config.json architecture ("Qwen3ForCausalLM", ...) or a short
 * name ("qwen3", "qwen3_moe", "gemma3"). -ENOTSUP names the architecture otherwise. */
int fp8_chat_template_init(struct fp8_chat_template *t, const char *arch, struct fp8_err *err);

/* Renders messages. enable_thinking: -1 when not given, else 0/1 (Qwen3 only looks at an
 * explicit false). On success *out is malloc'd and NUL-terminated, *len its length. */
int fp8_chat_render(const struct fp8_chat_template *t, const struct fp8_chat_message *msgs,
                    size_t n_msgs, bool add_generation_prompt, int enable_thinking, char **out,
                    size_t *len, struct fp8_err *err);

/* Builds messages from a JSON array of {"role", "content": string | [{"type","text"}],
 * "reasoning_content"?}. Strings point into arr, which must outlive the result; free with
 * fp8_chat_messages_free. */
int fp8_chat_messages_from_json(const struct json_t *arr, struct fp8_chat_message **msgs,
                                size_t *n_msgs, struct fp8_err *err);
void fp8_chat_messages_free(struct fp8_chat_message *msgs, size_t n_msgs);

#endif
