#include "commands.h"

#include <stddef.h>

/* Each command's entry point lives in its own daemon/cmd_*.c. */

const struct fp8d_command fp8d_commands[] = {
    {"inspect", "validate and summarize a checkpoint directory", cmd_inspect},
    {"mkmodel", "write a deterministic random checkpoint (HF layout)", cmd_mkmodel},
    {"tokenize", "encode/decode text and render chat templates (tokenizer files only)", cmd_tokenize},
    {"logits", "teacher-forced logits of a token sequence", cmd_logits},
    {"run", "generate from one prompt, streamed to stdout", cmd_run},
    {"serve", "serve the model to local clients (the daemon)", cmd_serve},
    {"bench", "decode tok/s per batch size, memory, roofline, time to first token", cmd_bench},
    {NULL, NULL, NULL},
};
