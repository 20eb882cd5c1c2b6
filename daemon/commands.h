/* The fp8d subcommands. Each takes the arguments after its name (argv[0] is the
 * subcommand) and returns the process exit status. One file per command: daemon/cmd_*.c. */
#ifndef FP8D_DAEMON_COMMANDS_H
#define FP8D_DAEMON_COMMANDS_H

struct fp8d_command {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
};

/* The table, ending with a NULL name (daemon/commands.c). */
extern const struct fp8d_command fp8d_commands[];

int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
