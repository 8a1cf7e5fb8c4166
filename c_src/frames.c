/*
 * frames.c: builds and sends every frame the port writes (see frames.h).
 *
 * The Ref of a call is copied into its reply byte for byte, never decoded and re-encoded:
 * a client may use any term as a Ref, pids and references included, and must get the
 * identical term back.
 */
#include "frames.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Frames are built on the main thread, except the log lines of native code that writes to
 * fd 1 (see frames_capture_native_stdout), which come from a reader thread: one lock keeps
 * every frame whole on the wire. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static struct erlcmd *out;
static ei_x_buff x;
static const char *current_ref;
static int current_ref_len;

void frames_init(struct erlcmd *cmd)
{
    out = cmd;
    ei_x_new(&x);
}

void frames_set_current_ref(const char *ref, int len)
{
    current_ref = ref;
    current_ref_len = len;
}

static void begin(void)
{
    x.index = 0;
    ei_x_encode_version(&x);
}

static void send_frame(const char *data, int len)
{
    /* A failed write means the BEAM has gone; the read loop sees EOF next and we exit. */
    if (!out)
        return;
    pthread_mutex_lock(&write_lock);
    erlcmd_send(out, data, (size_t)len);
    pthread_mutex_unlock(&write_lock);
}

static void send_built(void)
{
    send_frame(x.buff, x.index);
}

static void encode_ref(const char *ref, int ref_len)
{
    if (ref)
        ei_x_append_buf(&x, ref, ref_len);
    else
        ei_x_encode_atom(&x, "undefined");
}

/* Writes {reply, Ref, {Tag, ...: the caller appends the value. */
static void begin_reply(const char *ref, int ref_len, const char *tag)
{
    begin();
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "reply");
    encode_ref(ref, ref_len);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, tag);
}

const char *frames_reply_ok(const char *ref, int ref_len, PyObject *value)
{
    begin_reply(ref, ref_len, "ok");
    struct term_error err = {0};
    if (py_to_term(&x, value, &err) < 0)
        return frames_reply_error(ref, ref_len, "internal", "%s", err.message);
    send_built();
    return NULL;
}

const char *frames_reply_ok_atom(const char *ref, int ref_len, const char *atom)
{
    begin_reply(ref, ref_len, "ok");
    ei_x_encode_atom(&x, atom);
    send_built();
    return NULL;
}

const char *frames_reply_error(const char *ref, int ref_len, const char *kind, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(message))
        n = sizeof(message) - 1;
    begin_reply(ref, ref_len, "error");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, kind);
    ei_x_encode_binary(&x, message, n);
    send_built();
    return kind;
}

const char *frames_reply_error_py(const char *ref, int ref_len, const char *kind, PyObject *detail)
{
    begin_reply(ref, ref_len, "error");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, kind);
    struct term_error err = {0};
    if (py_to_term(&x, detail, &err) < 0)
        return frames_reply_error(ref, ref_len, kind, "(detail not encodable: %s)", err.message);
    send_built();
    return kind;
}

/* Logs and events get a buffer of their own: they can be sent while a reply is half built
 * in x (a print from code that encoding a reply runs, such as a .tolist()). */
void frames_log(const char *level, const char *message, size_t len)
{
    ei_x_buff lx;
    ei_x_new_with_version(&lx);
    ei_x_encode_tuple_header(&lx, 3);
    ei_x_encode_atom(&lx, "log");
    ei_x_encode_atom(&lx, level);
    ei_x_encode_binary(&lx, message, (long)len);
    send_frame(lx.buff, lx.index);
    ei_x_free(&lx);
}

void frames_logf(const char *level, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    frames_log(level, message, (size_t)n < sizeof(message) ? (size_t)n : sizeof(message) - 1);
}

int frames_event(PyObject *map, struct term_error *err)
{
    if (!current_ref)
        return 0;
    ei_x_buff ex;
    ei_x_new_with_version(&ex);
    ei_x_encode_tuple_header(&ex, 3);
    ei_x_encode_atom(&ex, "event");
    ei_x_append_buf(&ex, current_ref, current_ref_len);
    int rc = py_to_term(&ex, map, err);
    if (rc == 0)
        send_frame(ex.buff, ex.index);
    ei_x_free(&ex);
    return rc;
}

/* ---- native writes to fd 1 ------------------------------------------------------------------ */

/* Drops ANSI escape sequences (ESC [ ... final byte) in place; returns the new length. */
static size_t strip_ansi(char *s, size_t n)
{
    size_t w = 0;
    for (size_t r = 0; r < n; r++) {
        if (s[r] == 0x1b && r + 1 < n && s[r + 1] == '[') {
            r += 2;
            while (r < n && !(s[r] >= 0x40 && s[r] <= 0x7e))
                r++;
            continue;
        }
        if (s[r] != '\r')
            s[w++] = s[r];
    }
    return w;
}

static void send_native_line(char *line, size_t n)
{
    n = strip_ansi(line, n);
    if (n > 0)
        frames_log("info", line, n);
}

static void *forward_native_stdout(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t got = read(fd, buf + len, sizeof(buf) - len);
        if (got <= 0)
            break;
        len += (size_t)got;
        size_t start = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] == '\n') {
                send_native_line(buf + start, i - start);
                start = i + 1;
            }
        }
        if (start == 0 && len == sizeof(buf)) { /* a line longer than the buffer: send it */
            send_native_line(buf, len);
            start = len;
        }
        memmove(buf, buf + start, len - start);
        len -= start;
    }
    return NULL;
}

int frames_capture_native_stdout(void)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    /* The reader first: fd 1 must never point at a pipe nobody drains. */
    pthread_t thread;
    if (pthread_create(&thread, NULL, forward_native_stdout, (void *)(intptr_t)p[0]) != 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    pthread_detach(thread);
    int rc = dup2(p[1], 1);
    close(p[1]); /* on failure the reader sees EOF and ends */
    return rc < 0 ? -1 : 0;
}
