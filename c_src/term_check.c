/*
 * term_check.c: the bounds-checked walk over external term format (see term.h): term_validate
 * and term_skip.
 *
 * ei's decoders check no lengths, so every frame is walked here first: every length inside
 * the buffer, every element count plausible, nesting within TERM_MAX_DEPTH (never a stack
 * overflow). The decoder (term.c) then only ever reads a term this walk accepted.
 *
 * The walk also refuses what the BEAM's binary_to_term refuses (OTP 25, measured on it:
 * docs/PROTOCOL.md has the list), because the Ref of a frame goes back to the client byte for
 * byte, and a reply the client cannot decode crashes it: atoms that are not UTF-8 or longer
 * than 255 characters, NaN and infinities, malformed FLOAT_EXT text, bitstrings with a bit
 * count out of range, bignums past the BEAM's size, identifiers with numbers out of range,
 * maps with two equal keys (term_canon.c), funs and exports with fields of the wrong type.
 * Trailing bytes after the term are
 * ignored, as binary_to_term ignores them. What binary_to_term reads and the port refuses:
 * erts's internal atom-index tags (below), and a local NEWER_REFERENCE_EXT without words,
 * which the BEAM reads in one position and refuses in others.
 */
#include "term.h"

#include "bigendian.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VERSION_MAGIC 131

/* The BEAM's limits (OTP 25): characters in an atom, bytes in a bignum (BIG_ARITY_MAX
 * digits of 8 bytes), words in a reference, and the number fields of the local node's
 * identifiers (erts's ERTS_MAX_PID_NUMBER and friends). */
/* Two tags of erts's own internal format that binary_to_term also reads: an atom given as a
 * 2- or 3-byte index into the reading node's atom table. No encoder of the external format
 * writes them and the port cannot resolve them: the one documented disagreement. */
#define ATOM_INTERNAL_REF2 'I'
#define ATOM_INTERNAL_REF3 'K'

#define MAX_ATOM_CHARS 255
#define MAX_BIG_BYTES (((1u << 19) - 1) * 8)
#define MAX_REF_WORDS 5
#define MAX_LOCAL_REF_WORDS 3
#define REF_FIRST_WORD_LIMIT (1u << 18)
#define PID_NUMBER_LIMIT (1u << 15)
#define PID_SERIAL_LIMIT (1u << 13)
#define PORT_NUMBER_LIMIT (1u << 28)

struct cursor {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    struct term_error *err;
    struct term_canon_cache *cache; /* digests of maps, made when a map has 2 keys or more */
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

static int internal_atom_index(struct cursor *c, unsigned char tag, size_t at)
{
    return term_fail(c->err, "bad_frame", "erts-internal atom index (tag %u) at byte %zu: an "
                     "index into the sender's atom table, which the port cannot read", tag, at);
}

/* Strict UTF-8 as erts reads atoms: no overlong forms, no surrogates, nothing past
 * U+10FFFF. Returns the number of characters, or -1. */
static long utf8_chars(const unsigned char *s, size_t n)
{
    long chars = 0;
    for (size_t i = 0; i < n; chars++) {
        unsigned char b = s[i];
        size_t k = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || n - i < k)
            return -1;
        uint32_t cp = k == 1 ? b : (uint32_t)(b & (0x7F >> k));
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        i += k;
    }
    return chars;
}

/* An atom; *name and *name_len (when asked) point at its bytes. */
static int validate_atom_named(struct cursor *c, const unsigned char **name, size_t *name_len)
{
    if (need(c, 1) < 0)
        return -1;
    size_t at = c->pos;
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
    case ATOM_INTERNAL_REF2:
    case ATOM_INTERNAL_REF3:
        return internal_atom_index(c, tag, at);
    default:
        return term_fail(c->err, "bad_frame", "expected an atom at byte %zu, found tag %u", at,
                         tag);
    }
    if (need(c, n) < 0)
        return -1;
    const unsigned char *s = c->buf + c->pos;
    int utf8 = tag == ERL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT;
    long chars = utf8 ? utf8_chars(s, n) : (long)n; /* Latin-1: any byte is a character */
    if (chars < 0)
        return term_fail(c->err, "bad_frame", "atom at byte %zu is not valid UTF-8", at);
    if (chars > MAX_ATOM_CHARS)
        return term_fail(c->err, "bad_frame", "atom at byte %zu has more than %d characters",
                         at, MAX_ATOM_CHARS);
    if (name) {
        *name = s;
        *name_len = n;
    }
    c->pos += n;
    return 0;
}

static int validate_atom(struct cursor *c)
{
    return validate_atom_named(c, NULL, NULL);
}

/* Pids, ports and references: a node atom and number fields. The BEAM checks the numbers of
 * its own node's identifiers only; a port cannot know a distributed client's node name, so
 * "its own" is nonode@nohost with creation 0, the node of a BEAM that is not distributed. */
struct ident {
    unsigned char tag;
    int old_creation; /* a one-byte creation field (PID_EXT, PORT_EXT, REFERENCE_EXT...) */
    size_t fixed;     /* bytes after the node (for references: before the words) */
};

static const struct ident idents[] = {
    {ERL_PID_EXT, 1, 4 + 4 + 1},
    {ERL_NEW_PID_EXT, 0, 4 + 4 + 4},
    {ERL_PORT_EXT, 1, 4 + 1},
    {ERL_NEW_PORT_EXT, 0, 4 + 4},
    {ERL_V4_PORT_EXT, 0, 8 + 4},
    {ERL_REFERENCE_EXT, 1, 4 + 1},
    {ERL_NEW_REFERENCE_EXT, 1, 1},
    {ERL_NEWER_REFERENCE_EXT, 0, 4},
};

static int bad_ident(struct cursor *c, size_t at, const char *what)
{
    return term_fail(c->err, "bad_frame", "identifier at byte %zu: %s", at, what);
}

/* The number fields at f (after the node) of an identifier of tag, local or not. */
static int check_ident_numbers(struct cursor *c, size_t at, unsigned char tag,
                               const unsigned char *f, size_t words, int local)
{
    switch (tag) {
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
        if (local && (be32(f) >= PID_NUMBER_LIMIT || be32(f + 4) >= PID_SERIAL_LIMIT))
            return bad_ident(c, at, "pid number out of range");
        return 0;
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
        if (local && be32(f) >= PORT_NUMBER_LIMIT)
            return bad_ident(c, at, "port number out of range");
        return 0;
    case ERL_V4_PORT_EXT:
        if (local && be64(f) >= PORT_NUMBER_LIMIT)
            return bad_ident(c, at, "port number out of range");
        return 0;
    case ERL_REFERENCE_EXT:
        if (be32(f) >= REF_FIRST_WORD_LIMIT)
            return bad_ident(c, at, "reference number out of range");
        return 0;
    default: { /* NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT: the words after the creation */
        const unsigned char *w = f + (tag == ERL_NEW_REFERENCE_EXT ? 1 : 4);
        int always = tag == ERL_NEW_REFERENCE_EXT;
        if (words > MAX_REF_WORDS || (local && words > MAX_LOCAL_REF_WORDS))
            return bad_ident(c, at, "reference with a word count out of range");
        /* binary_to_term reads this one as the last element of a tuple and refuses it
         * elsewhere, so an echo of it in a reply's Ref could not be read: refused. */
        if (local && !always && words == 0)
            return bad_ident(c, at, "local reference without words");
        if (words > 0 && (always || local) && be32(w) >= REF_FIRST_WORD_LIMIT)
            return bad_ident(c, at, "reference number out of range");
        return 0;
    }
    }
}

static int validate_identifier(struct cursor *c, unsigned char tag)
{
    size_t at = c->pos - 1, words = 0;
    const struct ident *id = NULL;
    for (size_t i = 0; i < sizeof idents / sizeof idents[0]; i++)
        if (idents[i].tag == tag)
            id = &idents[i];
    if (tag == ERL_NEWER_REFERENCE_EXT || tag == ERL_NEW_REFERENCE_EXT) {
        if (need(c, 2) < 0)
            return -1;
        words = be16(c->buf + c->pos);
        c->pos += 2;
        if (words > MAX_REF_WORDS)
            return bad_ident(c, at, "reference with more than 5 words");
    }
    const unsigned char *node;
    size_t node_len;
    if (validate_atom_named(c, &node, &node_len) < 0 || need(c, id->fixed + 4 * words) < 0)
        return -1;
    const unsigned char *f = c->buf + c->pos;
    size_t creation_at = tag == ERL_NEW_REFERENCE_EXT || tag == ERL_NEWER_REFERENCE_EXT
                             ? 0 : id->fixed - (id->old_creation ? 1 : 4);
    uint32_t creation = id->old_creation ? f[creation_at] : be32(f + creation_at);
    if (id->old_creation && creation > 3)
        return bad_ident(c, at, "creation out of range");
    int local = creation == 0 && node_len == 13 && memcmp(node, "nonode@nohost", 13) == 0;
    if (check_ident_numbers(c, at, tag, f, words, local) < 0)
        return -1;
    c->pos += id->fixed + 4 * words;
    return 0;
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

/* A tuple or list: a counted run of terms. */
static int validate_container(struct cursor *c, int width, size_t head, int depth)
{
    uint32_t n;
    if (counted(c, width, head, &n) < 0)
        return -1;
    return validate_elements(c, n, depth);
}

/* A map: its pairs, then no two keys equal (term_canon.c), as binary_to_term demands. */
static int validate_map(struct cursor *c, int depth)
{
    size_t at = c->pos;
    uint32_t n;
    if (counted(c, 4, 5, &n) < 0)
        return -1;
    if ((uint64_t)2 * n > c->len - c->pos)
        return term_fail(c->err, "bad_frame", "element count %llu exceeds the frame at byte %zu",
                         (unsigned long long)2 * n, c->pos);
    size_t *keys = n > 1 ? malloc((size_t)n * sizeof *keys) : NULL;
    if (n > 1 && !keys)
        return term_fail(c->err, "internal", "out of memory checking a map of %u pairs", n);
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (keys)
            keys[i] = c->pos;
        rc = validate_term(c, depth + 1) < 0 || validate_term(c, depth + 1) < 0 ? -1 : 0;
    }
    if (rc == 0 && keys && !c->cache && !(c->cache = term_canon_cache_new()))
        rc = term_fail(c->err, "internal", "out of memory checking a map of %u pairs", n);
    if (rc == 0 && keys) {
        int unique = term_canon_keys_unique(c->buf, keys, n, c->cache);
        if (unique < 0)
            rc = term_fail(c->err, "internal", "out of memory checking a map of %u pairs", n);
        else if (!unique)
            rc = term_fail(c->err, "bad_frame", "map at byte %zu has two equal keys", at);
    }
    free(keys);
    return rc;
}

/* An integer term (for a fun's fields and an export's arity); *negative says its sign. */
static int validate_integer(struct cursor *c, int *negative)
{
    if (need(c, 1) < 0)
        return -1;
    size_t at = c->pos;
    unsigned char tag = c->buf[at];
    if (tag != ERL_SMALL_INTEGER_EXT && tag != ERL_INTEGER_EXT && tag != ERL_SMALL_BIG_EXT &&
        tag != ERL_LARGE_BIG_EXT)
        return term_fail(c->err, "bad_frame", "expected an integer at byte %zu", at);
    if (validate_term(c, 0) < 0)
        return -1;
    *negative = tag == ERL_INTEGER_EXT ? (c->buf[at + 1] & 0x80) != 0
              : tag == ERL_SMALL_INTEGER_EXT ? 0
              : c->buf[at + (tag == ERL_SMALL_BIG_EXT ? 2 : 5)] != 0;
    return 0;
}

/* NEW_FUN_EXT: Size, Arity, Uniq (16 bytes), Index, NumFree, Module (an atom), OldIndex and
 * OldUniq (integers), Pid, then NumFree terms. As binary_to_term reads it (OTP 25, measured):
 * Size is not checked at all and the Pid slot may hold any term, so the walk goes by the
 * fields, never by Size. */
static int validate_fun(struct cursor *c, int depth)
{
    if (need(c, 1 + 4 + 1 + 16 + 4 + 4) < 0)
        return -1;
    uint32_t free_vars = be32(c->buf + c->pos + 26);
    c->pos += 30;
    int negative;
    if (validate_atom(c) < 0 || validate_integer(c, &negative) < 0 ||
        validate_integer(c, &negative) < 0 || validate_term(c, depth + 1) < 0)
        return -1;
    return validate_elements(c, free_vars, depth);
}

/* EXPORT_EXT: Module and Function atoms, then an arity that is a non-negative integer. */
static int validate_export(struct cursor *c)
{
    size_t at = c->pos++;
    int negative;
    if (validate_atom(c) < 0 || validate_atom(c) < 0 || validate_integer(c, &negative) < 0)
        return -1;
    if (negative)
        return term_fail(c->err, "bad_frame", "export at byte %zu with a negative arity", at);
    return 0;
}

/* Steps over [0-9]+ at p; NULL if there is no digit. */
static char *digits(char *p)
{
    char *start = p;
    while (*p >= '0' && *p <= '9')
        p++;
    return p > start ? p : NULL;
}

/* FLOAT_EXT: 31 bytes of text, read as erts's sys_chars_to_double reads it: up to a NUL
 * (which must come), [+-]digits[.,]digits([eE][+-]digits)?, and finite. */
static int float_text_ok(const unsigned char *field)
{
    char text[32];
    memcpy(text, field, 31);
    text[31] = '\0';
    if (!memchr(field, 0, 31))
        return 0;
    char *p = text + (text[0] == '+' || text[0] == '-');
    if (!(p = digits(p)) || (*p != '.' && *p != ','))
        return 0;
    *p = '.'; /* erts takes either radix character */
    if (!(p = digits(p + 1)))
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        if (!(p = digits(p)))
            return 0;
    }
    return *p == '\0' && isfinite(strtod(text, NULL));
}

static int validate_float_text(struct cursor *c)
{
    if (need(c, 32) < 0)
        return -1;
    if (!float_text_ok(c->buf + c->pos + 1))
        return term_fail(c->err, "bad_frame", "float at byte %zu is not a finite number", c->pos);
    c->pos += 32;
    return 0;
}

/* NEW_FLOAT_EXT: eight bytes of an IEEE double; the BEAM has no NaN or infinities. */
static int validate_new_float(struct cursor *c)
{
    if (need(c, 9) < 0)
        return -1;
    if (((be16(c->buf + c->pos + 1) >> 4) & 0x7FF) == 0x7FF)
        return term_fail(c->err, "bad_frame", "float at byte %zu is NaN or infinite", c->pos);
    c->pos += 9;
    return 0;
}

/* BIT_BINARY_EXT: Len, Bits, Data; Bits in 1..8 unless Len is 0, and then Bits is 0. */
static int validate_bit_binary(struct cursor *c)
{
    size_t at = c->pos;
    if (need(c, 6) < 0)
        return -1;
    uint32_t n = be32(c->buf + at + 1);
    unsigned bits = c->buf[at + 5];
    if ((bits == 0) != (n == 0) || bits > 8)
        return term_fail(c->err, "bad_frame", "bitstring at byte %zu with %u bits in its last byte",
                         at, bits);
    return take_counted(c, 4, 6);
}

/* SMALL_BIG_EXT / LARGE_BIG_EXT: the BEAM takes at most MAX_BIG_BYTES (leading zeros count). */
static int validate_big(struct cursor *c, int width)
{
    size_t at = c->pos;
    uint32_t n;
    if (counted(c, width, (size_t)width + 2, &n) < 0)
        return -1;
    if (n > MAX_BIG_BYTES)
        return term_fail(c->err, "bad_frame", "integer at byte %zu has %u bytes, more than the "
                         "BEAM takes", at, n);
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
    case ERL_FLOAT_EXT:         return validate_float_text(c);
    case NEW_FLOAT_EXT:         return validate_new_float(c);
    case ERL_NIL_EXT:           return take(c, 1);
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return validate_atom(c);
    case ERL_SMALL_TUPLE_EXT:   return validate_container(c, 1, 2, depth);
    case ERL_LARGE_TUPLE_EXT:   return validate_container(c, 4, 5, depth);
    case ERL_MAP_EXT:           return validate_map(c, depth);
    case ERL_LIST_EXT:
        if (validate_container(c, 4, 5, depth) < 0)
            return -1;
        return validate_term(c, depth + 1); /* the tail */
    case ERL_STRING_EXT:        return take_counted(c, 2, 3);
    case ERL_BINARY_EXT:        return take_counted(c, 4, 5);
    case ERL_BIT_BINARY_EXT:    return validate_bit_binary(c);
    case ERL_SMALL_BIG_EXT:     return validate_big(c, 1);
    case ERL_LARGE_BIG_EXT:     return validate_big(c, 4);
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
    case ERL_NEW_FUN_EXT:       return validate_fun(c, depth);
    case ERL_EXPORT_EXT:        return validate_export(c);
    case ATOM_INTERNAL_REF2:
    case ATOM_INTERNAL_REF3:
        return internal_atom_index(c, tag, c->pos);
    default:
        return term_fail(c->err, "bad_frame", "unsupported term tag %u at byte %zu", tag, c->pos);
    }
}

int term_validate(const char *buf, size_t len, struct term_error *err)
{
    struct cursor c = {(const unsigned char *)buf, len, 0, err, NULL};
    if (len < 1 || c.buf[0] != VERSION_MAGIC)
        return term_fail(err, "bad_frame", "frame does not start with version byte 131");
    c.pos = 1;
    int rc = validate_term(&c, 0); /* bytes after the term are ignored, as binary_to_term does */
    term_canon_cache_free(c.cache);
    return rc;
}

int term_skip(const char *buf, size_t len, int *index)
{
    struct term_error ignored;
    struct cursor c = {(const unsigned char *)buf, len, (size_t)*index, &ignored, NULL};
    int rc = *index < 0 || (size_t)*index > len || validate_term(&c, 0) < 0 ? -1 : 0;
    term_canon_cache_free(c.cache);
    if (rc == 0)
        *index = (int)c.pos;
    return rc;
}
