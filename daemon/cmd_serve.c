/* fp8d serve: load the model, then serve it on a ZeroMQ endpoint until SIGTERM/SIGINT. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/backend_model.h"
#include "daemon/commands.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/opts.h"
#include "daemon/server.h"
#include "ipc/endpoint.h"

#define SYSTEM_ENDPOINT "ipc:///run/fp8d/fp8d.sock"

static struct fp8d_server *g_server;

static void on_stop(int sig)
{
    (void)sig;
    if (g_server)
        fp8d_server_stop(g_server);
}

static void on_hup(int sig)
{
    (void)sig;
    if (g_server)
        fp8d_server_hup(g_server);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d serve (--model DIR | --synthetic PRESET) [options]\n\n"
               "Loads the model and serves it to local clients (libfp8d, fp8) until SIGTERM or\n"
               "SIGINT. Under systemd: Type=notify, socket activation and the watchdog.\n\n"
               "%s"
               "  --endpoint URL               ipc://PATH or tcp://ADDR:PORT (default\n"
               "                               ipc://$XDG_RUNTIME_DIR/fp8d.sock, with --system\n"
               "                               " SYSTEM_ENDPOINT "; a socket systemd passes wins)\n"
               "  --system                     system daemon: socket and shared memory 0660\n"
               "  --allow-uid UID|USER         only these peers may connect (repeatable)\n"
               "  --allow-gid GID|GROUP        ... or peers of these groups (repeatable)\n"
               "  --stream-timeout MS          cancel a stream whose reader stalls this long\n"
               "                               (default 30000)\n"
               "  --ring-slots N --ring-bytes N  streams per client and bytes per ring\n"
               "                               (default 16 and 65536)\n"
               "  --log-file FILE              log here (SIGHUP reopens it) instead of\n"
               "                               stderr or the journal\n"
               "  --log-level error|warn|info|debug  (default info)\n"
               "  --help                       this text\n",
            fp8d_opts_help);
}

static int parse_id(const char *v, bool group, uint32_t *out)
{
    int64_t x;
    if (fp8d_parse_i64(v, 0, UINT32_MAX - 1, &x) == 0) {
        *out = (uint32_t)x;
        return 0;
    }
    if (group) {
        struct group *g = getgrnam(v);
        if (g) {
            *out = g->gr_gid;
            return 0;
        }
    } else {
        struct passwd *p = getpwnam(v);
        if (p) {
            *out = p->pw_uid;
            return 0;
        }
    }
    return -EINVAL;
}

/* serve's own options; 1 when argv[*i] was one, 0 when not, < 0 on a bad value */
static int parse_serve(struct fp8d_server_opts *so, const char **log_file, const char **level,
                       int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int64_t x;
    if (!strcmp(a, "--system")) {
        so->system = true;
        *i += 1;
        return 1;
    }
    static const char *const with_value[] = {"--allow-uid", "--allow-gid", "--stream-timeout",
                                             "--ring-slots", "--ring-bytes", "--log-file",
                                             "--log-level"};
    size_t k;
    for (k = 0; k < sizeof(with_value) / sizeof(*with_value); k++)
        if (!strcmp(a, with_value[k]))
            break;
    if (k == sizeof(with_value) / sizeof(*with_value))
        return 0;
    if (!v) {
        fprintf(stderr, "fp8d serve: %s needs a value\n", a);
        return -EINVAL;
    }
    *i += 2;
    switch (k) {
    case 0:
    case 1: {
        bool group = k == 1;
        size_t *n = group ? &so->n_allow_gids : &so->n_allow_uids;
        uint32_t *dst = group ? so->allow_gids : so->allow_uids;
        if (*n == FP8D_MAX_ALLOW || parse_id(v, group, &dst[*n]) < 0) {
            fprintf(stderr, "fp8d serve: %s '%s': %s\n", a, v,
                    *n == FP8D_MAX_ALLOW ? "too many (16 at most)"
                                         : group ? "not a group id or name" : "not a user id or name");
            return -EINVAL;
        }
        (*n)++;
        return 1;
    }
    case 2:
        if (fp8d_parse_i64(v, 1, 24 * 3600 * 1000, &x) < 0)
            goto bad;
        so->stream_timeout_ms = (uint32_t)x;
        return 1;
    case 3:
        if (fp8d_parse_i64(v, 1, 1024, &x) < 0)
            goto bad;
        so->n_slots = (uint32_t)x;
        return 1;
    case 4:
        if (fp8d_parse_i64(v, 256, 1 << 24, &x) < 0 || (x & (x - 1)))
            goto bad;
        so->slot_bytes = (uint32_t)x;
        return 1;
    case 5:
        *log_file = v;
        return 1;
    default:
        *level = v;
        return 1;
    }
bad:
    fprintf(stderr, "fp8d serve: %s '%s': expected %s\n", a, v,
            k == 2 ? "milliseconds, 1..86400000" : k == 3 ? "1..1024"
                                                          : "a power of two, 256..16777216");
    return -EINVAL;
}

int cmd_serve(int argc, char **argv)
{
    struct fp8d_opts o;
    struct fp8d_server_opts so;
    struct fp8_err err = {{0}};
    const char *log_file = NULL, *level_name = "info";
    char endpoint[FP8_ENDPOINT_MAX];
    struct fp8d_backend be = {0};
    struct fp8d_server *srv = NULL;
    int status = 1;

    fp8d_opts_init(&o);
    fp8d_server_opts_init(&so);
    for (int i = 1; i < argc;) {
        int rc = fp8d_opts_next(&o, argc, argv, &i, "serve", usage, &status);
        if (rc < 0)
            return status;
        if (rc > 0)
            continue;
        rc = parse_serve(&so, &log_file, &level_name, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        fprintf(stderr, "fp8d serve: unexpected argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    enum fp8d_log_level level;
    if (fp8d_log_level_parse(level_name, &level) < 0) {
        fprintf(stderr, "fp8d serve: --log-level '%s': expected error, warn, info or debug\n",
                level_name);
        return 2;
    }
    if (!o.model_dir == !o.synthetic) {
        fprintf(stderr, "fp8d serve: one of --model DIR or --synthetic PRESET is required\n");
        return 2;
    }
    if (o.config_file) {
        fprintf(stderr, "fp8d serve: --config is not supported yet; pass the options\n");
        return 2;
    }
    int rc = fp8d_log_open(fp8d_log_under_systemd(), log_file, level);
    if (rc < 0) {
        fprintf(stderr, "fp8d serve: --log-file %s: %s\n", log_file, strerror(-rc));
        return 2;
    }

    /* Where to listen: the socket systemd passed, else --endpoint, else the default. */
    rc = fp8d_listen_fd(&so.listen_fd, endpoint, sizeof(endpoint), &err);
    if (rc < 0)
        goto fail;
    if (rc == 1) {
        if (o.endpoint && strcmp(o.endpoint, endpoint))
            fp8d_log(FP8D_LOG_WARN, "--endpoint %s ignored: systemd passed a socket on %s",
                     o.endpoint, endpoint);
    } else if (o.endpoint) {
        snprintf(endpoint, sizeof(endpoint), "%s", o.endpoint);
    } else if (so.system) {
        snprintf(endpoint, sizeof(endpoint), "%s", SYSTEM_ENDPOINT);
    } else if ((rc = fp8_endpoint_default(endpoint, sizeof(endpoint), &err)) < 0) {
        goto fail;
    }
    so.endpoint = endpoint;

    /* A client that vanished mid-send must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    fp8d_notify_status("loading %s", o.model_dir ? o.model_dir : o.synthetic);
    fp8d_log(FP8D_LOG_INFO, "loading %s on the %s backend", o.model_dir ? o.model_dir : o.synthetic,
             o.backend);
    rc = fp8d_backend_model_open(&be, &o, &err);
    if (rc < 0)
        goto fail;
    rc = fp8d_server_create(&srv, &so, &be, &err);
    if (rc < 0)
        goto fail;
    g_server = srv;
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    rc = fp8d_server_run(srv, &err);
    if (rc < 0)
        goto fail;
    status = 0;
fail:
    if (status) {
        fp8d_log(FP8D_LOG_ERR, "%s", err.msg);
        fp8d_notify_status("failed: %s", err.msg);
    }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    g_server = NULL;
    fp8d_server_free(srv);
    if (be.free)
        be.free(be.ctx);
    fp8d_log_close();
    return status;
}
