/*
 * term_canon.c: the canonical form of a term, so that two map keys the BEAM holds equal
 * (=:=) compare equal byte for byte (see term.h, term_canon_keys).
 *
 * binary_to_term refuses a map with two equal keys, and equal terms have many encodings:
 * 1 as SMALL_INTEGER, INTEGER or a bignum with leading zero bytes, an atom in any of its
 * four tags, "ab" as STRING_EXT or as a LIST_EXT of two integers, a binary as BINARY_EXT or
 * BIT_BINARY_EXT with 8 bits, a map's pairs in any order, -0.0 and 0.0 (equal on OTP 25).
 * The canonical form erases those differences; each piece starts with a type letter and is
 * self-delimiting, so a concatenation of canonical terms is unambiguous.
 *
 * Only ever run on a term term_check.c's walk has accepted: lengths are not checked again.
 */
#include "term.h"

#include "bigendian.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct canon {
    unsigned char *data;
    size_t len, cap;
};

static int put(struct canon *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n)
            cap *= 2;
        unsigned char *data = realloc(o->data, cap);
        if (!data)
            return -1;
        o->data = data;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return 0;
}

static int put_tag_len(struct canon *o, char tag, uint64_t n)
{
    unsigned char head[9] = {(unsigned char)tag};
    for (int i = 0; i < 8; i++)
        head[1 + i] = (unsigned char)(n >> (56 - 8 * i));
    return put(o, head, sizeof head);
}

/* An integer: sign and little-endian magnitude without high zero bytes (zero has no sign). */
static int put_integer(struct canon *o, int negative, const unsigned char *le, size_t n)
{
    while (n > 0 && le[n - 1] == 0)
        n--;
    unsigned char sign = n > 0 && negative;
    return put_tag_len(o, 'I', n) < 0 || put(o, &sign, 1) < 0 ? -1 : put(o, le, n);
}

static int put_small(struct canon *o, int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(m >> (8 * i));
    return put_integer(o, v < 0, le, 8);
}

/* Atoms: their characters as UTF-8, whatever the tag (Latin-1 bytes are widened). */
static int put_atom(struct canon *o, const unsigned char *p, size_t *pos)
{
    unsigned char tag = p[*pos];
    int small = tag == ERL_SMALL_ATOM_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT;
    size_t n = small ? p[*pos + 1] : be16(p + *pos + 1);
    const unsigned char *s = p + *pos + (small ? 2 : 3);
    *pos += (small ? 2 : 3) + n;
    if (tag == ERL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT)
        return put_tag_len(o, 'A', n) < 0 ? -1 : put(o, s, n);
    size_t wide = 0;
    for (size_t i = 0; i < n; i++)
        wide += s[i] < 0x80 ? 1 : 2;
    if (put_tag_len(o, 'A', wide) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char u[2] = {(unsigned char)(0xC0 | (s[i] >> 6)), (unsigned char)(0x80 | (s[i] & 0x3F))};
        if (s[i] < 0x80 ? put(o, s + i, 1) < 0 : put(o, u, 2) < 0)
            return -1;
    }
    return 0;
}

static int put_float(struct canon *o, double d)
{
    if (d == 0.0)
        d = 0.0; /* -0.0 =:= 0.0 on OTP 25 */
    unsigned char b[8];
    memcpy(b, &d, 8);
    return put(o, "F", 1) < 0 ? -1 : put(o, b, 8);
}

static int canon(struct canon *o, const unsigned char *p, size_t *pos, int depth);

/* A map: its pairs' canonical forms sorted, so that pair order does not matter. */
struct span {
    const unsigned char *at;
    size_t len;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->at, y->at, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The pieces of all (piece i ends at ends[i]) as spans, sorted; NULL if out of memory. */
static struct span *sorted_pieces(const struct canon *all, const size_t *ends, uint32_t n)
{
    struct span *spans = malloc(((size_t)n + 1) * sizeof *spans);
    if (!spans)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        size_t start = i ? ends[i - 1] : 0;
        spans[i] = (struct span){all->data + start, ends[i] - start};
    }
    qsort(spans, n, sizeof *spans, span_cmp);
    return spans;
}

static int put_map(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    uint32_t n = be32(p + *pos + 1);
    *pos += 5;
    struct canon pairs = {0};
    size_t *ends = malloc(((size_t)n + 1) * sizeof *ends);
    int rc = ends ? 0 : -1;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        rc = canon(&pairs, p, pos, depth + 1) < 0 || canon(&pairs, p, pos, depth + 1) < 0 ? -1 : 0;
        ends[i] = pairs.len;
    }
    struct span *spans = rc == 0 ? sorted_pieces(&pairs, ends, n) : NULL;
    rc = spans ? put_tag_len(o, 'M', n) : -1;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = put(o, spans[i].at, spans[i].len);
    free(pairs.data);
    free(ends);
    free(spans);
    return rc;
}

/* Lists: each cell 'C' then its head, then the tail; so "ab", [$a, $b] and [$a | "b"] agree. */
static int put_list(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    uint32_t n = be32(p + *pos + 1);
    *pos += 5;
    for (uint32_t i = 0; i < n; i++)
        if (put(o, "C", 1) < 0 || canon(o, p, pos, depth + 1) < 0)
            return -1;
    return canon(o, p, pos, depth + 1);
}

static int put_string(struct canon *o, const unsigned char *p, size_t *pos)
{
    size_t n = be16(p + *pos + 1);
    const unsigned char *s = p + *pos + 3;
    *pos += 3 + n;
    for (size_t i = 0; i < n; i++)
        if (put(o, "C", 1) < 0 || put_small(o, s[i]) < 0)
            return -1;
    return put(o, "N", 1);
}

/* Binaries and bitstrings: the bit length, then the bytes with unused bits cleared. */
static int put_bits(struct canon *o, const unsigned char *p, size_t *pos)
{
    int bitbin = p[*pos] == ERL_BIT_BINARY_EXT;
    size_t n = be32(p + *pos + 1);
    unsigned bits = bitbin ? p[*pos + 5] : 8;
    const unsigned char *data = p + *pos + (bitbin ? 6 : 5);
    *pos += (bitbin ? 6 : 5) + n;
    uint64_t total = n ? (uint64_t)(n - 1) * 8 + bits : 0;
    if (put_tag_len(o, 'B', total) < 0 || (n > 1 && put(o, data, n - 1) < 0))
        return -1;
    if (n == 0)
        return 0;
    unsigned char last = (unsigned char)(data[n - 1] & (0xFF << (8 - bits)));
    return put(o, &last, 1);
}

static int put_be(struct canon *o, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    return put(o, b, (size_t)bytes);
}

/* Pids, ports and references: a letter, the node, then the numbers at their widest (a pid
 * in PID_EXT equals the same pid in NEW_PID_EXT; the creation byte of the old formats is the
 * same number as a four-byte one). */
static int put_ident(struct canon *o, const unsigned char *p, size_t *pos)
{
    unsigned char tag = p[(*pos)++];
    size_t words = 0;
    if (tag == ERL_NEW_REFERENCE_EXT || tag == ERL_NEWER_REFERENCE_EXT) {
        words = be16(p + *pos);
        *pos += 2;
    }
    char letter = tag == ERL_PID_EXT || tag == ERL_NEW_PID_EXT ? 'P'
                : tag == ERL_PORT_EXT || tag == ERL_NEW_PORT_EXT || tag == ERL_V4_PORT_EXT ? 'O'
                : 'R';
    if (put(o, &letter, 1) < 0 || put_atom(o, p, pos) < 0)
        return -1;
    const unsigned char *f = p + *pos;
    switch (tag) {
    case ERL_PID_EXT:
        *pos += 9;
        return put(o, f, 8) < 0 ? -1 : put_be(o, f[8], 4);
    case ERL_NEW_PID_EXT:
        *pos += 12;
        return put(o, f, 12);
    case ERL_PORT_EXT:
        *pos += 5;
        return put_be(o, be32(f), 8) < 0 ? -1 : put_be(o, f[4], 4);
    case ERL_NEW_PORT_EXT:
        *pos += 8;
        return put_be(o, be32(f), 8) < 0 ? -1 : put(o, f + 4, 4);
    case ERL_V4_PORT_EXT:
        *pos += 12;
        return put(o, f, 12);
    case ERL_REFERENCE_EXT:
        *pos += 5;
        return put_be(o, f[4], 4) < 0 || put_be(o, 1, 2) < 0 ? -1 : put(o, f, 4);
    case ERL_NEW_REFERENCE_EXT:
        *pos += 1 + 4 * words;
        return put_be(o, f[0], 4) < 0 || put_be(o, words, 2) < 0 ? -1 : put(o, f + 1, 4 * words);
    default: /* NEWER_REFERENCE_EXT */
        *pos += 4 + 4 * words;
        return put(o, f, 4) < 0 || put_be(o, words, 2) < 0 ? -1 : put(o, f + 4, 4 * words);
    }
}

/* Funs and exports: rare as keys. An export by its three terms; a fun by its bytes. */
static int put_fun(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    if (p[*pos] == ERL_EXPORT_EXT) {
        *pos += 1;
        return put(o, "E", 1) < 0 || canon(o, p, pos, depth + 1) < 0 ||
                       canon(o, p, pos, depth + 1) < 0 ? -1 : canon(o, p, pos, depth + 1);
    }
    size_t n = be32(p + *pos + 1);
    *pos += 1;
    if (put_tag_len(o, 'X', n) < 0 || put(o, p + *pos, n) < 0)
        return -1;
    *pos += n;
    return 0;
}

static int canon(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    unsigned char tag = p[*pos];
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        *pos += 2;
        return put_small(o, p[*pos - 1]);
    case ERL_INTEGER_EXT:
        *pos += 5;
        return put_small(o, (int32_t)be32(p + *pos - 4));
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        int small = tag == ERL_SMALL_BIG_EXT;
        size_t n = small ? p[*pos + 1] : be32(p + *pos + 1);
        size_t head = small ? 2 : 5;
        int negative = p[*pos + head] != 0;
        const unsigned char *digits = p + *pos + head + 1;
        *pos += head + 1 + n;
        return put_integer(o, negative, digits, n);
    }
    case NEW_FLOAT_EXT: {
        uint64_t bits = be64(p + *pos + 1);
        double d;
        memcpy(&d, &bits, 8);
        *pos += 9;
        return put_float(o, d);
    }
    case ERL_FLOAT_EXT: {
        char text[32];
        memcpy(text, p + *pos + 1, 31);
        text[31] = '\0';
        for (char *c = text; *c; c++)
            if (*c == ',')
                *c = '.';
        *pos += 32;
        return put_float(o, strtod(text, NULL));
    }
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return put_atom(o, p, pos);
    case ERL_NIL_EXT:
        *pos += 1;
        return put(o, "N", 1);
    case ERL_STRING_EXT:
        return put_string(o, p, pos);
    case ERL_LIST_EXT:
        return put_list(o, p, pos, depth);
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        int small = tag == ERL_SMALL_TUPLE_EXT;
        uint32_t n = small ? p[*pos + 1] : be32(p + *pos + 1);
        *pos += small ? 2 : 5;
        if (put_tag_len(o, 'T', n) < 0)
            return -1;
        for (uint32_t i = 0; i < n; i++)
            if (canon(o, p, pos, depth + 1) < 0)
                return -1;
        return 0;
    }
    case ERL_MAP_EXT:
        return put_map(o, p, pos, depth);
    case ERL_BINARY_EXT:
    case ERL_BIT_BINARY_EXT:
        return put_bits(o, p, pos);
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT:
        return put_fun(o, p, pos, depth);
    default:
        return put_ident(o, p, pos);
    }
}

/* ---- duplicate keys --------------------------------------------------------------------- */

int term_canon_keys_unique(const unsigned char *buf, const size_t *keys, uint32_t n)
{
    if (n < 2)
        return 1;
    struct canon all = {0};
    size_t *ends = malloc((size_t)n * sizeof *ends);
    int rc = ends ? 1 : -1;
    for (uint32_t i = 0; i < n && rc == 1; i++) {
        size_t pos = keys[i];
        rc = canon(&all, buf, &pos, 0) < 0 ? -1 : 1;
        ends[i] = all.len;
    }
    struct span *spans = rc == 1 ? sorted_pieces(&all, ends, n) : NULL;
    if (!spans)
        rc = -1;
    for (uint32_t i = 1; i < n && rc == 1; i++)
        if (span_cmp(&spans[i - 1], &spans[i]) == 0)
            rc = 0;
    free(all.data);
    free(ends);
    free(spans);
    return rc;
}
