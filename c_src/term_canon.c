/*
 * term_canon.c: the canonical form of a term, so that two map keys the BEAM holds equal
 * (=:=) compare equal byte for byte (see term.h, term_canon_keys).
 *
 * binary_to_term refuses a map with two equal keys, and equal terms have many encodings:
 * 1 as SMALL_INTEGER, INTEGER or a bignum with leading zero bytes, an atom in any of its
 * four tags, "ab" as STRING_EXT or as a LIST_EXT of two integers, a binary as BINARY_EXT or
 * BIT_BINARY_EXT with 8 bits, a map's pairs in any order, -0.0 and 0.0 (equal on OTP 25).
 * The canonical form erases those differences; each piece starts with a type letter and is
 * self-delimiting. It is not kept: it is fed to a 128-bit hash seeded at random once per
 * process, and keys are equal when their digests are (a false match has probability 2^-128
 * per pair, and the seed keeps a sender from making one).
 *
 * A map is fed as its own digest, the sum of its pairs' digests (order does not matter), and
 * each map's digest is remembered by its offset for the rest of the frame: maps whose keys are
 * maps whose keys are maps... are read once, not once per level (without this, 120 levels
 * over a 40 MB binary took 393 s).
 *
 * Only ever run on a term term_check.c's walk has accepted: lengths are not checked again.
 */
#include "term.h"

#include "bigendian.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- the hash ------------------------------------------------------------------------------ */

struct canon {
    uint64_t a, b;
    struct term_canon_cache *cache;
};

static uint64_t seed_a, seed_b;

static void seed_once(void)
{
    if (seed_a | seed_b)
        return;
    uint64_t s[2] = {0, 0};
    if (getrandom(s, sizeof s, 0) != (ssize_t)sizeof s) {
        s[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&seed_a;
        s[1] = s[0] * 0x9E3779B97F4A7C15ULL;
    }
    seed_a = s[0] | 1;
    seed_b = s[1] | 2;
}

static void mix(struct canon *o, uint64_t x)
{
    o->a = (o->a ^ x) * 0x9E3779B97F4A7C15ULL;
    o->a ^= o->a >> 29;
    o->b = (o->b ^ (x + 0x632BE59BD9B4E019ULL)) * 0xC2B2AE3D27D4EB4FULL;
    o->b ^= o->b >> 31;
}

static void start(struct canon *o, struct term_canon_cache *cache)
{
    seed_once();
    o->a = seed_a;
    o->b = seed_b;
    o->cache = cache;
}

static int put(struct canon *o, const void *p, size_t n)
{
    const unsigned char *u = p;
    mix(o, n);
    for (; n >= 8; n -= 8, u += 8) {
        uint64_t w;
        memcpy(&w, u, 8);
        mix(o, w);
    }
    uint64_t tail = 0;
    memcpy(&tail, u, n);
    mix(o, tail);
    return 0;
}

/* ---- the digests of maps, by offset in the frame ------------------------------------------- */

struct slot {
    size_t key, end; /* key: the map's offset + 1 (0: an empty slot) */
    uint64_t a, b;
};

struct term_canon_cache {
    struct slot *slots;
    size_t cap, used;
};

static size_t first_slot(const struct term_canon_cache *c, size_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 7) & (c->cap - 1);
}

static struct slot *find(struct term_canon_cache *c, size_t pos)
{
    if (!c || !c->cap)
        return NULL;
    for (size_t i = first_slot(c, pos + 1);; i = (i + 1) & (c->cap - 1)) {
        if (c->slots[i].key == pos + 1)
            return &c->slots[i];
        if (c->slots[i].key == 0)
            return NULL;
    }
}

static int remember(struct term_canon_cache *c, size_t pos, size_t end, uint64_t a, uint64_t b)
{
    if (!c)
        return 0;
    if (2 * (c->used + 1) > c->cap) {
        struct term_canon_cache bigger = {calloc(c->cap ? 2 * c->cap : 64, sizeof(struct slot)),
                                          c->cap ? 2 * c->cap : 64, 0};
        if (!bigger.slots)
            return -1;
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i].key)
                remember(&bigger, c->slots[i].key - 1, c->slots[i].end, c->slots[i].a,
                         c->slots[i].b);
        free(c->slots);
        *c = bigger;
    }
    size_t i = first_slot(c, pos + 1);
    while (c->slots[i].key != 0)
        i = (i + 1) & (c->cap - 1);
    c->slots[i] = (struct slot){pos + 1, end, a, b};
    c->used++;
    return 0;
}

struct term_canon_cache *term_canon_cache_new(void)
{
    return calloc(1, sizeof(struct term_canon_cache));
}

void term_canon_cache_free(struct term_canon_cache *c)
{
    if (c)
        free(c->slots);
    free(c);
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
    unsigned char wide[2 * 255]; /* Latin-1 atoms hold at most 255 bytes (the walk checked) */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            wide[w++] = s[i];
        } else {
            wide[w++] = (unsigned char)(0xC0 | (s[i] >> 6));
            wide[w++] = (unsigned char)(0x80 | (s[i] & 0x3F));
        }
    }
    return put_tag_len(o, 'A', w) < 0 ? -1 : put(o, wide, w);
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

/* A map: its own digest, the sums of its pairs' digests (so order does not matter), fed to
 * the enclosing term and remembered by offset. */
static int put_map(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    size_t at = *pos;
    struct slot *known = find(o->cache, at);
    uint64_t sa = 0, sb = 0;
    if (known) {
        *pos = known->end;
        sa = known->a;
        sb = known->b;
    } else {
        uint32_t n = be32(p + *pos + 1);
        *pos += 5;
        for (uint32_t i = 0; i < n; i++) {
            struct canon pair;
            start(&pair, o->cache);
            if (canon(&pair, p, pos, depth + 1) < 0 || canon(&pair, p, pos, depth + 1) < 0)
                return -1;
            mix(&pair, 0);
            sa += pair.a;
            sb += pair.b;
        }
        if (remember(o->cache, at, *pos, sa, sb) < 0)
            return -1;
    }
    mix(o, 'M');
    mix(o, sa);
    mix(o, sb);
    return 0;
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
    case ERL_NEW_PID_EXT: /* fed in the same pieces as PID_EXT: the hash sees the pieces */
        *pos += 12;
        return put(o, f, 8) < 0 ? -1 : put(o, f + 8, 4);
    case ERL_PORT_EXT:
        *pos += 5;
        return put_be(o, be32(f), 8) < 0 ? -1 : put_be(o, f[4], 4);
    case ERL_NEW_PORT_EXT:
        *pos += 8;
        return put_be(o, be32(f), 8) < 0 ? -1 : put(o, f + 4, 4);
    case ERL_V4_PORT_EXT:
        *pos += 12;
        return put(o, f, 8) < 0 ? -1 : put(o, f + 8, 4);
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

/* Funs and exports: rare as keys. An export by its three terms; a fun by its fields. */
static int put_fun(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    if (p[*pos] == ERL_EXPORT_EXT) {
        *pos += 1;
        return put(o, "E", 1) < 0 || canon(o, p, pos, depth + 1) < 0 ||
                       canon(o, p, pos, depth + 1) < 0 ? -1 : canon(o, p, pos, depth + 1);
    }
    /* NEW_FUN_EXT: its Size is not checked by binary_to_term (nor by the walk), so never
     * trusted here: the fixed fields, then Module, OldIndex, OldUniq, Pid and the free
     * variables, each as a term. */
    uint32_t free_vars = be32(p + *pos + 26);
    *pos += 5;
    if (put(o, "X", 1) < 0 || put(o, p + *pos, 25) < 0)
        return -1;
    *pos += 25;
    for (uint64_t i = 0; i < 4 + (uint64_t)free_vars; i++)
        if (canon(o, p, pos, depth + 1) < 0)
            return -1;
    return 0;
}

/* An integer too big for INTEGER_EXT, as put_integer writes every integer. */
static int put_big(struct canon *o, const unsigned char *p, size_t *pos)
{
    int small = p[*pos] == ERL_SMALL_BIG_EXT;
    size_t n = small ? p[*pos + 1] : be32(p + *pos + 1);
    size_t head = small ? 2 : 5;
    int negative = p[*pos + head] != 0;
    const unsigned char *digits = p + *pos + head + 1;
    *pos += head + 1 + n;
    return put_integer(o, negative, digits, n);
}

/* A float, binary (NEW_FLOAT_EXT) or as the 31 characters of FLOAT_EXT's text. */
static int put_float_ext(struct canon *o, const unsigned char *p, size_t *pos)
{
    if (p[*pos] == NEW_FLOAT_EXT) {
        uint64_t bits = be64(p + *pos + 1);
        double d;
        memcpy(&d, &bits, 8);
        *pos += 9;
        return put_float(o, d);
    }
    char text[32];
    memcpy(text, p + *pos + 1, 31);
    text[31] = '\0';
    for (char *c = text; *c; c++)
        if (*c == ',')
            *c = '.';
    *pos += 32;
    return put_float(o, strtod(text, NULL));
}

static int put_tuple(struct canon *o, const unsigned char *p, size_t *pos, int depth)
{
    int small = p[*pos] == ERL_SMALL_TUPLE_EXT;
    uint32_t n = small ? p[*pos + 1] : be32(p + *pos + 1);
    *pos += small ? 2 : 5;
    if (put_tag_len(o, 'T', n) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (canon(o, p, pos, depth + 1) < 0)
            return -1;
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
    case ERL_LARGE_BIG_EXT:
        return put_big(o, p, pos);
    case NEW_FLOAT_EXT:
    case ERL_FLOAT_EXT:
        return put_float_ext(o, p, pos);
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
    case ERL_LARGE_TUPLE_EXT:
        return put_tuple(o, p, pos, depth);
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

struct digest {
    uint64_t a, b;
};

static int digest_cmp(const void *x, const void *y)
{
    const struct digest *d = x, *e = y;
    return d->a != e->a ? (d->a > e->a) - (d->a < e->a) : (d->b > e->b) - (d->b < e->b);
}

int term_canon_keys_unique(const unsigned char *buf, const size_t *keys, uint32_t n,
                           struct term_canon_cache *cache)
{
    if (n < 2)
        return 1;
    struct digest *d = malloc((size_t)n * sizeof *d);
    if (!d)
        return -1;
    int rc = 1;
    for (uint32_t i = 0; i < n && rc == 1; i++) {
        struct canon o;
        start(&o, cache);
        size_t pos = keys[i];
        if (canon(&o, buf, &pos, 0) < 0)
            rc = -1;
        mix(&o, 0);
        d[i] = (struct digest){o.a, o.b};
    }
    if (rc == 1) {
        qsort(d, n, sizeof *d, digest_cmp);
        for (uint32_t i = 1; i < n && rc == 1; i++)
            if (digest_cmp(&d[i - 1], &d[i]) == 0)
                rc = 0;
    }
    free(d);
    return rc;
}
