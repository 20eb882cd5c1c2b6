/* Endpoint names and peer credential filters (the filter is checked end to end: a peer
 * with an allowed uid gets through, one without does not). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "ipc/endpoint.h"

static void test_default(void **state)
{
    (void)state;
    char buf[FP8_ENDPOINT_MAX], path[256];
    struct fp8_err err = {{0}};
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    assert_int_equal(fp8_endpoint_default(buf, sizeof(buf), &err), 0);
    assert_string_equal(buf, "ipc:///run/user/1000/fp8d.sock");
    assert_true(fp8_endpoint_is_local(buf));
    assert_int_equal(fp8_endpoint_path(buf, path, sizeof(path), &err), 0);
    assert_string_equal(path, "/run/user/1000/fp8d.sock");
    assert_int_equal(fp8_endpoint_default(buf, 10, &err), -ENAMETOOLONG);

    char longdir[200];
    memset(longdir, 'd', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    setenv("XDG_RUNTIME_DIR", longdir, 1); /* over the 107 bytes of sun_path */
    assert_int_equal(fp8_endpoint_default(buf, sizeof(buf), &err), -ENAMETOOLONG);
    setenv("XDG_RUNTIME_DIR", "relative", 1);
    assert_int_equal(fp8_endpoint_default(buf, sizeof(buf), &err), -ENOENT);
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(fp8_endpoint_default(buf, sizeof(buf), &err), -ENOENT);
    assert_non_null(strstr(err.msg, "XDG_RUNTIME_DIR is not set"));

    assert_false(fp8_endpoint_is_local("tcp://127.0.0.1:5555"));
    assert_false(fp8_endpoint_is_local(NULL));
    assert_int_equal(fp8_endpoint_path("tcp://127.0.0.1:5555", path, sizeof(path), &err),
                     -EINVAL);
}

/* Binds a ROUTER allowing uid, connects a DEALER from this process, and reports whether
 * its message arrived within 500 ms (the positive case arrives in microseconds). */
static bool delivered_with_uid_filter(uint32_t uid)
{
    char ep[128];
    snprintf(ep, sizeof(ep), "ipc:///tmp/fp8d-test-endpoint-%d-%u.sock", (int)getpid(), uid);
    void *ctx = zmq_ctx_new();
    void *r = zmq_socket(ctx, ZMQ_ROUTER), *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(r, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof(linger));
    assert_int_equal(fp8_endpoint_allow(r, &uid, 1, NULL, 0, NULL), 0);
    assert_int_equal(zmq_bind(r, ep), 0);
    assert_int_equal(zmq_connect(d, ep), 0);
    zmq_send(d, "hi", 2, ZMQ_DONTWAIT);
    zmq_pollitem_t item = {.socket = r, .events = ZMQ_POLLIN};
    bool got = zmq_poll(&item, 1, 500) == 1;
    zmq_close(d);
    zmq_close(r);
    zmq_ctx_term(ctx);
    unlink(ep + strlen("ipc://"));
    return got;
}

static void test_uid_filter(void **state)
{
    (void)state;
    assert_true(delivered_with_uid_filter((uint32_t)getuid()));
    assert_false(delivered_with_uid_filter((uint32_t)getuid() + 4242));
    assert_int_equal(fp8_endpoint_allow(NULL, NULL, 0, NULL, 0, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default),
        cmocka_unit_test(test_uid_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
