/*
 * term.c: Erlang external term format <-> Python objects (see term.h and docs/PROTOCOL.md).
 *
 * Two parts, in order: the decoder, term -> PyObject, which reads only what term_check.c's
 * walk has accepted (ei's decoders check no lengths); the encoder, PyObject -> term into an
 * ei_x_buff. Then the Atom type. Recursion is bounded by TERM_MAX_DEPTH on both sides.
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
#include <stdlib.h>
#include <string.h>

static PyObject *atom_type;

int term_fail(struct term_error *err, const char *kind, const char *fmt, ...)
{
    va_list ap;
    err->kind = kind;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
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

/* Atoms are read from their bytes (the walk has checked them): UTF-8 or Latin-1 by tag, NUL
 * characters kept (ei's C strings would cut them). */
static PyObject *decode_atom(const char *buf, int *index, struct term_error *err)
{
    const unsigned char *p = (const unsigned char *)buf + *index;
    int small = p[0] == ERL_SMALL_ATOM_EXT || p[0] == ERL_SMALL_ATOM_UTF8_EXT;
    int utf8 = p[0] == ERL_ATOM_UTF8_EXT || p[0] == ERL_SMALL_ATOM_UTF8_EXT;
    Py_ssize_t n = small ? p[1] : be16(p + 1);
    const char *name = (const char *)p + (small ? 2 : 3);
    *index += (small ? 2 : 3) + (int)n;
    static const struct {
        const char *name;
        PyObject *value;
    } constants[] = {{"true", Py_True}, {"false", Py_False}, {"nil", Py_None},
                     {"undefined", Py_None}};
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if ((size_t)n == strlen(constants[i].name) && memcmp(name, constants[i].name, n) == 0)
            return Py_NewRef(constants[i].value);
    PyObject *s = utf8 ? PyUnicode_DecodeUTF8(name, n, "strict") : PyUnicode_DecodeLatin1(name, n, NULL);
    if (!s) {
        term_fail(err, "badarg", "atom is not valid UTF-8");
        return NULL;
    }
    PyObject *atom = PyObject_CallOneArg(atom_type, s);
    Py_DECREF(s);
    return atom;
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
    int bitbin = p[0] == ERL_BIT_BINARY_EXT;
    if (bitbin && p[5] != 8 && p[5] != 0) {
        term_fail(err, "badarg", "bitstring that is not a whole number of bytes");
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)be32(p + 1);
    const char *data = buf + *index + (bitbin ? 6 : 5); /* 8 bits in the last byte: a binary */
    *index += (bitbin ? 6 : 5) + (int)n;
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
    if (arity == 0) /* LIST_EXT of no elements is its tail, as binary_to_term reads it */
        return decode(buf, index, depth + 1, err);
    PyObject *list = decode_sequence(buf, index, arity, depth, err, 0);
    if (!list)
        return NULL;
    if ((unsigned char)buf[*index] != ERL_NIL_EXT) {
        Py_DECREF(list);
        term_fail(err, "badarg", "improper list");
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
                term_fail(err, "badarg", "map key that Python cannot hash (a list or a map)");
            }
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *decode_float(const char *buf, int *index, struct term_error *err)
{
    if ((unsigned char)buf[*index] == ERL_FLOAT_EXT) { /* text the walk has checked */
        char text[32];
        memcpy(text, buf + *index + 1, 31);
        text[31] = '\0';
        char *comma = strchr(text, ',');
        if (comma)
            *comma = '.';
        *index += 32;
        return PyFloat_FromDouble(strtod(text, NULL));
    }
    double d;
    if (ei_decode_double(buf, index, &d) < 0) {
        term_fail(err, "badarg", "unreadable float");
        return NULL;
    }
    return PyFloat_FromDouble(d);
}

/* Pids, ports, references and funs have no Python counterpart; other tags are unknown. */
static PyObject *refuse(unsigned char tag, struct term_error *err)
{
    const char *what =
        tag == ERL_PID_EXT || tag == ERL_NEW_PID_EXT ? "a pid"
        : tag == ERL_PORT_EXT || tag == ERL_NEW_PORT_EXT || tag == ERL_V4_PORT_EXT ? "a port"
        : tag == ERL_REFERENCE_EXT || tag == ERL_NEW_REFERENCE_EXT ||
                  tag == ERL_NEWER_REFERENCE_EXT ? "a reference"
        : tag == ERL_NEW_FUN_EXT || tag == ERL_EXPORT_EXT ? "a fun"
        : NULL;
    if (what)
        term_fail(err, "badarg", "%s cannot cross to Python", what);
    else
        term_fail(err, "badarg", "unsupported term tag %u", tag);
    return NULL;
}

static PyObject *decode(const char *buf, int *index, int depth, struct term_error *err)
{
    if (depth > TERM_MAX_DEPTH) {
        term_fail(err, "badarg", "term nested deeper than %d levels", TERM_MAX_DEPTH);
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
    case NEW_FLOAT_EXT:
        return decode_float(buf, index, err);
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
    default:
        return refuse(tag, err);
    }
}

PyObject *term_to_py(const char *buf, int *index, struct term_error *err)
{
    PyObject *obj = decode(buf, index, 0, err);
    if (!obj && PyErr_Occurred()) {
        /* A Python-side failure (memory, a bad UTF-8 atom): report it as internal. */
        PyErr_Clear();
        if (!err->kind)
            term_fail(err, "internal", "Python could not build the object");
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
        return term_fail(err, "internal", "atom text is not encodable as UTF-8");
    }
    if (PyUnicode_GET_LENGTH(s) > 255)
        return term_fail(err, "internal", "atom longer than 255 characters");
    return ei_x_encode_atom_len_as(x, utf8, (int)len, ERLANG_UTF8, ERLANG_UTF8);
}

/* Integers that do not fit 64 bits: SMALL_BIG_EXT / LARGE_BIG_EXT written by hand. */
static int encode_big(ei_x_buff *x, PyObject *obj, struct term_error *err)
{
    int negative = _PyLong_Sign(obj) < 0;
    PyObject *magnitude = PyNumber_Absolute(obj);
    if (!magnitude)
        return term_fail(err, "internal", "integer magnitude");
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
        return term_fail(err, "internal", "could not encode an integer of %zu bits", bits);
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

/* A str is its UTF-8 bytes. A str holding surrogate escapes (U+DC80..U+DCFF, PEP 383) is
 * the binary those escapes stand for: the id of a binary that is not UTF-8 travels through
 * Python that way (uro_rec.ids) and comes back as the same bytes. */
static int encode_text(ei_x_buff *x, PyObject *s, struct term_error *err)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &len);
    if (utf8)
        return ei_x_encode_binary(x, utf8, (long)len);
    PyErr_Clear();
    PyObject *raw = PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
    if (!raw) {
        PyErr_Clear();
        return term_fail(err, "internal", "str with lone surrogates cannot be UTF-8");
    }
    int rc = ei_x_encode_binary(x, PyBytes_AS_STRING(raw), (long)PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return rc;
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
        return term_fail(err, "internal", "map header");
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
        return term_fail(err, "internal", "%s.tolist() failed", Py_TYPE(obj)->tp_name);
    }
    int rc = encode(x, plain, depth + 1, err);
    Py_DECREF(plain);
    return rc;
}

static int encode(ei_x_buff *x, PyObject *obj, int depth, struct term_error *err)
{
    if (depth > TERM_MAX_DEPTH)
        return term_fail(err, "internal", "result nested deeper than %d levels", TERM_MAX_DEPTH);
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
    return term_fail(err, "internal", "cannot encode a Python %s as a term", Py_TYPE(obj)->tp_name);
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
