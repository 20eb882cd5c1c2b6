/* Streams one completion to stdout: stream "Once upon a time" */
#include <stdio.h>

#include <fp8d.h>

int main(int argc, char **argv)
{
    fp8d_client *c;
    fp8d_stream *s = NULL;
    struct fp8d_token t;
    int rc = fp8d_connect(NULL, 0, 5000, &c);
    if (rc < 0) {
        fprintf(stderr, "connect: %s\n", fp8d_strerror(rc));
        return 1;
    }
    rc = fp8d_generate(c, argc > 1 ? argv[1] : "Once upon a time", NULL, &s);
    while (rc == 0 && (rc = fp8d_stream_next(s, &t, -1)) == 1) {
        fwrite(t.text, 1, t.text_len, stdout);
        fflush(stdout);
    }
    if (rc < 0)
        fprintf(stderr, "\nerror: %s (%s)\n", fp8d_strerror(rc), fp8d_last_error(c));
    putchar('\n');
    fp8d_stream_free(s);
    fp8d_close(c);
    return rc < 0;
}
