#include "daemon/notify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

uint64_t fp8d_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

void fp8d_notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void fp8d_notify_status(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", line);
}

void fp8d_notify_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}

void fp8d_notify_stopping(const char *status)
{
    sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

int fp8d_listen_fd(int *fd, char *buf, size_t cap, struct fp8_err *err)
{
    /* unset_environment: a child (none today) must not think the socket is its own */
    int n = sd_listen_fds(1);
    if (n < 0)
        return fp8_err_set(err, n, "socket activation: %s", strerror(-n));
    if (n == 0)
        return 0;
    if (n > 1)
        return fp8_err_set(err, -EINVAL, "socket activation: %d sockets passed, fp8d listens "
                           "on one (one ListenStream= in fp8d.socket)", n);
    int s = SD_LISTEN_FDS_START;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (sd_is_socket(s, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
        getsockname(s, (struct sockaddr *)&ss, &len) < 0)
        return fp8_err_set(err, -EINVAL, "socket activation: fd %d is not a listening stream "
                           "socket", s);
    int w;
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        if (len <= offsetof(struct sockaddr_un, sun_path) || un->sun_path[0] == '\0')
            return fp8_err_set(err, -EINVAL, "socket activation: an abstract or unnamed Unix "
                               "socket; use a path (ListenStream=/run/fp8d/fp8d.sock)");
        w = snprintf(buf, cap, "ipc://%.*s",
                     (int)(len - offsetof(struct sockaddr_un, sun_path)), un->sun_path);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
        w = snprintf(buf, cap, "tcp://%s:%u", a, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)&ss;
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &in->sin6_addr, a, sizeof(a));
        w = snprintf(buf, cap, "tcp://[%s]:%u", a, ntohs(in->sin6_port));
    } else {
        return fp8_err_set(err, -EINVAL, "socket activation: address family %d is not Unix "
                           "or TCP", ss.ss_family);
    }
    if (w < 0 || (size_t)w >= cap)
        return fp8_err_set(err, -ENAMETOOLONG, "socket activation: address too long");
    *fd = s;
    return 1;
}
