/*
 * db_private.h: what the three files of the database plane share (db.h is its public face).
 *
 *   db_connection.c  the connection slots, lazy connect and its backoff, DatabaseError, db_info,
 *                    db_release, and the _uro_port function table
 *   db_columns.c     db_columns: binary results streamed into typed columns
 *   db_execute.c     query parameters, db_execute, COPY, and db_transaction's retry loop
 *
 * Where the port waits for the server: making a connection (open_connection in db_connection.c) and
 * every statement's results (the functions of db_execute.c declared below; db_columns reads
 * its rows through db_next_result). A bound on those waits, or a cancel, goes there.
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

/* Sends query with p in single-row mode with binary results. 0, or -1 with DatabaseError set
 * (the connection then drained). Rows come from db_next_result. */
int db_send_streaming(PGconn *c, const char *query, const struct db_params *p);

/* The next result of the query in flight, NULL when there is none (PQgetResult). */
PGresult *db_next_result(PGconn *c);

/* Reads and drops what is left of a query, so the connection can be reused. */
void db_drain(PGconn *c);

/* ---- db_columns.c ----------------------------------------------------------------------- */

PyObject *db_columns(PyObject *self, PyObject *args);

/* ---- db_execute.c: the functions of _uro_port --------------------------------------------- */

PyObject *db_execute(PyObject *self, PyObject *args);
PyObject *db_transaction(PyObject *self, PyObject *args);

#endif
