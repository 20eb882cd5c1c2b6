#include "endpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <zmq.h>

#define IPC_PREFIX "ipc://"

int fp8_endpoint_default(char *buf, size_t cap, struct fp8_err *err)
{
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || dir[0] != '/')
        return fp8_err_set(err, -ENOENT, "XDG_RUNTIME_DIR is %s: pass an endpoint explicitly",
                           dir ? "not an absolute path" : "not set");
    char tmp[FP8_ENDPOINT_MAX];
    int n = snprintf(tmp, sizeof(tmp), IPC_PREFIX "%s/fp8d.sock", dir);
    size_t path_len = (size_t)n - strlen(IPC_PREFIX);
    if (n < 0 || (size_t)n >= cap || (size_t)n >= sizeof(tmp) ||
        path_len >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return fp8_err_set(err, -ENAMETOOLONG, "socket path %s/fp8d.sock is too long", dir);
    memcpy(buf, tmp, (size_t)n + 1);
    return 0;
}

bool fp8_endpoint_is_local(const char *endpoint)
{
    return endpoint && strncmp(endpoint, IPC_PREFIX, strlen(IPC_PREFIX)) == 0;
}

int fp8_endpoint_path(const char *endpoint, char *buf, size_t cap, struct fp8_err *err)
{
    if (!fp8_endpoint_is_local(endpoint))
        return fp8_err_set(err, -EINVAL, "endpoint %.64s is not ipc://",
                           endpoint ? endpoint : "(null)");
    const char *path = endpoint + strlen(IPC_PREFIX);
    size_t n = strlen(path);
    if (n == 0 || n >= cap)
        return fp8_err_set(err, -ENAMETOOLONG, "endpoint %.64s: bad path length", endpoint);
    memcpy(buf, path, n + 1);
    return 0;
}

int fp8_endpoint_allow(void *zsock, const uint32_t *uids, size_t n_uids, const uint32_t *gids,
                       size_t n_gids, struct fp8_err *err)
{
    if (!zsock || (n_uids && !uids) || (n_gids && !gids))
        return fp8_err_set(err, -EINVAL, "endpoint_allow: NULL argument");
    for (size_t i = 0; i < n_uids; i++) {
        int v = (int)uids[i];
        if (zmq_setsockopt(zsock, ZMQ_IPC_FILTER_UID, &v, sizeof(v)) < 0)
            return fp8_err_set(err, -errno, "peer uid filter %u: %s", uids[i],
                               zmq_strerror(errno));
    }
    for (size_t i = 0; i < n_gids; i++) {
        int v = (int)gids[i];
        if (zmq_setsockopt(zsock, ZMQ_IPC_FILTER_GID, &v, sizeof(v)) < 0)
            return fp8_err_set(err, -errno, "peer gid filter %u: %s", gids[i],
                               zmq_strerror(errno));
    }
    return 0;
}
