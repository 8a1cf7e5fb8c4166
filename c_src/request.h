/*
 * request.h: one request frame -> one struct call (docs/PROTOCOL.md, "Frames the port
 * receives").
 *
 * Inflates a compressed frame, has the term validated (term.h), and parses {call, Ref,
 * Command} or {call, Ref, Command, CallOpts}: the Ref as a slice of the frame, the command's
 * name, where its arguments start, and CallOpts' timeout_ms. A frame that is not a call comes
 * back as an outcome naming what is wrong with it, with the Ref when there is one to answer,
 * even for a call nested too deep to validate. It builds no reply and knows no command: the
 * table and the handlers are commands.c's.
 */
#ifndef URO_REQUEST_H
#define URO_REQUEST_H

#include <stddef.h>

#define REQUEST_MAX_NAME 64

enum request_outcome {
    REQUEST_CALL,          /* a call: name, n_args, args_index and timeout_ms are set */
    REQUEST_BAD_FRAME,     /* not one whole term, or not a call; ref is NULL */
    REQUEST_TOO_DEEP,      /* a call nested deeper than TERM_MAX_DEPTH; ref is its Ref */
    REQUEST_NOT_A_COMMAND, /* a call whose Command is neither an atom nor {atom, ...} */
    REQUEST_BAD_CALL_OPTS, /* a call whose CallOpts are malformed */
};

/* One call, as parsed from its frame. Slices point into frame. */
struct call {
    const char *frame;   /* the plain <<131, Term>>: the request, or its inflated copy */
    size_t len;
    const char *ref;     /* the Ref, byte for byte; NULL when there is none to answer */
    int ref_len;
    char name[REQUEST_MAX_NAME];
    int n_args;          /* elements after the name; 0 for a bare atom */
    int args_index;      /* where the first argument starts */
    long timeout_ms;     /* from CallOpts; 0 when none */
    char why[256];       /* for every outcome but REQUEST_CALL: what the error reply says */
    char *inflated;      /* owned: the inflated copy of a compressed request */
};

/* Fills call from frame[0..len). A compressed term may not inflate past limit bytes (the
 * --max-frame limit). Call request_release afterwards, whatever the outcome. */
enum request_outcome request_parse(const char *frame, size_t len, size_t limit,
                                   struct call *call);
void request_release(struct call *call);

/* For a frame that failed validation: if it still starts {call, Ref, ... with a whole Ref,
 * sets *ref and *ref_len to it and returns 0, so the error can go to the right caller.
 * (Its name is older than this file: test/c/test_term.c pins it under that name.) */
int term_find_call_ref(const char *buf, size_t len, const char **ref, int *ref_len);

#endif
