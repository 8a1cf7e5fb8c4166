/*
 * db_private.h: what the three files of the database plane share (db.h is its public face).
 *
 *   db_connection.c  the connection slots, lazy connect and its backoff, DatabaseError, db_info,
 *                    db_release, and the _uro_port function table
 *   db_columns.c     db_columns: binary results streamed into typed columns
 *   db_execute.c     query parameters, db_execute, COPY, and db_transaction's retry loop
 *   db_wait.c        every wait on a libpq socket: nonblocking connect, send and results,
 *                    bounded by the call's deadline and the connect timeout; cancel
 *
 * The port waits for the server only in db_wait.c: connections are nonblocking, and no file
 * calls PQexec, PQconnectdb or a blocking PQgetResult.
 */
#ifndef URO_DB_PRIVATE_H
#define URO_DB_PRIVATE_H

#include "db.h"

#include <libpq-fe.h>

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

/* ---- db_connection.c -------------------------------------------------------------------- */

/* Raise _uro_port.DatabaseError(sqlstate, message); both return NULL. raise_result takes the
 * SQLSTATE and message of a failed result (res NULL: of the connection). */
PyObject *db_raise(const char *sqlstate, const char *message);
PyObject *db_raise_result(PGconn *c, PGresult *res);

/* The slot's healthy, idle connection (connecting when there is none), or NULL with
 * DatabaseError set. Called with the GIL. */
PGconn *db_connection_of(int slot);

/* A slot whose transaction runs without the GIL: db_connection_of refuses it, and db_release
 * leaves it open. Set and cleared with the GIL held. */
void db_set_busy(int slot, int busy);

/* ---- db_wait.c ----------------------------------------------------------------------------- */

struct db_params;

/* Why a thread's wait ended early (db_wait_take_timeout). */
#define DB_WAIT_CALL 1    /* the call's timeout_ms */
#define DB_WAIT_CONNECT 2 /* the connect timeout */

/* Connects without blocking, waiting at most the connect timeout (the conninfo's
 * connect_timeout, which keys/values default) and the call's deadline: the connection, OK
 * or not (NULL: no memory). Call without the GIL. */
PGconn *db_wait_connect(const char *const *keys, const char *const *values);

/* Sends query (with p; NULL: the simple protocol, no parameters) and collects its result as
 * PQexec would, stopping at COPY_IN. NULL when the call's deadline passed (the statement was
 * cancelled). gil: whether the caller holds the GIL (it is released around each wait). */
PGresult *db_wait_exec(PGconn *c, const char *query, const struct db_params *p, int gil);
/* The next result of the statement in flight (NULL: none, or the deadline passed). */
PGresult *db_wait_result(PGconn *c, int gil);
/* Flushes what libpq holds for the server: 0, or -1 (failed, or the deadline passed). */
int db_wait_flush(PGconn *c, int gil);
/* PQputCopyData, waiting while the socket is full: 0, or -1. Without the GIL. */
int db_wait_put_copy(PGconn *c, const char *data, int n);

/* Why this thread's last wait ended early (0: it did not; DB_WAIT_CALL, DB_WAIT_CONNECT),
 * clearing it; *connect_timeout gets the connect timeout in seconds. */
int db_wait_take_timeout(int *connect_timeout);
int db_wait_timed_out(void); /* the same, without clearing */
/* Waits ended by a deadline or connect timeout, and cancel requests sent, since start. */
void db_wait_counts(unsigned long long *timed_out, unsigned long long *cancelled);

/* ---- db_execute.c ----------------------------------------------------------------------- */

/* Query parameters from a Python list: text (bytes as binary), ready for libpq. */
struct db_params {
    int n;
    char **values;
    int *lengths;
    int *formats;
    PyObject **keep; /* owners of the value buffers */
};

int db_build_params(PyObject *seq, struct db_params *p); /* 0, or -1 with an exception */
void db_free_params(struct db_params *p);

/* Sends query with p in single-row mode with binary results (with the GIL). 0, or -1 with
 * DatabaseError set (the connection then drained). Rows come from db_wait_result. */
int db_send_streaming(PGconn *c, const char *query, const struct db_params *p);

/* Reads and drops what is left of a query, so the connection can be reused; not after a
 * timeout (the cancel did what could be done). */
void db_drain(PGconn *c, int gil);

/* ---- db_columns.c ----------------------------------------------------------------------- */

PyObject *db_columns(PyObject *self, PyObject *args);

/* ---- db_execute.c: the functions of _uro_port --------------------------------------------- */

PyObject *db_execute(PyObject *self, PyObject *args);
PyObject *db_transaction(PyObject *self, PyObject *args);

#endif
