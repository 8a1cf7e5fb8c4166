/*
 * term.h: the type mapping between Erlang terms and Python objects.
 *
 * This is the one place where a term becomes a Python object and a Python object becomes a
 * term. docs/PROTOCOL.md carries the same table; change both together. A pure codec: it knows
 * terms, not the protocol's messages (request.c reads those). term_check.c holds the
 * bounds-checked walk (term_validate, term_skip), term.c the decoder, encoder and Atom type.
 */
#ifndef URO_TERM_H
#define URO_TERM_H

#include "pytypes.h"

#include <ei.h>
#include <stddef.h>
#include <stdint.h>

/* Terms nested deeper than this are refused in both directions (never a stack overflow). */
#define TERM_MAX_DEPTH 256

/* Why a conversion failed: a kind the port replies with, and a message naming the place. */
struct term_error {
    const char *kind; /* "bad_frame", "badarg" or "internal" */
    char message[256];
};

/* Sets err to kind and the printf-style message; returns -1. */
int term_fail(struct term_error *err, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks that buf[0..len) starts with one external-format term (version byte included) that
 * binary_to_term would accept (term_check.c says what that excludes), with every length
 * inside the buffer and nesting within TERM_MAX_DEPTH; bytes after the term are ignored, as
 * binary_to_term ignores them. ei's decoders trust their
 * input, so every frame passes here before any of them sees it. Returns 0 or -1 (err set). */
int term_validate(const char *buf, size_t len, struct term_error *err);

/* Skips the term at *index of buf[0..len) with the validator's bounds-checked walk (never
 * ei_skip_term, which parses the insides of funs without checking them). -1 if malformed. */
int term_skip(const char *buf, size_t len, int *index);

/* 1 if no two of the n keys at buf + keys[i] (terms of a validated buffer) are equal as the
 * BEAM compares map keys, 0 if two are, -1 if out of memory (term_canon.c). cache holds the
 * digests of the buffer's maps met so far (one per walk: term_canon_cache_new, _free). */
struct term_canon_cache;
struct term_canon_cache *term_canon_cache_new(void);
void term_canon_cache_free(struct term_canon_cache *cache);
int term_canon_keys_unique(const unsigned char *buf, const size_t *keys, uint32_t n,
                           struct term_canon_cache *cache);

/* Decodes the term at *index of a validated buffer into a new reference; NULL with err set
 * (kind "badarg") for terms Python cannot hold: pids, ports, references, funs, improper lists,
 * bitstrings that are not whole bytes, unhashable map keys. */
PyObject *term_to_py(const char *buf, int *index, struct term_error *err);

/* Appends the term for obj to x. -1 with err set (kind "internal") for an object outside the
 * mapping; x may then hold a partial term: callers rewind x->index. */
int py_to_term(ei_x_buff *x, PyObject *obj, struct term_error *err);

/* The Atom type (a str subclass): Python code returns Atom("ok") to mean the atom ok. */
PyObject *term_atom_type(void);
int term_module_init(PyObject *module); /* adds Atom to the _uro_port module */
PyObject *term_make_atom(const char *utf8, Py_ssize_t len);

#endif
