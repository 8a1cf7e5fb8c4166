/*
 * db_execute.c: statements (see db_private.h): query parameters, db_execute, COPY, and
 * db_transaction with CockroachDB's retry protocol.
 *
 * Transactions (db_transaction). CockroachDB runs SERIALIZABLE and asks clients to retry on
 * SQLSTATE 40001. We retry the whole transaction (ROLLBACK, wait, BEGIN again), which is what
 * both CockroachDB and PostgreSQL accept; the wait grows 10 ms, 20 ms, ... up to 1 s, with
 * jitter, up to max_retries times. Each attempt, BEGIN to COMMIT, runs without the GIL: the
 * statements are turned into C strings first, and the rows come back to Python after.
 *
 * Statements are sent and their results awaited through db_wait.c, which bounds every wait
 * by the call's deadline: a statement still running then is cancelled, and the call fails
 * with CallTimeout (a transaction is then not rolled back here: its connection is closed by
 * the next db_connection_of, and the server rolls it back).
 */
#include "db_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "deadline.h"
#include "stats.h"

/* ---- parameters: Python values as text (bytes as binary) ------------------------------------ */

void db_free_params(struct db_params *p)
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

int db_build_params(PyObject *seq, struct db_params *p)
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
        db_free_params(p);
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
            db_free_params(p);
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

/* ---- the results of a query in flight -------------------------------------------------------- */

int db_send_streaming(PGconn *c, const char *query, const struct db_params *p)
{
    if (!PQsendQueryParams(c, query, p->n, NULL, (const char *const *)p->values, p->lengths,
                           p->formats, 1) ||
        !PQsetSingleRowMode(c) || db_wait_flush(c, 1) < 0) {
        int timed_out = db_wait_timed_out();
        db_raise_result(c, NULL);
        if (!timed_out)
            db_drain(c, 1);
        return -1;
    }
    return 0;
}

void db_drain(PGconn *c, int gil)
{
    PGresult *r;
    while (!db_wait_timed_out() && (r = db_wait_result(c, gil)))
        PQclear(r);
}

/* ---- db_execute: small queries, text results ------------------------------------------------- */

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
 * without the GIL: data belongs to a bytes object the caller holds. NULL: timed out. */
static PGresult *copy_in(PGconn *c, const char *query, const char *data, Py_ssize_t len)
{
    PGresult *res = db_wait_exec(c, query, NULL, 0);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return res;
    PQclear(res);
    int ok = 1;
    for (Py_ssize_t at = 0; ok && at < len; at += 1 << 20) {
        Py_ssize_t n = len - at < (1 << 20) ? len - at : (1 << 20);
        ok = db_wait_put_copy(c, data + at, (int)n) == 0;
    }
    if (db_wait_timed_out())
        return NULL;
    /* nonblocking: 0 means the buffer was full; flush and say it again */
    int ended;
    while ((ended = PQputCopyEnd(c, ok ? NULL : "could not send the data")) == 0)
        if (db_wait_flush(c, 0) < 0)
            break;
    if (ended < 0 || db_wait_flush(c, 0) < 0)
        return db_wait_timed_out() ? NULL : PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
    res = db_wait_result(c, 0);
    db_drain(c, 0);
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
    struct db_params p;
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
    return db_build_params(params, &s->p);
}

/* Runs a prepared statement; call without the GIL. Returns the PGresult (caller clears). */
static PGresult *execute(PGconn *c, struct statement *s)
{
    if (s->copy)
        return copy_in(c, s->query, s->data, s->len);
    return db_wait_exec(c, s->query, &s->p, 0);
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
    db_free_params(&s.p);
    if (!succeeded(res)) {
        db_raise_result(c, res);
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

PyObject *db_execute(PyObject *self, PyObject *args)
{
    (void)self;
    PGconn *c = db_connection_of(0);
    if (!c)
        return NULL;
    PGresult *res = run(c, args); /* args is the (query, params) pair */
    if (!res)
        return NULL;
    PyObject *out = result_dict(res);
    PQclear(res);
    return out;
}

/* ---- db_transaction: statements in one transaction, retried on 40001 ------------------------- */

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

/* Waits before a retry, never past the call's deadline: 1 when that has passed. */
static int sleep_backoff(int attempt)
{
    long ms = 10L << (attempt < 7 ? attempt : 7);
    if (ms > 1000)
        ms = 1000;
    ms += rand() % (ms / 2 + 1);
    uint64_t us = (uint64_t)ms * 1000, due = deadline_due_us(), now = stats_now_us();
    if (due && now + us > due)
        us = due > now ? due - now : 0;
    Py_BEGIN_ALLOW_THREADS
    usleep((useconds_t)us);
    Py_END_ALLOW_THREADS
    return due && stats_now_us() >= due;
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
    PGresult *res = db_wait_exec(c, "BEGIN", NULL, 0);
    for (Py_ssize_t i = -1; i <= n; i++) {
        if (i == n)
            res = db_wait_exec(c, "COMMIT", NULL, 0);
        else if (i >= 0)
            res = execute(c, &stmts[i]);
        if (!succeeded(res)) {
            a->failed = res;
            if (PQstatus(c) == CONNECTION_OK && !db_wait_timed_out())
                PQclear(db_wait_exec(c, "ROLLBACK", NULL, 0));
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
        db_free_params(&stmts[i].p);
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

PyObject *db_transaction(PyObject *self, PyObject *args)
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
        PGconn *c = db_connection_of(slot);
        if (!c)
            break;
        struct attempt a;
        db_set_busy(slot, 1);
        Py_BEGIN_ALLOW_THREADS
        attempt_transaction(c, stmts, n, &a);
        Py_END_ALLOW_THREADS
        db_set_busy(slot, 0);
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
        db_raise_result(c, a.failed);
        PQclear(a.failed);
        if (!retry)
            break;
        PyErr_Clear();
        if (sleep_backoff(retries++)) {
            deadline_raise_now(); /* the call's timeout_ms passed while we waited to retry */
            break;
        }
    }
    free_statements(stmts, n);
    Py_DECREF(fast);
    return out;
}
