/*
 * erlcmd.c: {packet,4} framing (see erlcmd.h).
 *
 * Frames are length-prefixed. We read into one growing buffer and hand out every whole frame
 * it holds; a partial frame waits for the next read. A frame longer than max_frame is never
 * buffered: its payload is counted off as it arrives and the handler hears ERLCMD_TOO_LARGE,
 * so a runaway client costs us a reply, not our memory.
 */
#include "erlcmd.h"

#include "bigendian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEADER 4
#define INITIAL_CAP (64 * 1024)
#define READ_CHUNK (64 * 1024)

void erlcmd_init(struct erlcmd *cmd, int in_fd, int out_fd, size_t max_frame,
                 erlcmd_handler handler, void *cookie)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->in_fd = in_fd;
    cmd->out_fd = out_fd;
    cmd->max_frame = max_frame;
    cmd->handler = handler;
    cmd->cookie = cookie;
}

void erlcmd_destroy(struct erlcmd *cmd)
{
    free(cmd->buf);
    cmd->buf = NULL;
    cmd->len = cmd->cap = 0;
}

static int ensure_capacity(struct erlcmd *cmd, size_t want)
{
    if (want <= cmd->cap)
        return 0;
    size_t cap = cmd->cap ? cmd->cap : INITIAL_CAP;
    while (cap < want)
        cap *= 2;
    char *grown = realloc(cmd->buf, cap);
    if (!grown)
        return -1;
    cmd->buf = grown;
    cmd->cap = cap;
    return 0;
}

/* Drops as much of an oversize payload as is buffered. */
static void drop_discarded(struct erlcmd *cmd)
{
    size_t n = cmd->discarding < cmd->len ? (size_t)cmd->discarding : cmd->len;
    memmove(cmd->buf, cmd->buf + n, cmd->len - n);
    cmd->len -= n;
    cmd->discarding -= n;
}

/* Hands out every whole frame in the buffer, then keeps the partial remainder. */
static void dispatch_frames(struct erlcmd *cmd)
{
    size_t at = 0;
    while (cmd->len - at >= HEADER) {
        uint32_t frame_len = be32(cmd->buf + at);
        if (frame_len > cmd->max_frame) {
            /* Drop the header and whatever of the payload we already hold. */
            size_t held = cmd->len - at - HEADER;
            size_t dropped = held < frame_len ? held : frame_len;
            cmd->handler(ERLCMD_TOO_LARGE, NULL, frame_len, cmd->cookie);
            at += HEADER + dropped;
            cmd->discarding = frame_len - dropped;
            if (cmd->discarding)
                break;
            continue;
        }
        if (cmd->len - at - HEADER < frame_len)
            break;
        cmd->handler(ERLCMD_FRAME, cmd->buf + at + HEADER, frame_len, cmd->cookie);
        at += HEADER + frame_len;
    }
    memmove(cmd->buf, cmd->buf + at, cmd->len - at);
    cmd->len -= at;
}

int erlcmd_process(struct erlcmd *cmd)
{
    /* Read enough for the frame we are in the middle of, at least one chunk. */
    size_t want = READ_CHUNK;
    if (!cmd->discarding && cmd->len >= HEADER) {
        uint32_t frame_len = be32(cmd->buf);
        if (frame_len <= cmd->max_frame && HEADER + (size_t)frame_len > cmd->len)
            want = HEADER + (size_t)frame_len - cmd->len;
    }
    if (want < READ_CHUNK)
        want = READ_CHUNK;
    if (ensure_capacity(cmd, cmd->len + want) < 0)
        return -1;

    ssize_t got;
    do {
        got = read(cmd->in_fd, cmd->buf + cmd->len, cmd->cap - cmd->len);
    } while (got < 0 && errno == EINTR);
    if (got <= 0)
        return -1;
    cmd->len += (size_t)got;

    if (cmd->discarding)
        drop_discarded(cmd);
    if (!cmd->discarding)
        dispatch_frames(cmd);
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int erlcmd_send(struct erlcmd *cmd, const char *data, size_t len)
{
    /* One write for small frames: header and payload leave together. */
    char small[HEADER + 4096];
    char header[HEADER];
    put_be32(header, (uint32_t)len);
    if (len <= sizeof(small) - HEADER) {
        memcpy(small, header, HEADER);
        memcpy(small + HEADER, data, len);
        return write_all(cmd->out_fd, small, HEADER + len);
    }
    if (write_all(cmd->out_fd, header, HEADER) < 0)
        return -1;
    return write_all(cmd->out_fd, data, len);
}
