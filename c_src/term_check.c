/*
 * term_check.c: the bounds-checked walk over external term format (see term.h): term_validate
 * and term_skip.
 *
 * ei's decoders check no lengths, so every frame is walked here first: every length inside
 * the buffer, every element count plausible, nesting within TERM_MAX_DEPTH (never a stack
 * overflow). The decoder (term.c) then only ever reads a term this walk accepted.
 */
#include "term.h"

#include "bigendian.h"

#include <stdint.h>

#define VERSION_MAGIC 131

struct cursor {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    struct term_error *err;
};

static int need(struct cursor *c, size_t n)
{
    if (c->len - c->pos < n)
        return term_fail(c->err, "bad_frame", "truncated term at byte %zu", c->pos);
    return 0;
}

static int take(struct cursor *c, size_t n)
{
    if (need(c, n) < 0)
        return -1;
    c->pos += n;
    return 0;
}

/* A tag with a count of width 1, 2 or 4 bytes right after it, and head bytes in all before
 * what is counted: reads the count into *n and steps over the head. */
static int counted(struct cursor *c, int width, size_t head, uint32_t *n)
{
    if (need(c, head) < 0)
        return -1;
    const unsigned char *at = c->buf + c->pos + 1;
    *n = width == 1 ? at[0] : width == 2 ? be16(at) : be32(at);
    c->pos += head;
    return 0;
}

/* A counted run of bytes: strings, binaries, bignums. */
static int take_counted(struct cursor *c, int width, size_t head)
{
    uint32_t n;
    return counted(c, width, head, &n) < 0 ? -1 : take(c, n);
}

static int validate_term(struct cursor *c, int depth);

static int validate_atom(struct cursor *c)
{
    if (need(c, 1) < 0)
        return -1;
    unsigned char tag = c->buf[c->pos++];
    size_t n;
    switch (tag) {
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
        if (need(c, 2) < 0)
            return -1;
        n = be16(c->buf + c->pos);
        c->pos += 2;
        break;
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        if (need(c, 1) < 0)
            return -1;
        n = c->buf[c->pos++];
        break;
    default:
        return term_fail(c->err, "bad_frame", "expected an atom at byte %zu, found tag %u",
                         c->pos - 1, tag);
    }
    if (n > 255 * 4)
        return term_fail(c->err, "bad_frame", "atom too long at byte %zu", c->pos);
    return take(c, n);
}

/* Pids, ports and references: a node atom and fixed-size fields. */
static int validate_identifier(struct cursor *c, unsigned char tag)
{
    if (tag == ERL_NEWER_REFERENCE_EXT || tag == ERL_NEW_REFERENCE_EXT) {
        if (need(c, 2) < 0)
            return -1;
        size_t words = be16(c->buf + c->pos);
        c->pos += 2;
        if (words > 5)
            return term_fail(c->err, "bad_frame", "reference with %zu words", words);
        if (validate_atom(c) < 0)
            return -1;
        return take(c, (tag == ERL_NEWER_REFERENCE_EXT ? 4 : 1) + 4 * words);
    }
    if (validate_atom(c) < 0)
        return -1;
    switch (tag) {
    case ERL_PID_EXT:        return take(c, 4 + 4 + 1);
    case ERL_NEW_PID_EXT:    return take(c, 4 + 4 + 4);
    case ERL_PORT_EXT:       return take(c, 4 + 1);
    case ERL_NEW_PORT_EXT:   return take(c, 4 + 4);
    case ERL_V4_PORT_EXT:    return take(c, 8 + 4);
    case ERL_REFERENCE_EXT:  return take(c, 4 + 1);
    }
    return -1;
}

static int validate_elements(struct cursor *c, uint64_t n, int depth)
{
    /* Every element takes at least one byte: a cheap check against lying counts. */
    if (n > c->len - c->pos)
        return term_fail(c->err, "bad_frame", "element count %llu exceeds the frame at byte %zu",
                         (unsigned long long)n, c->pos);
    for (uint64_t i = 0; i < n; i++)
        if (validate_term(c, depth + 1) < 0)
            return -1;
    return 0;
}

/* A tuple, map or list: a counted run of terms (a map counts pairs). */
static int validate_container(struct cursor *c, int width, size_t head, int per, int depth)
{
    uint32_t n;
    if (counted(c, width, head, &n) < 0)
        return -1;
    return validate_elements(c, (uint64_t)per * n, depth);
}

/* NEW_FUN_EXT: its size counts itself and everything after the tag. */
static int validate_fun(struct cursor *c)
{
    if (need(c, 5) < 0)
        return -1;
    uint32_t n = be32(c->buf + c->pos + 1);
    if (n < 4)
        return term_fail(c->err, "bad_frame", "fun with size %u", n);
    c->pos += 1;
    return take(c, n);
}

/* One case per tag: the lengths of each term type, as the external format defines them. */
static int validate_term(struct cursor *c, int depth)
{
    if (depth > TERM_MAX_DEPTH)
        return term_fail(c->err, "badarg", "term nested deeper than %d levels", TERM_MAX_DEPTH);
    if (need(c, 1) < 0)
        return -1;
    unsigned char tag = c->buf[c->pos];
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT: return take(c, 2);
    case ERL_INTEGER_EXT:       return take(c, 5);
    case ERL_FLOAT_EXT:         return take(c, 32);
    case NEW_FLOAT_EXT:         return take(c, 9);
    case ERL_NIL_EXT:           return take(c, 1);
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return validate_atom(c);
    case ERL_SMALL_TUPLE_EXT:   return validate_container(c, 1, 2, 1, depth);
    case ERL_LARGE_TUPLE_EXT:   return validate_container(c, 4, 5, 1, depth);
    case ERL_MAP_EXT:           return validate_container(c, 4, 5, 2, depth);
    case ERL_LIST_EXT:
        if (validate_container(c, 4, 5, 1, depth) < 0)
            return -1;
        return validate_term(c, depth + 1); /* the tail */
    case ERL_STRING_EXT:        return take_counted(c, 2, 3);
    case ERL_BINARY_EXT:        return take_counted(c, 4, 5);
    case ERL_BIT_BINARY_EXT:    return take_counted(c, 4, 6); /* then the bits of the last byte */
    case ERL_SMALL_BIG_EXT:     return take_counted(c, 1, 3); /* then the sign */
    case ERL_LARGE_BIG_EXT:     return take_counted(c, 4, 6);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT:
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
        c->pos++;
        return validate_identifier(c, tag);
    case ERL_NEW_FUN_EXT:       return validate_fun(c);
    case ERL_EXPORT_EXT:
        c->pos++;
        if (validate_atom(c) < 0 || validate_atom(c) < 0)
            return -1;
        return validate_term(c, depth + 1);
    default:
        return term_fail(c->err, "bad_frame", "unsupported term tag %u at byte %zu", tag, c->pos);
    }
}

int term_validate(const char *buf, size_t len, struct term_error *err)
{
    struct cursor c = {(const unsigned char *)buf, len, 0, err};
    if (len < 1 || c.buf[0] != VERSION_MAGIC)
        return term_fail(err, "bad_frame", "frame does not start with version byte 131");
    c.pos = 1;
    if (validate_term(&c, 0) < 0)
        return -1;
    if (c.pos != len)
        return term_fail(err, "bad_frame", "%zu trailing bytes after the term", len - c.pos);
    return 0;
}

int term_skip(const char *buf, size_t len, int *index)
{
    struct term_error ignored;
    struct cursor c = {(const unsigned char *)buf, len, (size_t)*index, &ignored};
    if (*index < 0 || (size_t)*index > len || validate_term(&c, 0) < 0)
        return -1;
    *index = (int)c.pos;
    return 0;
}
