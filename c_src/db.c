/*
 * db.c: libpq for the port (see db.h).
 *
 * Connection. Lazy: the first database call connects. When the connection is lost the call
 * that saw it fails with DatabaseError, and the next call reconnects; after a failed connect
 * the next attempt waits 100 ms, doubling to 5 s, and calls inside that window fail at once
 * with SQLSTATE 08001 rather than each paying a connect timeout.
 *
 * Streaming (db_columns). The query runs in single-row mode with binary results, so rows
 * arrive one at a time and are appended to growing C arrays, one per column: the whole result
 * is never buffered as text, and numeric columns never become one Python object per row (they
 * reach Python as bytes that numpy wraps without copying). Text and UUID columns do become
 * str objects, but through a small intern table, since ids repeat on every interaction.
 *
 * Transactions (db_transaction). CockroachDB runs SERIALIZABLE and asks clients to retry on
 * SQLSTATE 40001. We retry the whole transaction (ROLLBACK, wait, BEGIN again), which is what
 * both CockroachDB and PostgreSQL accept; the wait grows 10 ms, 20 ms, ... up to 1 s, with
 * jitter, up to max_retries times. Each attempt, BEGIN to COMMIT, runs without the GIL: the
 * statements are turned into C strings first, and the rows come back to Python after.
 */
#include "db.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "stats.h"

/* Type OIDs (stable across PostgreSQL and CockroachDB). */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_NAME 19
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_BPCHAR 1042
#define OID_VARCHAR 1043
#define OID_TIMESTAMP 1114
#define OID_TIMESTAMPTZ 1184
#define OID_NUMERIC 1700
#define OID_UUID 2950
/* arrays of text-like elements: multi-valued features (tags), read as lists of str */
#define OID_NAME_ARRAY 1003
#define OID_TEXT_ARRAY 1009
#define OID_BPCHAR_ARRAY 1014
#define OID_VARCHAR_ARRAY 1015
#define OID_UUID_ARRAY 2951

/* Slot 0 serves every command. An export with writers > 1 also writes through slots 1..,
 * each used by one Python thread at a time, and closes them when it ends (db_release). */
#define DB_SLOTS 4

static char *conninfo;
static PGconn *conns[DB_SLOTS];
/* A slot whose transaction runs without the GIL right now. The GIL guards this flag: a
 * thread that gives up on an export early (its call timed out) must not let the next
 * export close or reuse a connection another thread is still inside. */
static int busy[DB_SLOTS];
static uint64_t next_attempt_us;
static uint64_t backoff_us;
static PyObject *database_error;

/* ---- errors ------------------------------------------------------------------------------- */

static PyObject *raise_db(const char *sqlstate, const char *message)
{
    PyObject *args = Py_BuildValue("(ss)", sqlstate ? sqlstate : "XX000", message ? message : "");
    if (args) {
        PyErr_SetObject(database_error, args);
        Py_DECREF(args);
    }
    return NULL;
}

static PyObject *raise_result(PGconn *c, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
    if (!state && c && PQstatus(c) == CONNECTION_BAD)
        state = "08006"; /* connection failure */
    return raise_db(state, msg && *msg ? msg : PQerrorMessage(c));
}

/* ---- connection ----------------------------------------------------------------------------- */

void db_configure(const char *info)
{
    free(conninfo);
    conninfo = info && *info ? strdup(info) : NULL;
}

static void drop_connection(int slot)
{
    if (conns[slot])
        PQfinish(conns[slot]);
    conns[slot] = NULL;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Returns the slot's healthy connection, or NULL with DatabaseError set. Called with the GIL,
 * which keeps the backoff state consistent between an export's writer threads. */
static PGconn *connection_of(int slot)
{
    if (busy[slot]) {
        raise_db("55006", "this connection slot is still busy with an earlier transaction");
        return NULL;
    }
    PGconn *conn = conns[slot];
    if (conn && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE)
        return conn;
    drop_connection(slot);
    if (!conninfo) {
        raise_db("08001", "no database configured: start the port with --database-url or "
                          "DATABASE_URL");
        return NULL;
    }
    uint64_t now = stats_now_us();
    if (now < next_attempt_us) {
        raise_db("08001", "database unreachable; next reconnect attempt after backoff");
        return NULL;
    }
    conn = conns[slot] = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
        drop_connection(slot);
        backoff_us = backoff_us ? (backoff_us * 2 > 5000000 ? 5000000 : backoff_us * 2) : 100000;
        next_attempt_us = now + backoff_us;
        raise_db("08001", msg);
        return NULL;
    }
    backoff_us = 0;
    next_attempt_us = 0;
    /* Notices ("relation already exists, skipping") are not errors: keep them off stderr.
     * (A NULL processor would be ignored by libpq: it needs a function.) */
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

static PGconn *connection(void)
{
    return connection_of(0);
}

/* ---- parameters: Python values as text (bytes as binary) ------------------------------------ */

struct params {
    int n;
    char **values;
    int *lengths;
    int *formats;
    PyObject **keep; /* owners of the value buffers */
};

static void free_params(struct params *p)
{
    for (int i = 0; i < p->n; i++)
        Py_XDECREF(p->keep[i]);
    PyMem_Free(p->values);
    PyMem_Free(p->lengths);
    PyMem_Free(p->formats);
    PyMem_Free(p->keep);
    memset(p, 0, sizeof(*p));
}

static PyObject *param_text(PyObject *v)
{
    if (v == Py_True)
        return PyBytes_FromString("true");
    if (v == Py_False)
        return PyBytes_FromString("false");
    if (PyUnicode_Check(v))
        return PyUnicode_AsUTF8String(v);
    if (PyBytes_Check(v)) {
        Py_INCREF(v);
        return v;
    }
    if (PyLong_Check(v) || PyFloat_Check(v)) {
        PyObject *s = PyObject_Repr(v);
        PyObject *b = s ? PyUnicode_AsUTF8String(s) : NULL;
        Py_XDECREF(s);
        return b;
    }
    PyErr_Format(PyExc_TypeError, "a query parameter must be a str, bytes, int, float, bool or "
                                  "None, not %s", Py_TYPE(v)->tp_name);
    return NULL;
}

static int build_params(PyObject *seq, struct params *p)
{
    memset(p, 0, sizeof(*p));
    PyObject *fast = PySequence_Fast(seq, "query parameters must be a list");
    if (!fast)
        return -1;
    p->n = (int)PySequence_Fast_GET_SIZE(fast);
    size_t n = p->n ? (size_t)p->n : 1;
    p->values = PyMem_Calloc(n, sizeof(char *));
    p->lengths = PyMem_Calloc(n, sizeof(int));
    p->formats = PyMem_Calloc(n, sizeof(int));
    p->keep = PyMem_Calloc(n, sizeof(PyObject *));
    if (!p->values || !p->lengths || !p->formats || !p->keep) {
        Py_DECREF(fast);
        free_params(p);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < p->n; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, i);
        if (v == Py_None)
            continue;
        PyObject *b = param_text(v);
        if (!b) {
            Py_DECREF(fast);
            free_params(p);
            return -1;
        }
        p->keep[i] = b;
        p->values[i] = PyBytes_AS_STRING(b);
        p->lengths[i] = (int)PyBytes_GET_SIZE(b);
        p->formats[i] = PyBytes_Check(v) ? 1 : 0;
    }
    Py_DECREF(fast);
    return 0;
}

/* ---- binary decoding -------------------------------------------------------------------------- */

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return (int64_t)v;
}

static int32_t be32s(const char *p)
{
    return (int32_t)(((uint32_t)(unsigned char)p[0] << 24) | ((uint32_t)(unsigned char)p[1] << 16) |
                     ((uint32_t)(unsigned char)p[2] << 8) | (unsigned char)p[3]);
}

static int16_t be16s(const char *p)
{
    return (int16_t)(((unsigned char)p[0] << 8) | (unsigned char)p[1]);
}

static double as_double(const char *p, int len, Oid type)
{
    if (type == OID_FLOAT8 && len == 8) {
        int64_t bits = be64(p);
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }
    if (type == OID_FLOAT4 && len == 4) {
        int32_t bits = be32s(p);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    if (type == OID_NUMERIC && len >= 8) {
        /* ndigits, weight, sign, dscale, then base-10000 digits */
        int ndigits = be16s(p), weight = be16s(p + 2);
        uint16_t sign = (uint16_t)be16s(p + 4);
        if (sign == 0xC000)
            return NAN;
        if (sign == 0xD000) /* PostgreSQL 14+: NUMERIC 'Infinity' and '-Infinity' */
            return INFINITY;
        if (sign == 0xF000)
            return -INFINITY;
        double v = 0;
        for (int i = 0; i < ndigits && 8 + 2 * i + 1 < len; i++)
            v += be16s(p + 8 + 2 * i) * pow(10000.0, weight - i);
        return sign == 0x4000 ? -v : v;
    }
    if (type == OID_INT8 && len == 8)
        return (double)be64(p);
    if (type == OID_INT4 && len == 4)
        return be32s(p);
    if (type == OID_INT2 && len == 2)
        return be16s(p);
    if (type == OID_BOOL && len == 1)
        return p[0] ? 1.0 : 0.0;
    return NAN;
}

static int64_t as_int64(const char *p, int len, Oid type)
{
    if (len == 8 && (type == OID_INT8 || type == OID_TIMESTAMP || type == OID_TIMESTAMPTZ))
        return be64(p);
    if (len == 4)
        return be32s(p);
    if (len == 2)
        return be16s(p);
    return 0;
}

/* ---- db_columns: streaming a result into typed columns ----------------------------------------- */

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

/* A one-dimensional array in binary format (ndim, has_null, element OID, then per dimension
 * size and lower bound, then each element as length + bytes, -1 for NULL) -> list of str.
 * NULL elements are left out; more dimensions are read flat. len is trusted only as the
 * bound every read is checked against. */
static PyObject *text_array(const char *p, int len)
{
    PyObject *list = PyList_New(0);
    if (!list || len < 12)
        return list;
    int ndim = be32s(p);
    Oid elem = (Oid)be32s(p + 8);
    long count = ndim > 0 ? 1 : 0, off = 12;
    for (int d = 0; d < ndim && off + 8 <= len; d++, off += 8)
        count *= be32s(p + off);
    for (long k = 0; k < count && off + 4 <= len; k++) {
        int n = be32s(p + off);
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
    if (c->kind == COL_TEXT_ARRAY) {
        PyObject *v = is_null ? (Py_INCREF(Py_None), Py_None) : text_array(p, len);
        int rc = v ? PyList_Append(c->texts, v) : -1;
        Py_XDECREF(v);
        return rc;
    }
    if (c->kind == COL_TEXT) {
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

/* Drains what is left of a failed or abandoned stream so the connection can be reused. */
static void drain(PGconn *c)
{
    PGresult *r;
    while ((r = PQgetResult(c)))
        PQclear(r);
}

static PyObject *db_columns(PyObject *self, PyObject *args)
{
    (void)self;
    const char *query;
    PyObject *param_list;
    if (!PyArg_ParseTuple(args, "sO", &query, &param_list))
        return NULL;
    struct params p;
    if (build_params(param_list, &p) < 0)
        return NULL;
    PGconn *c = connection();
    if (!c) {
        free_params(&p);
        return NULL;
    }
    int sent = PQsendQueryParams(c, query, p.n, NULL, (const char *const *)p.values, p.lengths,
                                 p.formats, 1);
    free_params(&p);
    if (!sent || !PQsetSingleRowMode(c)) {
        raise_result(c, NULL);
        drain(c);
        return NULL;
    }

    struct column *cols = NULL;
    int ncols = 0;
    Py_ssize_t rows = 0;
    PyObject *interned = PyDict_New();
    PGresult *first = NULL, *res;
    PyObject *out = NULL;
    int failed = !interned;
    while (!failed && (res = PQgetResult(c))) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (!cols) {
                failed = new_columns(res, &cols, &ncols) < 0;
                first = res;
            }
            for (int i = 0; !failed && i < ncols; i++)
                failed = append_value(&cols[i], rows, res, i, interned) < 0;
            rows++;
            if (res != first)
                PQclear(res);
        } else if (st == PGRES_TUPLES_OK) {
            if (!first) { /* zero rows: the final result still names the columns */
                failed = new_columns(res, &cols, &ncols) < 0;
                first = res;
            } else {
                PQclear(res);
            }
        } else if (st == PGRES_COMMAND_OK) {
            raise_db("42809", "the SQL source must be a query that returns rows");
            PQclear(res);
            failed = 1;
        } else {
            raise_result(c, res);
            PQclear(res);
            failed = 1;
        }
    }
    drain(c);
    if (!failed)
        out = columns_result(cols, ncols, first, rows);
    if (first)
        PQclear(first);
    free_columns(cols, ncols);
    Py_XDECREF(interned);
    return out;
}

/* ---- db_execute: small queries, text results ------------------------------------------------------ */

static PyObject *cell(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        Py_RETURN_NONE;
    const char *v = PQgetvalue(res, row, col);
    switch (PQftype(res, col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        return PyLong_FromString(v, NULL, 10);
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        return PyFloat_FromDouble(strtod(v, NULL));
    case OID_BOOL:
        return PyBool_FromLong(v[0] == 't');
    case OID_BYTEA: {
        size_t n;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)v, &n);
        if (!raw)
            return PyErr_NoMemory();
        PyObject *b = PyBytes_FromStringAndSize((const char *)raw, (Py_ssize_t)n);
        PQfreemem(raw);
        return b;
    }
    default:
        return PyUnicode_DecodeUTF8(v, PQgetlength(res, row, col), "replace");
    }
}

static PyObject *rows_of(PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    PyObject *rows = PyList_New(nrows);
    for (int r = 0; rows && r < nrows; r++) {
        PyObject *t = PyTuple_New(ncols);
        if (!t) {
            Py_CLEAR(rows);
            break;
        }
        for (int c = 0; c < ncols; c++) {
            PyObject *v = cell(res, r, c);
            if (!v) {
                Py_DECREF(t);
                Py_CLEAR(rows);
                break;
            }
            PyTuple_SET_ITEM(t, c, v);
        }
        if (rows)
            PyList_SET_ITEM(rows, r, t);
    }
    return rows;
}

/* COPY ... FROM STDIN with data[0..len) (COPY's text format) as its whole input. Called
 * without the GIL: data belongs to a bytes object the caller holds. */
static PGresult *copy_in(PGconn *c, const char *query, const char *data, Py_ssize_t len)
{
    PGresult *res = PQexec(c, query);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return res;
    PQclear(res);
    int ok = 1;
    for (Py_ssize_t at = 0; ok && at < len; at += 1 << 20) {
        Py_ssize_t n = len - at < (1 << 20) ? len - at : (1 << 20);
        ok = PQputCopyData(c, data + at, (int)n) == 1;
    }
    PQputCopyEnd(c, ok ? NULL : "could not send the data");
    res = PQgetResult(c);
    PGresult *extra;
    while ((extra = PQgetResult(c)))
        PQclear(extra);
    return res;
}

static int is_copy(const char *query)
{
    while (*query == ' ' || *query == '\n' || *query == '\t')
        query++;
    return strncasecmp(query, "COPY", 4) == 0;
}

/* One statement, ready to run without the GIL: its parameters as C strings, or for a COPY
 * statement its data (bytes, passed where the parameters would be). */
struct statement {
    const char *query;
    struct params p;
    const char *data;
    Py_ssize_t len;
    int copy;
};

/* Fills s from (query, params); the strings stay valid while the caller holds the tuple. */
static int prepare(PyObject *item, struct statement *s)
{
    memset(s, 0, sizeof(*s));
    PyObject *params;
    if (!PyArg_ParseTuple(item, "sO", &s->query, &params))
        return -1;
    if (is_copy(s->query) && PyBytes_Check(params)) {
        s->copy = 1;
        s->data = PyBytes_AS_STRING(params);
        s->len = PyBytes_GET_SIZE(params);
        return 0;
    }
    return build_params(params, &s->p);
}

/* Runs a prepared statement; call without the GIL. Returns the PGresult (caller clears). */
static PGresult *execute(PGconn *c, struct statement *s)
{
    if (s->copy)
        return copy_in(c, s->query, s->data, s->len);
    return PQexecParams(c, s->query, s->p.n, NULL, (const char *const *)s->p.values,
                        s->p.lengths, s->p.formats, 0);
}

static int succeeded(PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Runs one statement with the network wait outside the GIL, so Python threads (the export's
 * producer) compute while the server works. Returns the PGresult (caller clears) or NULL
 * with DatabaseError set. */
static PGresult *run(PGconn *c, PyObject *item)
{
    struct statement s;
    if (prepare(item, &s) < 0)
        return NULL;
    PGresult *res;
    Py_BEGIN_ALLOW_THREADS
    res = execute(c, &s);
    Py_END_ALLOW_THREADS
    free_params(&s.p);
    if (!succeeded(res)) {
        raise_result(c, res);
        PQclear(res);
        return NULL;
    }
    return res;
}

static PyObject *result_dict(PGresult *res)
{
    PyObject *rows = rows_of(res);
    const char *affected = PQcmdTuples(res);
    return rows ? Py_BuildValue("{sNsL}", "rows", rows, "affected",
                                (long long)(affected && *affected ? atoll(affected) : 0))
                : NULL;
}

static PyObject *db_execute(PyObject *self, PyObject *args)
{
    (void)self;
    PGconn *c = connection();
    if (!c)
        return NULL;
    PGresult *res = run(c, args); /* args is the (query, params) pair */
    if (!res)
        return NULL;
    PyObject *out = result_dict(res);
    PQclear(res);
    return out;
}

/* ---- db_transaction: statements in one transaction, retried on 40001 ------------------------------ */

/* 40001 serialization failure, 40P01 deadlock, and, when the caller allows it, 23505: a
 * unique key a concurrent writer took first (two exports of one model racing under READ
 * COMMITTED; the retry deletes and writes the lists again). A 23505 that keeps coming is a
 * real duplicate: a few tries only. */
static int is_retryable(PGresult *failed, int unique_retries_left)
{
    const char *state = failed ? PQresultErrorField(failed, PG_DIAG_SQLSTATE) : NULL;
    return state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
                     (strcmp(state, "23505") == 0 && unique_retries_left > 0));
}

static void sleep_backoff(int attempt)
{
    long ms = 10L << (attempt < 7 ? attempt : 7);
    if (ms > 1000)
        ms = 1000;
    ms += rand() % (ms / 2 + 1);
    Py_BEGIN_ALLOW_THREADS
    usleep((useconds_t)ms * 1000);
    Py_END_ALLOW_THREADS
}

struct attempt {
    long long affected;
    PGresult *rows;   /* the last statement's result that returned rows, or NULL */
    PGresult *failed; /* the first failure (a NULL result is a lost connection) */
    int ok;
};

/* BEGIN, the statements, COMMIT (or ROLLBACK after a failure): one attempt, run without the
 * GIL from start to end. Holding it between statements would make each statement wait for
 * a Python thread's switch interval (5 ms) before the next one could start, and COMMIT
 * waits for the server's WAL flush. */
static void attempt_transaction(PGconn *c, struct statement *stmts, Py_ssize_t n, struct attempt *a)
{
    memset(a, 0, sizeof(*a));
    PGresult *res = PQexec(c, "BEGIN");
    for (Py_ssize_t i = -1; i <= n; i++) {
        if (i == n)
            res = PQexec(c, "COMMIT");
        else if (i >= 0)
            res = execute(c, &stmts[i]);
        if (!succeeded(res)) {
            a->failed = res;
            if (PQstatus(c) == CONNECTION_OK)
                PQclear(PQexec(c, "ROLLBACK"));
            return;
        }
        const char *count = PQcmdTuples(res);
        a->affected += count && *count ? atoll(count) : 0;
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            PQclear(a->rows);
            a->rows = res;
        } else {
            PQclear(res);
        }
    }
    a->ok = 1;
}

static void free_statements(struct statement *stmts, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; stmts && i < n; i++)
        free_params(&stmts[i].p);
    PyMem_Free(stmts);
}

/* The statements of a (query, params) list, prepared while the GIL is held; NULL on error. */
static struct statement *prepare_all(PyObject *fast, Py_ssize_t n)
{
    struct statement *stmts = PyMem_Calloc(n ? (size_t)n : 1, sizeof(*stmts));
    if (!stmts)
        return (struct statement *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (prepare(PySequence_Fast_GET_ITEM(fast, i), &stmts[i]) < 0) {
            free_statements(stmts, i);
            return NULL;
        }
    }
    return stmts;
}

static PyObject *db_transaction(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *statements;
    int max_retries = 20, retry_unique = 0, slot = 0;
    if (!PyArg_ParseTuple(args, "O|ipi", &statements, &max_retries, &retry_unique, &slot))
        return NULL;
    if (slot < 0 || slot >= DB_SLOTS)
        return PyErr_Format(PyExc_ValueError, "slot must be 0..%d", DB_SLOTS - 1);
    int unique_retries_left = retry_unique ? 3 : 0;
    PyObject *fast = PySequence_Fast(statements, "statements must be a list of (query, params)");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    struct statement *stmts = prepare_all(fast, n);
    PyObject *out = NULL;
    for (int retries = 0; stmts;) {
        PGconn *c = connection_of(slot);
        if (!c)
            break;
        struct attempt a;
        busy[slot] = 1;
        Py_BEGIN_ALLOW_THREADS
        attempt_transaction(c, stmts, n, &a);
        Py_END_ALLOW_THREADS
        busy[slot] = 0;
        if (a.ok) {
            PyObject *rows = a.rows ? rows_of(a.rows) : PyList_New(0);
            PQclear(a.rows);
            out = rows ? Py_BuildValue("{sisLsN}", "retries", retries, "affected", a.affected,
                                       "rows", rows) : NULL;
            break;
        }
        PQclear(a.rows);
        int retry = is_retryable(a.failed, unique_retries_left) && retries < max_retries;
        const char *state = a.failed ? PQresultErrorField(a.failed, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "23505") == 0)
            unique_retries_left--; /* the few tries are for 23505 only */
        raise_result(c, a.failed);
        PQclear(a.failed);
        if (!retry)
            break;
        PyErr_Clear();
        sleep_backoff(retries++);
        if (deadline_raise_if_expired())
            break; /* the call's timeout_ms passed while we waited to retry */
    }
    free_statements(stmts, n);
    Py_DECREF(fast);
    return out;
}

/* ---- db_info --------------------------------------------------------------------------------------- */

static PyObject *db_info(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PGconn *conn = conns[0];
    int connected = conn && PQstatus(conn) == CONNECTION_OK;
    PyObject *version = Py_None;
    Py_INCREF(version);
    if (connected) {
        const char *v = PQparameterStatus(conn, "server_version");
        if (v) {
            Py_DECREF(version);
            version = PyUnicode_FromString(v);
        }
    }
    return Py_BuildValue("{sOsOsN}", "configured", conninfo ? Py_True : Py_False, "connected",
                         connected ? Py_True : Py_False, "server_version", version);
}

/* Closes the extra writers' connections (slots 1..) once an export is done with them. */
static PyObject *db_release(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    for (int slot = 1; slot < DB_SLOTS; slot++)
        if (!busy[slot]) /* one still busy is closed by a later release */
            drop_connection(slot);
    Py_RETURN_NONE;
}

static PyMethodDef db_methods[] = {
    {"db_columns", db_columns, METH_VARARGS,
     "db_columns(query, params) -> {names, columns: [(kind, data, nulls, first_null)], rows}"},
    {"db_execute", db_execute, METH_VARARGS, "db_execute(query, params) -> {rows, affected}"},
    {"db_transaction", db_transaction, METH_VARARGS,
     "db_transaction([(query, params)], max_retries=20, retry_unique=False, slot=0) -> "
     "{retries, affected, rows}"},
    {"db_release", db_release, METH_NOARGS, "db_release(): close the connections of slots 1.."},
    {"db_info", db_info, METH_NOARGS, "db_info() -> {configured, connected, server_version}"},
    {NULL, NULL, 0, NULL},
};

int db_module_init(PyObject *module)
{
    if (!database_error) {
        database_error = PyErr_NewExceptionWithDoc(
            "_uro_port.DatabaseError", "A database failure: args are (sqlstate, message).",
            PyExc_Exception, NULL);
        if (!database_error)
            return -1;
    }
    if (PyModule_AddObjectRef(module, "DatabaseError", database_error) < 0)
        return -1;
    return PyModule_AddFunctions(module, db_methods);
}
