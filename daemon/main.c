/* fp8d: the daemon and its offline tools, one executable with subcommands. */
#include <stdio.h>
#include <string.h>

#include "daemon/commands.h"

static void print_usage(FILE *f)
{
    fprintf(f, "usage: fp8d COMMAND [options]   (fp8d COMMAND --help for its options)\n\ncommands:\n");
    for (const struct fp8d_command *c = fp8d_commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\n  --version  print the version\n  --help     this text\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("fp8d %s\n", FP8D_VERSION);
        return 0;
    }
    for (const struct fp8d_command *c = fp8d_commands; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->main(argc - 1, argv + 1);
    fprintf(stderr, "fp8d: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return 2;
}
