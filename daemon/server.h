/* The daemon proper: a ZeroMQ ROUTER served by the IPC thread (sessions, validation,
 * tokenization, replies) and an engine thread that steps the backend and streams tokens
 * into each session's shared-memory rings (or as `chunk` messages). docs/protocol.md is
 * the contract; docs/daemon.md explains the threads, backpressure and shutdown. */
#ifndef FP8D_DAEMON_SERVER_H
#define FP8D_DAEMON_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "daemon/backend.h"

#define FP8D_MAX_ALLOW 16

struct fp8d_server_opts {
    const char *endpoint;       /* ipc://PATH or tcp://ADDR:PORT */
    int listen_fd;              /* >= 0: the socket systemd passed (endpoint is its address) */
    bool system;                /* system daemon: socket and segments 0660 instead of 0600 */
    uint32_t allow_uids[FP8D_MAX_ALLOW], allow_gids[FP8D_MAX_ALLOW];
    size_t n_allow_uids, n_allow_gids; /* ipc:// peers must match one (none: any) */
    uint32_t stream_timeout_ms; /* a full ring cancels its stream after this long */
    uint32_t n_slots;           /* ring slots per session: streams at once per client */
    uint32_t slot_bytes;        /* bytes of one ring (a power of two) */
    uint32_t max_sessions;
    uint32_t drain_ms;          /* at shutdown, how long cut streams wait for their reader */
};

/* 30 s stream timeout, 16 slots of 64 KiB, 1024 sessions, 2 s drain. */
void fp8d_server_opts_init(struct fp8d_server_opts *o);

struct fp8d_server;

/* Binds the endpoint (the backend stays the caller's and must outlive the server). */
int fp8d_server_create(struct fp8d_server **out, const struct fp8d_server_opts *o,
                       struct fp8d_backend *be, struct fp8_err *err);

/* Serves until fp8d_server_stop, then shuts down gracefully: new generations are refused
 * with shutting_down, running ones are cut with shutting_down after their FINAL record,
 * every segment is unlinked. Sends READY=1 when it starts serving. Returns 0 or a
 * negative errno (err set) when serving failed. */
int fp8d_server_run(struct fp8d_server *s, struct fp8_err *err);

/* The endpoint it listens on, with the port ZeroMQ chose for tcp://HOST:*. */
const char *fp8d_server_endpoint(const struct fp8d_server *s);

/* Async-signal-safe: asks run to shut down (SIGTERM, SIGINT). */
void fp8d_server_stop(struct fp8d_server *s);
/* Async-signal-safe: asks run to reopen the log (SIGHUP). */
void fp8d_server_hup(struct fp8d_server *s);

/* Accepts NULL. Only after run returned (or was never called). */
void fp8d_server_free(struct fp8d_server *s);

#endif
