/*
 * term.c: Erlang external term format <-> Python objects (see term.h and docs/PROTOCOL.md).
 *
 * Three parts, in order: a validator that walks a frame with bounds checks (ei's decoders do
 * none, so nothing reaches them unchecked); the decoder, term -> PyObject; the encoder,
 * PyObject -> term into an ei_x_buff. Recursion is bounded by TERM_MAX_DEPTH on both sides.
 *
 * Integers beyond 64 bits are read and written here byte by byte (SMALL_BIG_EXT and
 * LARGE_BIG_EXT are little-endian magnitudes) because ei's bignum support needs GMP.
 */
#include "term.h"

#include "bigendian.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define VERSION_MAGIC 131

static PyObject *atom_type;

static int fail(struct term_error *err, const char *kind, const char *fmt, ...)
{
    va_list ap;
    err->kind = kind;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Validation                                                                                 */
/* ---------------------------------------------------------------------------------------- */

struct cursor {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    struct term_error *err;
};

static int need(struct cursor *c, size_t n)
{
    if (c->len - c->pos < n)
        return fail(c->err, "bad_frame", "truncated term at byte %zu", c->pos);
    return 0;
}

static int take(struct cursor *c, size_t n)
{
    if (need(c, n) < 0)
        return -1;
    c->pos += n;
    return 0;
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
        return fail(c->err, "bad_frame", "expected an atom at byte %zu, found tag %u",
                    c->pos - 1, tag);
    }
    if (n > 255 * 4)
        return fail(c->err, "bad_frame", "atom too long at byte %zu", c->pos);
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
            return fail(c->err, "bad_frame", "reference with %zu words", words);
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
        return fail(c->err, "bad_frame", "element count %llu exceeds the frame at byte %zu",
                    (unsigned long long)n, c->pos);
    for (uint64_t i = 0; i < n; i++)
        if (validate_term(c, depth + 1) < 0)
            return -1;
    return 0;
}

static int validate_term(struct cursor *c, int depth)
{
    if (depth > TERM_MAX_DEPTH)
        return fail(c->err, "badarg", "term nested deeper than %d levels", TERM_MAX_DEPTH);
    if (need(c, 1) < 0)
        return -1;
    unsigned char tag = c->buf[c->pos];
    uint32_t n;
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
    case ERL_SMALL_TUPLE_EXT:
        if (need(c, 2) < 0)
            return -1;
        n = c->buf[c->pos + 1];
        c->pos += 2;
        return validate_elements(c, n, depth);
    case ERL_LARGE_TUPLE_EXT:
        if (need(c, 5) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 5;
        return validate_elements(c, n, depth);
    case ERL_MAP_EXT:
        if (need(c, 5) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 5;
        return validate_elements(c, 2 * (uint64_t)n, depth);
    case ERL_LIST_EXT:
        if (need(c, 5) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 5;
        if (validate_elements(c, n, depth) < 0)
            return -1;
        return validate_term(c, depth + 1); /* the tail */
    case ERL_STRING_EXT:
        if (need(c, 3) < 0)
            return -1;
        n = be16(c->buf + c->pos + 1);
        c->pos += 3;
        return take(c, n);
    case ERL_BINARY_EXT:
        if (need(c, 5) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 5;
        return take(c, n);
    case ERL_BIT_BINARY_EXT:
        if (need(c, 6) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 6;
        return take(c, n);
    case ERL_SMALL_BIG_EXT:
        if (need(c, 3) < 0)
            return -1;
        n = c->buf[c->pos + 1];
        c->pos += 3;
        return take(c, n);
    case ERL_LARGE_BIG_EXT:
        if (need(c, 6) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        c->pos += 6;
        return take(c, n);
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
    case ERL_NEW_FUN_EXT:
        /* Size counts itself and everything after the tag. */
        if (need(c, 5) < 0)
            return -1;
        n = be32(c->buf + c->pos + 1);
        if (n < 4)
            return fail(c->err, "bad_frame", "fun with size %u", n);
        c->pos += 1;
        return take(c, n);
    case ERL_EXPORT_EXT:
        c->pos++;
        if (validate_atom(c) < 0 || validate_atom(c) < 0)
            return -1;
        return validate_term(c, depth + 1);
    default:
        return fail(c->err, "bad_frame", "unsupported term tag %u at byte %zu", tag, c->pos);
    }
}

int term_validate(const char *buf, size_t len, struct term_error *err)
{
    struct cursor c = {(const unsigned char *)buf, len, 0, err};
    if (len < 1 || c.buf[0] != VERSION_MAGIC)
        return fail(err, "bad_frame", "frame does not start with version byte 131");
    c.pos = 1;
    if (validate_term(&c, 0) < 0)
        return -1;
    if (c.pos != len)
        return fail(err, "bad_frame", "%zu trailing bytes after the term", len - c.pos);
    return 0;
}

int term_find_call_ref(const char *buf, size_t len, const char **ref, int *ref_len)
{
    struct term_error ignored;
    struct cursor c = {(const unsigned char *)buf, len, 0, &ignored};
    if (len < 3 || c.buf[0] != VERSION_MAGIC || c.buf[1] != ERL_SMALL_TUPLE_EXT ||
        (c.buf[2] != 3 && c.buf[2] != 4))
        return -1;
    c.pos = 3;
    if (validate_atom(&c) < 0)
        return -1;
    size_t start = c.pos;
    if (validate_term(&c, 1) < 0)
        return -1;
    *ref = buf + start;
    *ref_len = (int)(c.pos - start);
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

/* ---------------------------------------------------------------------------------------- */
/* Decoding: term -> Python                                                                   */
/* ---------------------------------------------------------------------------------------- */

PyObject *term_atom_type(void)
{
    return atom_type;
}

PyObject *term_make_atom(const char *utf8, Py_ssize_t len)
{
    PyObject *s = PyUnicode_DecodeUTF8(utf8, len, "strict");
    if (!s)
        return NULL;
    PyObject *atom = PyObject_CallOneArg(atom_type, s);
    Py_DECREF(s);
    return atom;
}

static PyObject *decode(const char *buf, int *index, int depth, struct term_error *err);

static PyObject *decode_atom(const char *buf, int *index, struct term_error *err)
{
    char name[MAXATOMLEN_UTF8];
    if (ei_decode_atom_as(buf, index, name, sizeof(name), ERLANG_UTF8, NULL, NULL) < 0) {
        fail(err, "badarg", "atom is not valid UTF-8");
        return NULL;
    }
    if (strcmp(name, "true") == 0)
        Py_RETURN_TRUE;
    if (strcmp(name, "false") == 0)
        Py_RETURN_FALSE;
    if (strcmp(name, "nil") == 0 || strcmp(name, "undefined") == 0)
        Py_RETURN_NONE;
    return term_make_atom(name, (Py_ssize_t)strlen(name));
}

/* SMALL_BIG_EXT / LARGE_BIG_EXT: sign byte, then a little-endian magnitude. */
static PyObject *decode_big(const char *buf, int *index)
{
    const unsigned char *p = (const unsigned char *)buf + *index;
    size_t n, head;
    if (p[0] == ERL_SMALL_BIG_EXT) {
        n = p[1];
        head = 2;
    } else {
        n = be32(p + 1);
        head = 5;
    }
    int negative = p[head];
    const unsigned char *digits = p + head + 1;
    *index += (int)(head + 1 + n);
    PyObject *magnitude = _PyLong_FromByteArray(digits, n, 1, 0);
    if (!magnitude || !negative)
        return magnitude;
    PyObject *neg = PyNumber_Negative(magnitude);
    Py_DECREF(magnitude);
    return neg;
}

static PyObject *decode_binary(const char *buf, int *index, struct term_error *err)
{
    const unsigned char *p = (const unsigned char *)buf + *index;
    if (p[0] == ERL_BIT_BINARY_EXT) {
        fail(err, "badarg", "bitstring that is not a whole number of bytes");
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)be32(p + 1);
    const char *data = buf + *index + 5;
    *index += 5 + (int)n;
    PyObject *s = PyUnicode_DecodeUTF8(data, n, "strict");
    if (s)
        return s;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return NULL;
    PyErr_Clear();
    return PyBytes_FromStringAndSize(data, n);
}

static PyObject *decode_sequence(const char *buf, int *index, int arity, int depth,
                                 struct term_error *err, int as_tuple)
{
    PyObject *seq = as_tuple ? PyTuple_New(arity) : PyList_New(arity);
    if (!seq)
        return NULL;
    for (int i = 0; i < arity; i++) {
        PyObject *item = decode(buf, index, depth + 1, err);
        if (!item) {
            Py_DECREF(seq);
            return NULL;
        }
        if (as_tuple)
            PyTuple_SET_ITEM(seq, i, item);
        else
            PyList_SET_ITEM(seq, i, item);
    }
    return seq;
}

static PyObject *decode_list(const char *buf, int *index, int depth, struct term_error *err)
{
    int arity;
    ei_decode_list_header(buf, index, &arity);
    PyObject *list = decode_sequence(buf, index, arity, depth, err, 0);
    if (!list)
        return NULL;
    if ((unsigned char)buf[*index] != ERL_NIL_EXT) {
        Py_DECREF(list);
        fail(err, "badarg", "improper list");
        return NULL;
    }
    (*index)++;
    return list;
}

static PyObject *decode_charlist(const char *buf, int *index)
{
    const unsigned char *p = (const unsigned char *)buf + *index;
    Py_ssize_t n = be16(p + 1);
    *index += 3 + (int)n;
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SET_ITEM(list, i, PyLong_FromLong(p[3 + i]));
    return list;
}

static PyObject *decode_map(const char *buf, int *index, int depth, struct term_error *err)
{
    int arity;
    ei_decode_map_header(buf, index, &arity);
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    for (int i = 0; i < arity; i++) {
        PyObject *key = decode(buf, index, depth + 1, err);
        PyObject *value = key ? decode(buf, index, depth + 1, err) : NULL;
        int rc = value ? PyDict_SetItem(dict, key, value) : -1;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (rc < 0) {
            if (key && value && PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                fail(err, "badarg", "map key that Python cannot hash (a list or a map)");
            }
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *refuse(struct term_error *err, const char *what)
{
    fail(err, "badarg", "%s cannot cross to Python", what);
    return NULL;
}

static PyObject *decode(const char *buf, int *index, int depth, struct term_error *err)
{
    if (depth > TERM_MAX_DEPTH) {
        fail(err, "badarg", "term nested deeper than %d levels", TERM_MAX_DEPTH);
        return NULL;
    }
    unsigned char tag = (unsigned char)buf[*index];
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT: {
        long v;
        ei_decode_long(buf, index, &v);
        return PyLong_FromLong(v);
    }
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT:
        return decode_big(buf, index);
    case ERL_FLOAT_EXT:
    case NEW_FLOAT_EXT: {
        double d;
        if (ei_decode_double(buf, index, &d) < 0) {
            fail(err, "badarg", "unreadable float");
            return NULL;
        }
        return PyFloat_FromDouble(d);
    }
    case ERL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return decode_atom(buf, index, err);
    case ERL_BINARY_EXT:
    case ERL_BIT_BINARY_EXT:
        return decode_binary(buf, index, err);
    case ERL_NIL_EXT:
        (*index)++;
        return PyList_New(0);
    case ERL_STRING_EXT:
        return decode_charlist(buf, index);
    case ERL_LIST_EXT:
        return decode_list(buf, index, depth, err);
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        int arity;
        ei_decode_tuple_header(buf, index, &arity);
        return decode_sequence(buf, index, arity, depth, err, 1);
    }
    case ERL_MAP_EXT:
        return decode_map(buf, index, depth, err);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
        return refuse(err, "a pid");
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT:
        return refuse(err, "a port");
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
        return refuse(err, "a reference");
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT:
        return refuse(err, "a fun");
    }
    fail(err, "badarg", "unsupported term tag %u", tag);
    return NULL;
}

PyObject *term_to_py(const char *buf, int *index, struct term_error *err)
{
    PyObject *obj = decode(buf, index, 0, err);
    if (!obj && PyErr_Occurred()) {
        /* A Python-side failure (memory, a bad UTF-8 atom): report it as internal. */
        PyErr_Clear();
        if (!err->kind)
            fail(err, "internal", "Python could not build the object");
    }
    return obj;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding: Python -> term                                                                   */
/* ---------------------------------------------------------------------------------------- */

static int encode(ei_x_buff *x, PyObject *obj, int depth, struct term_error *err);

static int encode_atom_str(ei_x_buff *x, PyObject *s, struct term_error *err)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &len);
    if (!utf8) {
        PyErr_Clear();
        return fail(err, "internal", "atom text is not encodable as UTF-8");
    }
    if (PyUnicode_GET_LENGTH(s) > 255)
        return fail(err, "internal", "atom longer than 255 characters");
    return ei_x_encode_atom_len_as(x, utf8, (int)len, ERLANG_UTF8, ERLANG_UTF8);
}

/* Integers that do not fit 64 bits: SMALL_BIG_EXT / LARGE_BIG_EXT written by hand. */
static int encode_big(ei_x_buff *x, PyObject *obj, struct term_error *err)
{
    int negative = _PyLong_Sign(obj) < 0;
    PyObject *magnitude = PyNumber_Absolute(obj);
    if (!magnitude)
        return fail(err, "internal", "integer magnitude");
    size_t bits = _PyLong_NumBits(magnitude);
    size_t n = (bits + 7) / 8;
    unsigned char header[6];
    size_t head_len;
    if (n <= 255) {
        header[0] = ERL_SMALL_BIG_EXT;
        header[1] = (unsigned char)n;
        header[2] = (unsigned char)negative;
        head_len = 3;
    } else {
        header[0] = ERL_LARGE_BIG_EXT;
        put_be32(header + 1, (uint32_t)n);
        header[5] = (unsigned char)negative;
        head_len = 6;
    }
    unsigned char *digits = PyMem_Malloc(n ? n : 1);
    int rc = -1;
    if (digits && _PyLong_AsByteArray((PyLongObject *)magnitude, digits, n, 1, 0) == 0) {
        rc = ei_x_append_buf(x, (const char *)header, (int)head_len);
        if (rc == 0)
            rc = ei_x_append_buf(x, (const char *)digits, (int)n);
    }
    PyMem_Free(digits);
    Py_DECREF(magnitude);
    if (rc < 0) {
        PyErr_Clear();
        return fail(err, "internal", "could not encode an integer of %zu bits", bits);
    }
    return 0;
}

static int encode_int(ei_x_buff *x, PyObject *obj, struct term_error *err)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (!overflow)
        return ei_x_encode_longlong(x, v);
    return encode_big(x, obj, err);
}

static int encode_float(ei_x_buff *x, double d)
{
    /* The BEAM has no NaN or infinities: they travel as atoms. */
    if (isnan(d))
        return ei_x_encode_atom(x, "nan");
    if (isinf(d))
        return ei_x_encode_atom(x, d > 0 ? "infinity" : "neg_infinity");
    return ei_x_encode_double(x, d);
}

static int encode_text(ei_x_buff *x, PyObject *s, struct term_error *err)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &len);
    if (!utf8) {
        PyErr_Clear();
        return fail(err, "internal", "str with lone surrogates cannot be UTF-8");
    }
    return ei_x_encode_binary(x, utf8, (long)len);
}

static int encode_items(ei_x_buff *x, PyObject *seq, int depth, struct term_error *err)
{
    /* A reference on each item while it is encoded: .tolist() runs code that could, in
     * principle, drop the container's hold on it. */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        int rc = encode(x, item, depth + 1, err);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int encode_dict(ei_x_buff *x, PyObject *dict, int depth, struct term_error *err)
{
    if (ei_x_encode_map_header(x, (long)PyDict_GET_SIZE(dict)) < 0)
        return fail(err, "internal", "map header");
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int rc = encode(x, key, depth + 1, err) < 0 || encode(x, value, depth + 1, err) < 0;
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc)
            return -1;
    }
    return 0;
}

/* numpy scalars and arrays (and pandas columns) all answer .tolist() with plain Python. */
static int encode_via_tolist(ei_x_buff *x, PyObject *obj, int depth, struct term_error *err)
{
    PyObject *plain = PyObject_CallMethod(obj, "tolist", NULL);
    if (!plain) {
        PyErr_Clear();
        return fail(err, "internal", "%s.tolist() failed", Py_TYPE(obj)->tp_name);
    }
    int rc = encode(x, plain, depth + 1, err);
    Py_DECREF(plain);
    return rc;
}

static int encode(ei_x_buff *x, PyObject *obj, int depth, struct term_error *err)
{
    if (depth > TERM_MAX_DEPTH)
        return fail(err, "internal", "result nested deeper than %d levels", TERM_MAX_DEPTH);
    if (obj == Py_None)
        return ei_x_encode_atom(x, "nil");
    if (obj == Py_True)
        return ei_x_encode_atom(x, "true");
    if (obj == Py_False)
        return ei_x_encode_atom(x, "false");
    if (Py_IS_TYPE(obj, (PyTypeObject *)atom_type))
        return encode_atom_str(x, obj, err);
    if (PyUnicode_Check(obj))
        return encode_text(x, obj, err);
    if (PyLong_Check(obj))
        return encode_int(x, obj, err);
    if (PyFloat_Check(obj))
        return encode_float(x, PyFloat_AS_DOUBLE(obj));
    if (PyBytes_Check(obj))
        return ei_x_encode_binary(x, PyBytes_AS_STRING(obj), (long)PyBytes_GET_SIZE(obj));
    if (PyByteArray_Check(obj))
        return ei_x_encode_binary(x, PyByteArray_AS_STRING(obj), (long)PyByteArray_GET_SIZE(obj));
    if (PyList_Check(obj)) {
        Py_ssize_t n = PyList_GET_SIZE(obj);
        if (n == 0)
            return ei_x_encode_empty_list(x);
        if (ei_x_encode_list_header(x, (long)n) < 0 || encode_items(x, obj, depth, err) < 0)
            return -1;
        return ei_x_encode_empty_list(x);
    }
    if (PyTuple_Check(obj)) {
        if (ei_x_encode_tuple_header(x, (long)PyTuple_GET_SIZE(obj)) < 0)
            return -1;
        return encode_items(x, obj, depth, err);
    }
    if (PyDict_Check(obj))
        return encode_dict(x, obj, depth, err);
    if (PyObject_HasAttrString(obj, "tolist"))
        return encode_via_tolist(x, obj, depth, err);
    return fail(err, "internal", "cannot encode a Python %s as a term", Py_TYPE(obj)->tp_name);
}

int py_to_term(ei_x_buff *x, PyObject *obj, struct term_error *err)
{
    return encode(x, obj, 0, err) < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The Atom type                                                                              */
/* ---------------------------------------------------------------------------------------- */

static PyType_Slot atom_slots[] = {{0, NULL}};
static PyType_Spec atom_spec = {
    .name = "_uro_port.Atom",
    .basicsize = 0,
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = atom_slots,
};

int term_module_init(PyObject *module)
{
    if (!atom_type) {
        atom_type = PyType_FromSpecWithBases(&atom_spec, (PyObject *)&PyUnicode_Type);
        if (!atom_type)
            return -1;
    }
    return PyModule_AddObjectRef(module, "Atom", atom_type);
}
