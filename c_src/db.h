/*
 * db.h: the database (CockroachDB in production, PostgreSQL in tests) through libpq.
 *
 * Owns the connections (one for every command, up to three more for an export's extra
 * writers), reconnection with backoff, the streaming of training data into typed columns,
 * small queries, and transactions run in CockroachDB's retry protocol. Python reaches it
 * through functions of _uro_port (db_columns, db_execute, db_transaction, db_release,
 * db_info); failures raise _uro_port.DatabaseError(sqlstate, message).
 *
 * Three files by job behind this header, sharing db_private.h: db_connection.c (connections,
 * backoff, errors, info), db_columns.c (streaming into typed columns), db_execute.c
 * (parameters, statements, COPY, the transaction retry loop).
 */
#ifndef URO_DB_H
#define URO_DB_H

#include "pytypes.h"

/* Remembers the conninfo (NULL or "" for none); nothing connects until a command needs it. */
void db_configure(const char *conninfo);
int db_module_init(PyObject *module);

#endif
