/*
 * db_columns.c: training data streamed into typed columns (see db_private.h).
 *
 * db_columns(query, params) runs the query in single-row mode with binary results, so rows
 * arrive one at a time and are appended to growing C arrays, one per column: the whole result
 * is never buffered as text, and numeric columns never become one Python object per row (they
 * reach Python as bytes that numpy wraps without copying). Text and UUID columns do become
 * str objects, but through a small intern table, since ids repeat on every interaction.
 * Arrays of text (TEXT[], VARCHAR[], UUID[]: feature tags) become lists of str.
 */
#include "db_private.h"

#include "bigendian.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- binary decoding ------------------------------------------------------------------------- */

static double as_double(const char *p, int len, Oid type)
{
    if (type == OID_FLOAT8 && len == 8) {
        uint64_t bits = be64(p);
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }
    if (type == OID_FLOAT4 && len == 4) {
        uint32_t bits = be32(p);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    if (type == OID_NUMERIC && len >= 8) {
        /* ndigits, weight, sign, dscale, then base-10000 digits */
        int ndigits = (int16_t)be16(p), weight = (int16_t)be16(p + 2);
        uint16_t sign = be16(p + 4);
        if (sign == 0xC000)
            return NAN;
        if (sign == 0xD000) /* PostgreSQL 14+: NUMERIC 'Infinity' and '-Infinity' */
            return INFINITY;
        if (sign == 0xF000)
            return -INFINITY;
        double v = 0;
        for (int i = 0; i < ndigits && 8 + 2 * i + 1 < len; i++)
            v += (int16_t)be16(p + 8 + 2 * i) * pow(10000.0, weight - i);
        return sign == 0x4000 ? -v : v;
    }
    if (type == OID_INT8 && len == 8)
        return (double)(int64_t)be64(p);
    if (type == OID_INT4 && len == 4)
        return (int32_t)be32(p);
    if (type == OID_INT2 && len == 2)
        return (int16_t)be16(p);
    if (type == OID_BOOL && len == 1)
        return p[0] ? 1.0 : 0.0;
    return NAN;
}

static int64_t as_int64(const char *p, int len, Oid type)
{
    if (len == 8 && (type == OID_INT8 || type == OID_TIMESTAMP || type == OID_TIMESTAMPTZ))
        return (int64_t)be64(p);
    if (len == 4)
        return (int32_t)be32(p);
    if (len == 2)
        return (int16_t)be16(p);
    return 0;
}

static PyObject *uuid_text(const char *p)
{
    static const char hex[] = "0123456789abcdef";
    char s[36];
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            s[o++] = '-';
        s[o++] = hex[((unsigned char)p[i]) >> 4];
        s[o++] = hex[((unsigned char)p[i]) & 15];
    }
    return PyUnicode_FromStringAndSize(s, 36);
}

static PyObject *text_value(const char *p, int len, Oid type)
{
    if (type == OID_UUID && len == 16)
        return uuid_text(p);
    return PyUnicode_DecodeUTF8(p, len, "replace");
}

/* ---- typed columns --------------------------------------------------------------------------- */

enum column_kind { COL_INT64, COL_FLOAT64, COL_TIME, COL_TEXT, COL_TEXT_ARRAY, COL_OTHER };

struct column {
    enum column_kind kind;
    Oid type;
    char *data;       /* int64 or double values */
    size_t cap;
    PyObject *texts;  /* list, for COL_TEXT and COL_TEXT_ARRAY */
    Py_ssize_t nulls;
    Py_ssize_t first_null;
};

static enum column_kind kind_of(Oid type)
{
    switch (type) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        return COL_INT64;
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
    case OID_BOOL:
        return COL_FLOAT64;
    case OID_TIMESTAMP:
    case OID_TIMESTAMPTZ:
        return COL_TIME;
    case OID_TEXT:
    case OID_VARCHAR:
    case OID_BPCHAR:
    case OID_NAME:
    case OID_UUID:
        return COL_TEXT;
    case OID_NAME_ARRAY:
    case OID_TEXT_ARRAY:
    case OID_BPCHAR_ARRAY:
    case OID_VARCHAR_ARRAY:
    case OID_UUID_ARRAY:
        return COL_TEXT_ARRAY;
    default: /* dates, JSON, bytea...: nothing we read as an id, label or time */
        return COL_OTHER;
    }
}

static int append_text(struct column *c, int is_null, const char *p, int len, PyObject *interned)
{
    PyObject *v;
    if (is_null) {
        v = Py_None;
        Py_INCREF(v);
    } else {
        PyObject *fresh = text_value(p, len, c->type);
        if (!fresh)
            return -1;
        v = PyDict_SetDefault(interned, fresh, fresh); /* borrowed */
        Py_XINCREF(v);
        Py_DECREF(fresh);
        if (!v)
            return -1;
    }
    int rc = PyList_Append(c->texts, v);
    Py_DECREF(v);
    return rc;
}

/* A one-dimensional array in binary format (ndim, has_null, element OID, then per dimension
 * size and lower bound, then each element as length + bytes, -1 for NULL) -> list of str.
 * NULL elements are left out; more dimensions are read flat. len is trusted only as the
 * bound every read is checked against. */
static PyObject *text_array(const char *p, int len)
{
    PyObject *list = PyList_New(0);
    if (!list || len < 12)
        return list;
    int ndim = (int32_t)be32(p);
    Oid elem = (Oid)be32(p + 8);
    long count = ndim > 0 ? 1 : 0, off = 12;
    for (int d = 0; d < ndim && off + 8 <= len; d++, off += 8) {
        long size = (int32_t)be32(p + off); /* every element takes 4 bytes at least: */
        count = size < 0 ? 0 : (count > len / 4 || size > len / 4) ? len / 4 : count * size;
    }
    for (long k = 0; k < count && off + 4 <= len; k++) {
        int n = (int32_t)be32(p + off);
        off += 4;
        if (n < 0)
            continue; /* a NULL element */
        if (n > len - off)
            break;
        PyObject *v = text_value(p + off, n, elem);
        if (!v || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(v);
        off += n;
    }
    return list;
}

static int append_text_array(struct column *c, int is_null, const char *p, int len)
{
    PyObject *v = is_null ? (Py_INCREF(Py_None), Py_None) : text_array(p, len);
    int rc = v ? PyList_Append(c->texts, v) : -1;
    Py_XDECREF(v);
    return rc;
}

static int append_number(struct column *c, Py_ssize_t row, int is_null, const char *p, int len)
{
    size_t need = (size_t)(row + 1) * 8;
    if (need > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1 << 16;
        char *grown = PyMem_Realloc(c->data, cap);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        c->data = grown;
        c->cap = cap;
    }
    char *slot = c->data + (size_t)row * 8;
    if (c->kind == COL_FLOAT64) {
        double d = is_null ? NAN : as_double(p, len, c->type);
        memcpy(slot, &d, 8);
    } else {
        int64_t v = is_null ? 0 : as_int64(p, len, c->type);
        if (c->kind == COL_TIME) { /* microseconds since 2000-01-01 -> seconds since 1970 */
            int64_t secs = v / 1000000;
            if (v % 1000000 < 0)
                secs--; /* floor, not toward zero, for times before 2000 */
            v = secs + 946684800;
        }
        memcpy(slot, &v, 8);
    }
    return 0;
}

static int append_value(struct column *c, Py_ssize_t row, PGresult *res, int col, PyObject *interned)
{
    if (c->kind == COL_OTHER)
        return 0; /* reported by type, not read */
    int is_null = PQgetisnull(res, 0, col);
    if (is_null) {
        if (!c->nulls++)
            c->first_null = row;
    }
    const char *p = PQgetvalue(res, 0, col);
    int len = PQgetlength(res, 0, col);
    if (c->kind == COL_TEXT)
        return append_text(c, is_null, p, len, interned);
    if (c->kind == COL_TEXT_ARRAY)
        return append_text_array(c, is_null, p, len);
    return append_number(c, row, is_null, p, len);
}

/* One empty column per field of res, typed from its OIDs. */
static int new_columns(PGresult *res, struct column **cols, int *ncols)
{
    int n = PQnfields(res);
    *cols = PyMem_Calloc(n ? (size_t)n : 1, sizeof(**cols));
    if (!*cols) {
        PyErr_NoMemory();
        return -1;
    }
    *ncols = n;
    for (int i = 0; i < *ncols; i++) {
        (*cols)[i].type = PQftype(res, i);
        (*cols)[i].kind = kind_of((*cols)[i].type);
        if (((*cols)[i].kind == COL_TEXT || (*cols)[i].kind == COL_TEXT_ARRAY) &&
            !((*cols)[i].texts = PyList_New(0)))
            return -1;
    }
    return 0;
}

static void free_columns(struct column *cols, int n)
{
    for (int i = 0; i < n; i++) {
        PyMem_Free(cols[i].data);
        Py_XDECREF(cols[i].texts);
    }
    PyMem_Free(cols);
}

static const char *kind_name(enum column_kind k)
{
    return k == COL_INT64 ? "int64" : k == COL_FLOAT64 ? "float64" : k == COL_TIME ? "time"
           : k == COL_TEXT ? "text" : k == COL_TEXT_ARRAY ? "text_array" : "unsupported";
}

static PyObject *columns_result(struct column *cols, int n, PGresult *first, Py_ssize_t rows)
{
    PyObject *names = PyList_New(n), *values = PyList_New(n);
    if (!names || !values)
        goto fail;
    for (int i = 0; i < n; i++) {
        PyList_SET_ITEM(names, i, PyUnicode_FromString(PQfname(first, i)));
        PyObject *data = cols[i].kind == COL_TEXT || cols[i].kind == COL_TEXT_ARRAY
                             ? (Py_INCREF(cols[i].texts), cols[i].texts)
                             : cols[i].kind == COL_OTHER
                                   ? PyLong_FromUnsignedLong(cols[i].type) /* the type OID */
                                   : PyBytes_FromStringAndSize(cols[i].data ? cols[i].data : "",
                                                               (Py_ssize_t)rows * 8);
        PyObject *col = Py_BuildValue("(sNnn)", kind_name(cols[i].kind), data, cols[i].nulls,
                                      cols[i].nulls ? cols[i].first_null : (Py_ssize_t)-1);
        if (!col)
            goto fail;
        PyList_SET_ITEM(values, i, col);
    }
    return Py_BuildValue("{sNsNsn}", "names", names, "columns", values, "rows", rows);
fail:
    Py_XDECREF(names);
    Py_XDECREF(values);
    return NULL;
}

/* ---- db_columns: the stream ------------------------------------------------------------------ */

struct stream {
    struct column *cols;
    int ncols;
    Py_ssize_t rows;
    PyObject *interned;
    PGresult *first; /* kept: it names the columns */
};

/* Takes one result of the stream (and clears it unless it is the first). 0, or -1 with an
 * exception set. */
static int take_result(struct stream *s, PGconn *c, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    int failed = 0;
    if (st == PGRES_SINGLE_TUPLE) {
        if (!s->cols) {
            failed = new_columns(res, &s->cols, &s->ncols) < 0;
            s->first = res;
        }
        for (int i = 0; !failed && i < s->ncols; i++)
            failed = append_value(&s->cols[i], s->rows, res, i, s->interned) < 0;
        s->rows++;
        if (res != s->first)
            PQclear(res);
    } else if (st == PGRES_TUPLES_OK) {
        if (!s->first) { /* zero rows: the final result still names the columns */
            failed = new_columns(res, &s->cols, &s->ncols) < 0;
            s->first = res;
        } else {
            PQclear(res);
        }
    } else if (st == PGRES_COMMAND_OK) {
        db_raise("42809", "the SQL source must be a query that returns rows");
        PQclear(res);
        failed = 1;
    } else {
        db_raise_result(c, res);
        PQclear(res);
        failed = 1;
    }
    return failed ? -1 : 0;
}

PyObject *db_columns(PyObject *self, PyObject *args)
{
    (void)self;
    const char *query;
    PyObject *param_list;
    if (!PyArg_ParseTuple(args, "sO", &query, &param_list))
        return NULL;
    struct db_params p;
    if (db_build_params(param_list, &p) < 0)
        return NULL;
    PGconn *c = db_connection_of(0);
    int sent = c ? db_send_streaming(c, query, &p) : -1;
    db_free_params(&p);
    if (sent < 0)
        return NULL;

    struct stream s = {.interned = PyDict_New()};
    int failed = !s.interned;
    PGresult *res;
    while (!failed && (res = db_wait_result(c, 1)))
        failed = take_result(&s, c, res) < 0;
    int timed_out = db_wait_timed_out();
    db_drain(c, 1); /* at once after a timeout */
    if (timed_out && !failed) {
        db_raise_result(c, NULL); /* CallTimeout */
        failed = 1;
    }
    PyObject *out = failed ? NULL : columns_result(s.cols, s.ncols, s.first, s.rows);
    if (s.first)
        PQclear(s.first);
    free_columns(s.cols, s.ncols);
    Py_XDECREF(s.interned);
    return out;
}
