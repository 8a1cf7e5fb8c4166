/*
 * test_erlcmd.c: cmocka tests for the {packet,4} framing (c_src/erlcmd.c).
 *
 * Each test feeds bytes through a real pipe: whole frames, frames split at every byte,
 * reads interrupted by a signal, end of input in the middle of a frame, and frames over the
 * limit, which must be dropped without buffering and without losing the frame after them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "erlcmd.h"

struct seen {
    int frames;
    int too_large;
    size_t last_len;
    size_t too_large_len;
    char last[256];
};

static void record(enum erlcmd_status status, const char *data, size_t len, void *cookie)
{
    struct seen *s = cookie;
    if (status == ERLCMD_TOO_LARGE) {
        s->too_large++;
        s->too_large_len = len;
        return;
    }
    s->frames++;
    s->last_len = len;
    memcpy(s->last, data, len < sizeof(s->last) ? len : sizeof(s->last));
}

static size_t frame(char *out, const char *payload, uint32_t len)
{
    out[0] = (char)(len >> 24);
    out[1] = (char)(len >> 16);
    out[2] = (char)(len >> 8);
    out[3] = (char)len;
    memcpy(out + 4, payload, len);
    return 4 + len;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void test_whole_frames_in_one_read(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 1024, record, &s);
    char buf[64];
    size_t n = frame(buf, "abc", 3);
    n += frame(buf + n, "hello", 5);
    n += frame(buf + n, "", 0);
    write_all(p[1], buf, n);
    assert_int_equal(erlcmd_process(&cmd), 0);
    assert_int_equal(s.frames, 3);
    assert_int_equal(s.last_len, 0);
    close(p[1]);
    assert_int_equal(erlcmd_process(&cmd), -1);
    erlcmd_destroy(&cmd);
    close(p[0]);
}

static void test_frame_split_at_every_byte(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 1024, record, &s);
    char buf[64];
    size_t n = frame(buf, "partial!", 8);
    for (size_t i = 0; i < n; i++) {
        write_all(p[1], buf + i, 1);
        assert_int_equal(erlcmd_process(&cmd), 0);
        assert_int_equal(s.frames, i + 1 == n ? 1 : 0);
    }
    assert_memory_equal(s.last, "partial!", 8);
    erlcmd_destroy(&cmd);
    close(p[0]);
    close(p[1]);
}

static void test_eof_mid_frame_is_end_of_input(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 1024, record, &s);
    char buf[64];
    size_t n = frame(buf, "truncated", 9);
    write_all(p[1], buf, n - 3);
    close(p[1]);
    assert_int_equal(erlcmd_process(&cmd), 0);
    assert_int_equal(erlcmd_process(&cmd), -1);
    assert_int_equal(s.frames, 0);
    erlcmd_destroy(&cmd);
    close(p[0]);
}

static void test_oversize_frame_is_dropped_and_next_frame_served(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 16, record, &s);
    /* A 1 MB frame (over the limit of 16) arrives in pieces, then a normal frame. */
    const uint32_t big = 1000000;
    char header[4] = {(char)(big >> 24), (char)(big >> 16), (char)(big >> 8), (char)big};
    write_all(p[1], header, 4);
    char *junk = calloc(1, 10000);
    for (uint32_t sent = 0; sent < big; sent += 10000) {
        write_all(p[1], junk, 10000);
        assert_int_equal(erlcmd_process(&cmd), 0);
    }
    assert_int_equal(s.too_large, 1);
    assert_int_equal(s.too_large_len, big);
    char buf[32];
    size_t n = frame(buf, "after", 5);
    write_all(p[1], buf, n);
    while (s.frames == 0)
        assert_int_equal(erlcmd_process(&cmd), 0);
    assert_int_equal(s.frames, 1);
    assert_memory_equal(s.last, "after", 5);
    assert_true(cmd.cap < big); /* the payload was never buffered */
    free(junk);
    erlcmd_destroy(&cmd);
    close(p[0]);
    close(p[1]);
}

static void test_oversize_frame_wholly_in_buffer(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 4, record, &s);
    char buf[64];
    size_t n = frame(buf, "too long", 8);
    n += frame(buf + n, "ok", 2);
    write_all(p[1], buf, n);
    assert_int_equal(erlcmd_process(&cmd), 0);
    assert_int_equal(s.too_large, 1);
    assert_int_equal(s.frames, 1);
    assert_memory_equal(s.last, "ok", 2);
    erlcmd_destroy(&cmd);
    close(p[0]);
    close(p[1]);
}

/* ---- EINTR: a signal without SA_RESTART lands while read(2) blocks ---- */

static void on_alarm(int sig) { (void)sig; }

struct delayed_write {
    int fd;
    char data[32];
    size_t len;
};

static void *write_later(void *arg)
{
    struct delayed_write *d = arg;
    usleep(100 * 1000);
    write_all(d->fd, d->data, d->len);
    return NULL;
}

static void test_read_interrupted_by_signal_is_retried(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm; /* no SA_RESTART: read(2) fails with EINTR */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval t = {{0, 0}, {0, 20 * 1000}};
    setitimer(ITIMER_REAL, &t, NULL);

    struct delayed_write d = {.fd = p[1]};
    d.len = frame(d.data, "late", 4);
    pthread_t th;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, &old); /* the writer thread must not take the signal */
    pthread_create(&th, NULL, write_later, &d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    struct seen s = {0};
    struct erlcmd cmd;
    erlcmd_init(&cmd, p[0], -1, 1024, record, &s);
    assert_int_equal(erlcmd_process(&cmd), 0);
    pthread_join(th, NULL);
    while (s.frames == 0)
        assert_int_equal(erlcmd_process(&cmd), 0);
    assert_memory_equal(s.last, "late", 4);
    erlcmd_destroy(&cmd);
    close(p[0]);
    close(p[1]);
}

static void test_send_writes_header_and_payload(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct erlcmd cmd;
    erlcmd_init(&cmd, -1, p[1], 1024, record, NULL);
    /* Larger than the one-write fast path too. */
    size_t big = 10000;
    char *payload = malloc(big);
    memset(payload, 'x', big);
    assert_int_equal(erlcmd_send(&cmd, "hi", 2), 0);
    assert_int_equal(erlcmd_send(&cmd, payload, big), 0);
    close(p[1]);

    struct seen s = {0};
    struct erlcmd in;
    erlcmd_init(&in, p[0], -1, 1 << 20, record, &s);
    while (erlcmd_process(&in) == 0)
        ;
    assert_int_equal(s.frames, 2);
    assert_int_equal(s.last_len, big);
    free(payload);
    erlcmd_destroy(&in);
    close(p[0]);
}

static void test_send_to_closed_reader_fails(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    signal(SIGPIPE, SIG_IGN);
    close(p[0]);
    struct erlcmd cmd;
    erlcmd_init(&cmd, -1, p[1], 1024, record, NULL);
    assert_int_equal(erlcmd_send(&cmd, "x", 1), -1);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_frames_in_one_read),
        cmocka_unit_test(test_frame_split_at_every_byte),
        cmocka_unit_test(test_eof_mid_frame_is_end_of_input),
        cmocka_unit_test(test_oversize_frame_is_dropped_and_next_frame_served),
        cmocka_unit_test(test_oversize_frame_wholly_in_buffer),
        cmocka_unit_test(test_read_interrupted_by_signal_is_retried),
        cmocka_unit_test(test_send_writes_header_and_payload),
        cmocka_unit_test(test_send_to_closed_reader_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
