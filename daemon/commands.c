#include "commands.h"

#include <stddef.h>

/* Each command's entry point lives in its own daemon/cmd_*.c. */

const struct fp8d_command fp8d_commands[] = {
    {"logits", "teacher-forced logits of a token sequence", cmd_logits},
    {"run", "generate from one prompt, streamed to stdout", cmd_run},
    {NULL, NULL, NULL},
};
