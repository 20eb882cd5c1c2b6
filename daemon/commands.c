#include "commands.h"

#include <stddef.h>

/* Each command's entry point lives in its own daemon/cmd_*.c. */

const struct fp8d_command fp8d_commands[] = {
    {NULL, NULL, NULL},
};
