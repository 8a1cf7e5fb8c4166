/*
 * frames.h: the frames the port sends: replies, logs and events (docs/PROTOCOL.md).
 *
 * Every outgoing frame is built here, in one reused buffer, and leaves through erlcmd_send on
 * the private duplicate of fd 1. Nothing else in the port writes to that descriptor.
 */
#ifndef URO_FRAMES_H
#define URO_FRAMES_H

#include "erlcmd.h"
#include "term.h"

void frames_init(struct erlcmd *out);

/* The Ref of the call being served (a slice of its frame), so events can name it. */
void frames_set_current_ref(const char *ref, int len);

/* {reply, Ref, {ok, Value}}. If Value cannot be encoded the caller gets
 * {error, {internal, Message}} instead. Returns NULL, or the error kind that was sent. */
const char *frames_reply_ok(const char *ref, int ref_len, PyObject *value);
const char *frames_reply_ok_atom(const char *ref, int ref_len, const char *atom);

/* {reply, Ref, {error, {Kind, Detail}}}; a NULL ref sends the atom undefined. Detail is a
 * binary (the message) or any encodable Python object. Both return kind. */
const char *frames_reply_error(const char *ref, int ref_len, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *frames_reply_error_py(const char *ref, int ref_len, const char *kind, PyObject *detail);

/* {log, Level, Message}: Level is debug, info, warning or error. */
void frames_log(const char *level, const char *message, size_t len);
void frames_logf(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Points fd 1 at a pipe whose lines (native code's printf, Rust's println!) a reader thread
 * sends as {log, info, Line}, ANSI codes stripped. 0, or -1 (fd 1 is then left alone). */
int frames_capture_native_stdout(void);

/* {event, Ref, Map} for the current call; dropped when no call runs. -1 if map won't encode. */
int frames_event(PyObject *map, struct term_error *err);

#endif
