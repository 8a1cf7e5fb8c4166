/*
 * db_connection.c: the database plane's connections and errors (see db.h, db_private.h).
 *
 * Lazy: the first database call connects. When the connection is lost the call that saw it
 * fails with DatabaseError, and the next call reconnects; after a failed connect the next
 * attempt waits 100 ms, doubling to 5 s, and calls inside that window fail at once with
 * SQLSTATE 08001 rather than each paying a connect timeout.
 *
 * A connect runs without the GIL and is bounded (db_wait.c) by connect_timeout: 5 s unless
 * URO_REC_DB_CONNECT_TIMEOUT (--db-connect-timeout) or the conninfo says otherwise. TCP
 * keepalives are on (idle 30 s, then 3 probes 10 s apart), so a peer that vanished without a
 * word is noticed in about a minute even by a call without a deadline; the conninfo's own
 * keepalives_* settings win. An idle connection whose server has closed it (a restart) is
 * noticed before it is used, and replaced.
 *
 * Also here: the _uro_port functions that only look at connections (db_info, db_release), and
 * the table of every db_* function Python reaches.
 */
#include "db_private.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "stats.h"

static char *conninfo;
static char connect_timeout[16] = "5"; /* seconds, the default of the conninfo's */
static PGconn *conns[DB_SLOTS];
/* A slot whose transaction runs without the GIL right now. The GIL guards this flag: a
 * thread that gives up on an export early (its call timed out) must not let the next
 * export close or reuse a connection another thread is still inside. */
static int busy[DB_SLOTS];
static uint64_t next_attempt_us;
static unsigned long long connects; /* connections made for slot 0, the commands' */
static uint64_t backoff_us;
static PyObject *database_error;

/* ---- errors ------------------------------------------------------------------------------- */

PyObject *db_raise(const char *sqlstate, const char *message)
{
    PyObject *args = Py_BuildValue("(ss)", sqlstate ? sqlstate : "XX000", message ? message : "");
    if (args) {
        PyErr_SetObject(database_error, args);
        Py_DECREF(args);
    }
    return NULL;
}

PyObject *db_raise_result(PGconn *c, PGresult *res)
{
    int seconds = 0;
    int why = db_wait_take_timeout(&seconds);
    if (why == DB_WAIT_CALL)
        return deadline_raise_now();
    if (why == DB_WAIT_CONNECT) {
        char msg[128];
        snprintf(msg, sizeof(msg), "could not connect within connect_timeout (%d s)", seconds);
        return db_raise("08001", msg);
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
    if (!state && c && PQstatus(c) == CONNECTION_BAD)
        state = "08006"; /* connection failure */
    return db_raise(state, msg && *msg ? msg : PQerrorMessage(c));
}

/* ---- connection ----------------------------------------------------------------------------- */

/* A setting that is not a whole number of seconds in 0..86400 keeps the default: atoi would
 * read "5s" as 5 but "abc" or "-1" as 0, which libpq takes as "no bound at all". Said on
 * stderr (fd 2: the frames do not exist yet when this runs). */
static void set_connect_timeout(const char *t)
{
    char *end;
    errno = 0;
    long v = strtol(t, &end, 10);
    if (errno || end == t || *end || v < 0 || v > 86400) {
        fprintf(stderr, "uro_recommender: connect timeout %s is not 0..86400 seconds; using %s\n",
                t, connect_timeout);
        return;
    }
    snprintf(connect_timeout, sizeof(connect_timeout), "%ld", v);
}

void db_configure(const char *info)
{
    free(conninfo);
    conninfo = info && *info ? strdup(info) : NULL;
    const char *t = getenv("URO_REC_DB_CONNECT_TIMEOUT");
    if (t && *t)
        set_connect_timeout(t);
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

/* Our defaults come before the conninfo (expanded from dbname), so the conninfo's win. */
static const char *const connect_keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                           "keepalives_interval", "keepalives_count", "dbname",
                                           NULL};

/* Connects the slot, without the GIL (the slot is busy meanwhile, so no other thread takes
 * it), keeping the backoff: the connection, or NULL with DatabaseError set. */
static PGconn *open_connection(int slot, uint64_t now)
{
    const char *values[] = {connect_timeout, "1", "30", "10", "3", conninfo, NULL};
    PGconn *conn;
    busy[slot] = 1;
    Py_BEGIN_ALLOW_THREADS
    conn = db_wait_connect(connect_keys, values);
    Py_END_ALLOW_THREADS
    busy[slot] = 0;
    conns[slot] = conn;
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", conn ? PQerrorMessage(conn) : "out of memory");
        drop_connection(slot);
        backoff_us = backoff_us ? (backoff_us * 2 > 5000000 ? 5000000 : backoff_us * 2) : 100000;
        next_attempt_us = now + backoff_us;
        if (db_wait_timed_out())
            db_raise_result(NULL, NULL); /* the call's deadline or connect_timeout */
        else
            db_raise("08001", msg);
        return NULL;
    }
    backoff_us = 0;
    next_attempt_us = 0;
    if (slot == 0)
        connects++;
    /* Notices ("relation already exists, skipping") are not errors: keep them off stderr.
     * (A NULL processor would be ignored by libpq: it needs a function.) */
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

/* An idle connection the server has closed (a restart, an idle timeout) or that the kernel
 * found dead (keepalives) has something to read or an error: one poll(2) without waiting. */
static int is_stale(PGconn *conn)
{
    struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
    if (p.fd < 0)
        return 1;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    return (p.revents & (POLLERR | POLLHUP | POLLNVAL)) || !PQconsumeInput(conn) ||
           PQstatus(conn) != CONNECTION_OK;
}

/* The GIL keeps the backoff state consistent between an export's writer threads. */
PGconn *db_connection_of(int slot)
{
    db_wait_take_timeout(NULL); /* a new statement: nothing has timed out yet */
    if (busy[slot]) {
        db_raise("55006", "this connection slot is still busy with an earlier transaction");
        return NULL;
    }
    PGconn *conn = conns[slot];
    if (conn && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE &&
        !is_stale(conn))
        return conn;
    drop_connection(slot);
    if (!conninfo) {
        db_raise("08001", "no database configured: start the port with --database-url or "
                          "DATABASE_URL");
        return NULL;
    }
    uint64_t now = stats_now_us();
    if (now < next_attempt_us) {
        db_raise("08001", "database unreachable; next reconnect attempt after backoff");
        return NULL;
    }
    return open_connection(slot, now);
}

void db_set_busy(int slot, int is_busy)
{
    busy[slot] = is_busy;
}

/* ---- db_info, db_release --------------------------------------------------------------------- */

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
    unsigned long long timeouts, cancels;
    db_wait_counts(&timeouts, &cancels);
    return Py_BuildValue("{sOsOsNsKsKsK}", "configured", conninfo ? Py_True : Py_False,
                         "connected", connected ? Py_True : Py_False, "server_version", version,
                         "connects", connects, "timeouts", timeouts, "cancels", cancels);
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

/* ---- the _uro_port functions ----------------------------------------------------------------- */

static PyMethodDef db_methods[] = {
    {"db_columns", db_columns, METH_VARARGS,
     "db_columns(query, params) -> {names, columns: [(kind, data, nulls, first_null)], rows}"},
    {"db_execute", db_execute, METH_VARARGS, "db_execute(query, params) -> {rows, affected}"},
    {"db_transaction", db_transaction, METH_VARARGS,
     "db_transaction([(query, params)], max_retries=20, retry_unique=False, slot=0) -> "
     "{retries, affected, rows}"},
    {"db_release", db_release, METH_NOARGS, "db_release(): close the connections of slots 1.."},
    {"db_info", db_info, METH_NOARGS, "db_info() -> {configured, connected, server_version, connects, timeouts, cancels}"},
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
