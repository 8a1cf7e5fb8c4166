/*
 * request.c: a request frame becomes a struct call (see request.h).
 *
 * In order: inflate (a compressed term, once only, as binary_to_term does), validate (term.c;
 * ei's decoders below trust what they read, so nothing reaches them unchecked), then parse
 * the call with ei, skipping whole terms with term_skip's bounds-checked walk.
 */
#include "request.h"

#include "bigendian.h"
#include "term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define COMPRESSED_TAG 80
#define VERSION_MAGIC 131

static enum request_outcome refuse(struct call *call, enum request_outcome outcome,
                                   const char *why)
{
    if (outcome == REQUEST_BAD_FRAME) { /* nothing to answer: the reply goes to undefined */
        call->ref = NULL;
        call->ref_len = 0;
    }
    snprintf(call->why, sizeof(call->why), "%s", why);
    return outcome;
}

/* ---- inflating ----------------------------------------------------------------------------- */

static int is_compressed(const char *frame, size_t len)
{
    return len >= 2 && (unsigned char)frame[0] == VERSION_MAGIC &&
           (unsigned char)frame[1] == COMPRESSED_TAG;
}

/* term_to_binary(T, [compressed]) is <<131, 80, Size:32, ZlibData>>. Inflates it into a plain
 * <<131, Term>> frame in *out (caller frees). Returns NULL, or why it cannot. The size the
 * sender claims is checked against the limit before anything is allocated. */
static const char *inflate_frame(const char *frame, size_t len, size_t limit, char **out,
                                 size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)frame;
    if (len < 6)
        return "truncated compressed term";
    uLongf size = be32(p + 2);
    if (size + 1 > limit)
        return "compressed term inflates past the frame limit";
    char *buf = malloc(size + 1);
    if (!buf)
        return "out of memory inflating a compressed term";
    buf[0] = (char)VERSION_MAGIC;
    uLongf got = size;
    if (uncompress((Bytef *)buf + 1, &got, p + 6, (uLong)(len - 6)) != Z_OK || got != size) {
        free(buf);
        return "compressed term does not inflate to its stated size";
    }
    *out = buf;
    *out_len = size + 1;
    return NULL;
}

/* ---- the Ref of a frame too deep to validate ------------------------------------------------- */

static int is_atom_tag(unsigned char tag)
{
    return tag == ERL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_EXT ||
           tag == ERL_SMALL_ATOM_UTF8_EXT;
}

int term_find_call_ref(const char *buf, size_t len, const char **ref, int *ref_len)
{
    const unsigned char *u = (const unsigned char *)buf;
    if (len < 4 || u[0] != VERSION_MAGIC || u[1] != ERL_SMALL_TUPLE_EXT ||
        (u[2] != 3 && u[2] != 4) || !is_atom_tag(u[3]))
        return -1;
    int index = 3;
    if (term_skip(buf, len, &index) < 0) /* the tag */
        return -1;
    int start = index;
    if (term_skip(buf, len, &index) < 0)
        return -1;
    *ref = buf + start;
    *ref_len = index - start;
    return 0;
}

/* ---- parsing the call ------------------------------------------------------------------------ */

static int decode_atom_name(const char *buf, int *index, char *name, size_t n)
{
    int type, size;
    if (ei_get_type(buf, index, &type, &size) < 0 || type != ERL_ATOM_EXT)
        return -1;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_atom_as(buf, index, atom, sizeof(atom), ERLANG_UTF8, NULL, NULL) < 0)
        return -1;
    if (strlen(atom) >= n)
        return -1;
    memcpy(name, atom, strlen(atom) + 1);
    return 0;
}

/* Reads timeout_ms from CallOpts (a map or a proplist); other keys are ignored. Returns -1
 * if timeout_ms is there but not a positive integer. */
static int parse_call_opts(const char *frame, size_t len, int index, struct call *call)
{
    int type, size, arity, is_map;
    ei_get_type(frame, &index, &type, &size);
    if (type == ERL_MAP_EXT) {
        ei_decode_map_header(frame, &index, &arity);
        is_map = 1;
    } else if (type == ERL_LIST_EXT) {
        ei_decode_list_header(frame, &index, &arity);
        is_map = 0;
    } else {
        return type == ERL_NIL_EXT ? 0 : -1;
    }
    for (int i = 0; i < arity; i++) {
        int pair_arity = 2, element = index;
        if (!is_map && (ei_decode_tuple_header(frame, &index, &pair_arity) < 0 || pair_arity != 2)) {
            index = element; /* not a {Key, Value}: skip the whole element */
            if (term_skip(frame, len, &index) < 0)
                return -1;
            continue;
        }
        char key[REQUEST_MAX_NAME];
        int key_index = index;
        int is_timeout = decode_atom_name(frame, &index, key, sizeof(key)) == 0 &&
                         strcmp(key, "timeout_ms") == 0;
        if (!is_timeout) {
            index = key_index;
            if (term_skip(frame, len, &index) < 0 || term_skip(frame, len, &index) < 0)
                return -1;
            continue;
        }
        long v;
        if (ei_decode_long(frame, &index, &v) < 0 || v <= 0)
            return -1;
        call->timeout_ms = v;
    }
    return 0;
}

/* Fills call from a validated frame. */
static enum request_outcome parse_call(const char *frame, size_t len, struct call *call)
{
    static const char not_a_call[] = "expected {call, Ref, Command} or {call, Ref, Command, Opts}";
    int index = 0, arity, version;
    char tag[8];
    if (ei_decode_version(frame, &index, &version) < 0 ||
        ei_decode_tuple_header(frame, &index, &arity) < 0 || (arity != 3 && arity != 4) ||
        decode_atom_name(frame, &index, tag, sizeof(tag)) < 0 || strcmp(tag, "call") != 0)
        return refuse(call, REQUEST_BAD_FRAME, not_a_call);
    call->ref = frame + index;
    if (term_skip(frame, len, &index) < 0)
        return refuse(call, REQUEST_BAD_FRAME, not_a_call);
    call->ref_len = (int)(frame + index - call->ref);

    /* Command: an atom, or a tuple whose first element is an atom. CallOpts (the fourth
     * element) is parsed last: timeout_ms; other keys are left for later protocol versions. */
    int cmd_index = index, cmd_arity;
    const char *not_a_command = "a command is an atom or a tuple starting with one";
    if (ei_decode_tuple_header(frame, &index, &cmd_arity) == 0) {
        if (cmd_arity < 1)
            return refuse(call, REQUEST_NOT_A_COMMAND, not_a_command);
        call->n_args = cmd_arity - 1;
    } else {
        index = cmd_index;
        call->n_args = 0;
    }
    if (decode_atom_name(frame, &index, call->name, sizeof(call->name)) < 0)
        return refuse(call, REQUEST_NOT_A_COMMAND, not_a_command);
    call->args_index = index;
    if (arity == 4) {
        index = cmd_index;
        if (term_skip(frame, len, &index) < 0 || parse_call_opts(frame, len, index, call) < 0)
            return refuse(call, REQUEST_BAD_CALL_OPTS,
                          "CallOpts must be a map or a proplist, and timeout_ms in it a "
                          "positive integer");
    }
    return REQUEST_CALL;
}

enum request_outcome request_parse(const char *frame, size_t len, size_t limit,
                                   struct call *call)
{
    memset(call, 0, sizeof(*call));
    if (is_compressed(frame, len)) {
        const char *why = inflate_frame(frame, len, limit, &call->inflated, &len);
        if (why)
            return refuse(call, REQUEST_BAD_FRAME, why);
        frame = call->inflated; /* a compressed term inside it is a bad frame */
    }
    call->frame = frame;
    call->len = len;
    struct term_error err = {0};
    if (term_validate(frame, len, &err) < 0) {
        /* Too deep is the caller's mistake, not a broken frame: answer its Ref if we can. */
        if (strcmp(err.kind, "badarg") == 0 &&
            term_find_call_ref(frame, len, &call->ref, &call->ref_len) == 0)
            return refuse(call, REQUEST_TOO_DEEP, err.message);
        return refuse(call, REQUEST_BAD_FRAME, err.message);
    }
    return parse_call(frame, len, call);
}

void request_release(struct call *call)
{
    free(call->inflated);
    call->inflated = NULL;
}
