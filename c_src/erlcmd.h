/*
 * erlcmd.h: {packet,4} framing between the BEAM and this port.
 *
 * One job: turn a byte stream on a file descriptor into whole frames, and whole frames
 * into bytes on another. It knows nothing of terms. Modelled on fhunleth's erlcmd.
 */
#ifndef URO_ERLCMD_H
#define URO_ERLCMD_H

#include <stddef.h>
#include <stdint.h>

enum erlcmd_status {
    ERLCMD_FRAME,      /* a whole frame: data points at its payload */
    ERLCMD_TOO_LARGE   /* a frame over the limit was read and dropped: len is its length */
};

typedef void (*erlcmd_handler)(enum erlcmd_status status, const char *data, size_t len,
                               void *cookie);

struct erlcmd {
    int in_fd;
    int out_fd;
    size_t max_frame;      /* payloads longer than this are discarded, not buffered */
    char *buf;             /* bytes read but not yet handed out */
    size_t len;
    size_t cap;
    uint64_t discarding;   /* bytes of an oversize payload still to drop */
    erlcmd_handler handler;
    void *cookie;
};

void erlcmd_init(struct erlcmd *cmd, int in_fd, int out_fd, size_t max_frame,
                 erlcmd_handler handler, void *cookie);
void erlcmd_destroy(struct erlcmd *cmd);

/* Reads what is available (one read(2), EINTR retried) and dispatches every whole frame.
 * Returns 0 to go on, -1 on end of input (EOF, also in the middle of a frame) or a read error. */
int erlcmd_process(struct erlcmd *cmd);

/* Writes one frame: a 4-byte big-endian length, then len bytes. Partial writes and EINTR are
 * retried. Returns 0, or -1 if the peer is gone. */
int erlcmd_send(struct erlcmd *cmd, const char *data, size_t len);

#endif
