/*
 * db_wait.c: every wait of the database plane on a libpq socket, bounded (see db_private.h).
 *
 * The connections are nonblocking: a connect is PQconnectStartParams + PQconnectPoll, a
 * statement is PQsendQuery* + PQflush, and its results come through PQconsumeInput/PQisBusy.
 * Between them the thread sleeps in poll(2) on the connection's socket, with a timeout
 * computed from the call's deadline (deadline_due_us: CallOpts timeout_ms) and, for a connect,
 * from its connect_timeout. So a silent server, a partition, or a load balancer that holds a
 * socket costs a call at most its timeout_ms, never the port.
 *
 * When the deadline passes while a statement runs, the server is asked to cancel it (PQcancel,
 * on a detached thread: PQcancel itself opens a connection and waits for the server, which
 * may be the silent one), and the results are awaited for CANCEL_GRACE_US more. If the
 * statement ended in that time the connection is idle again and is reused; otherwise it is
 * left busy and the next db_connection_of closes it. The call fails with CallTimeout
 * (db_raise_result asks db_wait_take_timeout).
 *
 * Callers say whether they hold the GIL: it is released only inside poll(2), and only once
 * a wait has lasted GIL_KEEP_MS, so rows already buffered or about to arrive are read
 * without a hand-over.
 */
#include "db_private.h"

#include "deadline.h"
#include "stats.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* How long a cancelled statement may take to end before its connection is given up: the
 * call answers within about this much of its deadline. */
#define CANCEL_GRACE_US 50000
/* Cancel requests in flight at once (each one a thread that waits on the server). Beyond
 * this, a stuck statement's connection is closed without asking the server first. */
#define MAX_CANCELS 4

/* Why this thread's last wait ended early: DB_WAIT_CALL, the call's deadline; DB_WAIT_CONNECT,
 * the connect timeout. Per thread: an export's writers wait at the same time. */
static __thread int why_ended;
static __thread int connect_timeout_s;

static unsigned long long timeouts, cancels;
static int cancels_in_flight;

/* ---- the one poll(2) ------------------------------------------------------------------------ */

/* poll(2) for up to ms (-1: no bound). Holding the GIL, the first GIL_KEEP_MS are waited
 * with it held: rows of a stream arrive within microseconds, and handing the GIL over and
 * back for each wait cost a streamed query 17 % (bench/db_waits_bench.escript). A wait
 * longer than that (the server is slow or silent) releases it, so that other threads run. */
#define GIL_KEEP_MS 10

static int poll_once(struct pollfd *p, int ms, int gil)
{
    if (!gil)
        return poll(p, 1, ms);
    int first = ms >= 0 && ms < GIL_KEEP_MS ? ms : GIL_KEEP_MS;
    int r = poll(p, 1, first);
    if (r != 0 || ms == first)
        return r;
    Py_BEGIN_ALLOW_THREADS
    r = poll(p, 1, ms < 0 ? -1 : ms - first);
    Py_END_ALLOW_THREADS
    return r;
}

/* Waits until the socket is ready for events or until due_us (0: no bound). 1 ready, 0 the
 * time passed, -1 no socket or a poll error. */
static int wait_socket(PGconn *c, short events, uint64_t due_us, int gil)
{
    int sock = PQsocket(c);
    if (sock < 0)
        return -1;
    for (;;) {
        int ms = -1;
        if (due_us) {
            uint64_t now = stats_now_us();
            if (now >= due_us)
                return 0;
            ms = (int)((due_us - now + 999) / 1000);
        }
        struct pollfd p = {.fd = sock, .events = events};
        int r = poll_once(&p, ms, gil);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static uint64_t earlier(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* ---- cancel ------------------------------------------------------------------------------- */

static void *send_cancel(void *arg)
{
    PGcancel *k = arg;
    char err[256];
    PQcancel(k, err, sizeof(err)); /* a refusal changes nothing: the connection is dropped */
    PQfreeCancel(k);
    __atomic_sub_fetch(&cancels_in_flight, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Asks the server to cancel what c runs, without waiting for the answer. */
static void request_cancel(PGconn *c)
{
    PGcancel *k = PQgetCancel(c);
    if (!k)
        return;
    if (__atomic_add_fetch(&cancels_in_flight, 1, __ATOMIC_SEQ_CST) <= MAX_CANCELS) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        int rc = pthread_create(&t, &attr, send_cancel, k);
        pthread_attr_destroy(&attr);
        if (rc == 0) {
            __atomic_add_fetch(&cancels, 1, __ATOMIC_RELAXED);
            return;
        }
    }
    __atomic_sub_fetch(&cancels_in_flight, 1, __ATOMIC_SEQ_CST);
    PQfreeCancel(k);
}

/* The deadline passed with a statement in flight: cancel it and give it CANCEL_GRACE_US to
 * end, reading (and dropping) its results, so that the connection can serve the next call. */
static void cancel_in_flight(PGconn *c, int gil)
{
    why_ended = DB_WAIT_CALL;
    __atomic_add_fetch(&timeouts, 1, __ATOMIC_RELAXED);
    request_cancel(c);
    uint64_t until = stats_now_us() + CANCEL_GRACE_US;
    for (;;) {
        while (PQisBusy(c)) {
            if (wait_socket(c, POLLIN, until, gil) <= 0 || !PQconsumeInput(c))
                return; /* still busy: db_connection_of will close it */
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            return; /* ended: the connection is idle (or in a failed transaction) */
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            return; /* not ours to finish: the connection is closed */
    }
}

/* ---- statements ----------------------------------------------------------------------------- */

int db_wait_flush(PGconn *c, int gil)
{
    uint64_t due = deadline_due_us();
    for (;;) {
        int r = PQflush(c);
        if (r <= 0)
            return r;
        int w = wait_socket(c, POLLIN | POLLOUT, due, gil);
        if (w == 0) {
            why_ended = DB_WAIT_CALL;
            __atomic_add_fetch(&timeouts, 1, __ATOMIC_RELAXED);
            request_cancel(c);
            return -1;
        }
        /* The server may answer (an error) before it reads all we send. */
        if (w < 0 || !PQconsumeInput(c))
            return -1;
    }
}

int db_wait_put_copy(PGconn *c, const char *data, int n)
{
    uint64_t due = deadline_due_us();
    for (;;) {
        int r = PQputCopyData(c, data, n);
        if (r != 0)
            return r == 1 ? 0 : -1;
        /* nonblocking and the buffer is full: wait until the socket takes more */
        int w = wait_socket(c, POLLIN | POLLOUT, due, 0);
        if (w == 0) {
            why_ended = DB_WAIT_CALL;
            __atomic_add_fetch(&timeouts, 1, __ATOMIC_RELAXED);
            request_cancel(c);
            return -1;
        }
        if (w < 0 || !PQconsumeInput(c) || PQflush(c) < 0)
            return -1;
    }
}

PGresult *db_wait_result(PGconn *c, int gil)
{
    /* A row already read needs no wait and no clock; but every 256th result the deadline is
     * checked anyway: rows that keep arriving never make us wait. */
    static __thread unsigned results;
    if (!PQisBusy(c) && (++results & 255))
        return PQgetResult(c);
    uint64_t due = deadline_due_us();
    if (due && stats_now_us() >= due) {
        cancel_in_flight(c, gil);
        return NULL;
    }
    while (PQisBusy(c)) {
        int w = wait_socket(c, POLLIN, due, gil);
        if (w == 0) {
            cancel_in_flight(c, gil);
            return NULL;
        }
        if (w < 0 || !PQconsumeInput(c)) {
            if (PQstatus(c) == CONNECTION_BAD)
                return PQgetResult(c); /* the lost connection's error, without waiting */
            return PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
        }
    }
    return PQgetResult(c);
}

/* The statement's result as PQexec would give it: the last one, or the first error, or the
 * COPY_IN that asks for data; NULL when the wait timed out. */
static PGresult *collect(PGconn *c, int gil)
{
    PGresult *kept = NULL, *r;
    while ((r = db_wait_result(c, gil))) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(kept);
            return r;
        }
        if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        PQclear(kept);
        kept = r;
    }
    if (why_ended) {
        PQclear(kept);
        return NULL;
    }
    return kept ? kept : PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
}

PGresult *db_wait_exec(PGconn *c, const char *query, const struct db_params *p, int gil)
{
    int sent = p ? PQsendQueryParams(c, query, p->n, NULL, (const char *const *)p->values,
                                     p->lengths, p->formats, 0)
                 : PQsendQuery(c, query);
    if (!sent || db_wait_flush(c, gil) < 0)
        return why_ended ? NULL : PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
    return collect(c, gil);
}

/* ---- connect -------------------------------------------------------------------------------- */

/* The connect_timeout libpq settled on (the conninfo's, else ours), in seconds; 0: none.
 * libpq reads values under 2 as 2, and so do we. */
static int effective_connect_timeout(PGconn *c)
{
    PQconninfoOption *opts = PQconninfo(c);
    int s = 0;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && *o->val)
            s = atoi(o->val);
    PQconninfoFree(opts);
    return s <= 0 ? 0 : s < 2 ? 2 : s;
}

PGconn *db_wait_connect(const char *const *keys, const char *const *values)
{
    PGconn *c = PQconnectStartParams(keys, values, 1);
    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    connect_timeout_s = effective_connect_timeout(c);
    uint64_t limit = connect_timeout_s ? stats_now_us() + (uint64_t)connect_timeout_s * 1000000u : 0;
    uint64_t call_due = deadline_due_us(), due = earlier(limit, call_due);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int w = wait_socket(c, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, due, 0);
        if (w == 0) {
            why_ended = due == call_due ? DB_WAIT_CALL : DB_WAIT_CONNECT;
            __atomic_add_fetch(&timeouts, 1, __ATOMIC_RELAXED);
            break;
        }
        if (w < 0)
            break;
        st = PQconnectPoll(c);
    }
    if (PQstatus(c) == CONNECTION_OK)
        PQsetnonblocking(c, 1);
    return c;
}

/* ---- what the waits left behind ------------------------------------------------------------ */

int db_wait_take_timeout(int *connect_timeout)
{
    int why = why_ended;
    why_ended = 0;
    if (connect_timeout)
        *connect_timeout = connect_timeout_s;
    return why;
}

int db_wait_timed_out(void)
{
    return why_ended;
}

void db_wait_counts(unsigned long long *timed_out, unsigned long long *cancelled)
{
    *timed_out = __atomic_load_n(&timeouts, __ATOMIC_RELAXED);
    *cancelled = __atomic_load_n(&cancels, __ATOMIC_RELAXED);
}
