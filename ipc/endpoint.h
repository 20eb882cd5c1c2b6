/* Where the daemon listens and who may talk to it.
 *
 * The default endpoint is ipc://$XDG_RUNTIME_DIR/fp8d.sock: the per-user runtime
 * directory is 0700, so only the user reaches the socket. A system daemon listens
 * elsewhere and restricts peers by the credentials the kernel reports for the Unix socket
 * (SO_PEERCRED, applied by ZeroMQ before any message is read). */
#ifndef FP8_IPC_ENDPOINT_H
#define FP8_IPC_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define FP8_ENDPOINT_MAX 512

/* ipc://$XDG_RUNTIME_DIR/fp8d.sock into buf. -ENOENT when XDG_RUNTIME_DIR is unset or
 * relative, -ENAMETOOLONG when it does not fit (a Unix socket path holds 107 bytes). */
int fp8_endpoint_default(char *buf, size_t cap, struct fp8_err *err);

/* Whether the endpoint is a local Unix socket (ipc://), the only kind with shared memory. */
bool fp8_endpoint_is_local(const char *endpoint);

/* The filesystem path of an ipc:// endpoint (for chmod and unlink). -EINVAL otherwise. */
int fp8_endpoint_path(const char *endpoint, char *buf, size_t cap, struct fp8_err *err);

/* Lets only peers with one of these uids or gids connect to a ZeroMQ socket that will
 * bind an ipc:// endpoint; call before zmq_bind. With no uids and no gids nothing changes
 * (the socket file's permissions decide). */
int fp8_endpoint_allow(void *zsock, const uint32_t *uids, size_t n_uids, const uint32_t *gids,
                       size_t n_gids, struct fp8_err *err);

#endif
