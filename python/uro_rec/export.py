"""Rows the port writes into uro's tables: export's top-N lists and observe's events.

``export`` ranks users in blocks and writes their lists in batches of about ``batch_size``
rows. Each batch deletes its users' rows and writes the new ones in one transaction,
retried as a whole (``c_src/db_execute.c``). A producer thread computes the batches;
``writers`` threads (the calling one and writers - 1 more, each on its own connection) take
them from a short queue and run their transactions without the GIL. One server connection
is one server process: it writes a batch on one core, and a second one doubles what the
server can take (batches never share a user, so they cannot conflict with each other).

A server may refuse COPY: CockroachDB lets only members of the ``admin`` role run it
(docs/COCKROACHDB.md). A batch whose COPY is refused (42501 insufficient privilege, 0A000
feature not supported) is written again with the insert method, and so is the rest of the
export, and every export while the port's connection lasts: logged once, counted in
``info`` (``database.copy_fallbacks``).

``append_events`` stores observed interactions in one statement. Both pass arrays as
``$n::T[]`` text literals: a few parameters per statement, whatever its size, instead of a
few per row.
"""
import queue
import threading
import time

from . import db, faults, ids
from . import recommend as rec
from .errors import PortError
from .port import A, log

#: Users ranked per recommend_many call: the first batch reaches the server after ~10 ms.
RANK_BLOCK = 512


def array_literal(values):
    """A text array literal for one $n::TEXT[] parameter; ids as their text (uro_rec.ids)."""
    out = []
    for v in values:
        s = ids.to_text(v)
        out.append('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


def number_literal(values):
    return "{" + ",".join(repr(float(v)) if isinstance(v, float) else str(int(v))
                          for v in values) + "}"


# ---- export ------------------------------------------------------------------------------

#: SQLSTATEs of a COPY the server will not run: insufficient privilege, feature not supported.
COPY_REFUSED = ("42501", "0A000")

#: db.info()'s ``connects`` when COPY was last refused: the port's connection then (None: never).
_copy_refused_on = None


def export(entry, users, n, table, batch_size, method, writers):
    """Top-``n`` lists of ``users`` (validated ids) into ``table``; the reply map."""
    ro = rec.parse_opts(entry, {"scores": True}, "export")
    writers = min(writers, max(1, -(-len(users) * n // batch_size)))  # no idle connections
    started = time.perf_counter()
    lists = (pair for start in range(0, len(users), RANK_BLOCK)
             for pair in rec.recommend_many(entry, users[start:start + RANK_BLOCK], n, ro))
    with rec.collector_paused():
        rows, batches, retries = write_lists(entry.name, entry.version or 0, lists, table,
                                             batch_size, "export", method, writers)
    return {A("rows"): rows, A("batches"): batches, A("retries"): retries,
            A("seconds"): time.perf_counter() - started}


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _batch_statements(table, model, version, batch, method, texts):
    """One batch of (user, [(item, score)]) pairs: delete the batch's users' rows, write
    their new lists. ``texts`` caches each id's escaped COPY text for the whole export."""
    delete = (f"DELETE FROM {table} WHERE model = $1 AND user_id = ANY($2::TEXT[])",
              [model, array_literal([user for user, _ in batch])])
    if method == "copy":
        head = (str(model).translate(_COPY_ESCAPES) + "\t").encode()
        payload, _ = db.copy_rows(head, f"\t{int(version)}\n".encode(), batch, texts,
                                  ids.to_text)
        write = faults.copy_statement((f"COPY {table} (model, user_id, rank, item_id, score, "
                                       f"model_version) FROM STDIN", payload))
    else:
        us = [user for user, scored in batch for _ in scored]
        rs = [rank for _, scored in batch for rank in range(1, len(scored) + 1)]
        its = [item for _, scored in batch for item, _ in scored]
        ss = [score for _, scored in batch for _, score in scored]
        write = (f"INSERT INTO {table} (model, user_id, rank, item_id, score, model_version) "
                 f"SELECT $1, u, r, i, s, $2 FROM unnest($3::TEXT[], $4::INT8[], $5::TEXT[], "
                 f"$6::FLOAT8[]) AS x(u, r, i, s) "
                 f"ON CONFLICT (model, user_id, rank) DO UPDATE SET item_id = excluded.item_id, "
                 f"score = excluded.score, model_version = excluded.model_version, "
                 f"created_at = now()",
                 [model, version, array_literal(us), number_literal(rs),
                  array_literal(its), number_literal(ss)])
    return [delete, write]


def _batches(lists, batch_size, w):
    """(batch, rows, method, statements) per batch of about batch_size rows, written with
    the export's method of the moment; a user's list never splits. Stops early once
    ``w.stop`` is set (the export failed or timed out)."""
    batch, rows = [], 0
    for pair in lists:
        if w.stop.is_set():
            return
        batch.append(pair)
        rows += len(pair[1])
        if rows >= batch_size:
            yield w.prepared(batch, rows)
            batch, rows = [], 0
    if batch:
        yield w.prepared(batch, rows)


def _connects():
    """How many connections the port has made for its commands: which connection is this."""
    return db.info().get(A("connects"))


def _copy_refused(exc):
    """True when exc is the server refusing to run a COPY."""
    return (isinstance(exc, PortError) and exc.kind == "database"
            and isinstance(exc.detail, dict) and exc.detail.get(A("sqlstate")) in COPY_REFUSED)


def _join_all(threads):
    """Joins every thread, even when an exception (the call's timeout) arrives while
    waiting: no export thread may outlive its call. Raises that exception afterwards."""
    arrived = None
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except BaseException as exc:
                arrived = arrived or exc
    if arrived is not None:
        raise arrived


class _Writers:
    """The hand-over between the producer and the writers: a short queue, a stop flag that
    ends every thread, the first failure, and each writer's (rows, batches, retries)."""

    def __init__(self, writers, table, model, version, method):
        self.pending = queue.Queue(maxsize=2 * writers)
        self.stop = threading.Event()
        self.failures = []
        self.tallies = [[0, 0, 0] for _ in range(writers)]
        self.table, self.model, self.version = table, model, version
        self.texts = {}  # each id's escaped COPY text, for the whole export
        self.method = method
        if method == "copy" and _copy_refused_on is not None and _copy_refused_on == _connects():
            self.method = "insert"  # refused before on this connection: not asked again
        self.switch = threading.Lock()

    def prepared(self, batch, rows, method=None):
        method = method or self.method
        return batch, rows, method, _batch_statements(self.table, self.model, self.version,
                                                      batch, method, self.texts)

    def refused_copy(self):
        """The server refused COPY: INSERT from now on (once per export, logged once)."""
        global _copy_refused_on
        with self.switch:
            if self.method != "copy":
                return
            self.method = "insert"
            db.copy_fallbacks += 1
            _copy_refused_on = _connects()
        log("warning", "export: the database refused COPY (insufficient privilege or not "
                       "supported); writing with INSERT for the rest of this export and for "
                       "later ones while this connection lasts")

    def commit(self, item, slot):
        """Writes one batch; a refused COPY is written again with INSERT. Its retries."""
        batch, rows, method, statements = item
        try:
            return db.transaction(statements, retry_unique=True, slot=slot)["retries"]
        except PortError as exc:
            if method != "copy" or not _copy_refused(exc):
                raise
        self.refused_copy()
        statements = self.prepared(batch, rows, "insert")[3]
        return db.transaction(statements, retry_unique=True, slot=slot)["retries"]

    def hand_over(self, item):
        """Queues item unless the export has stopped (nobody reads any more)."""
        while not self.stop.is_set():
            try:
                self.pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(self, batches):
        try:
            for batch in batches:
                if not self.hand_over(batch):
                    return
            for _ in self.tallies:  # one end mark per writer
                self.hand_over(None)
        except BaseException as exc:  # handed to a writer, which raises it
            self.hand_over(exc)

    def write(self, slot):
        tally = self.tallies[slot]
        while not self.stop.is_set():
            try:
                item = self.pending.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            tally[2] += self.commit(item, slot)
            tally[0] += item[1]
            tally[1] += 1

    def write_in_thread(self, slot):
        try:
            self.write(slot)
        except BaseException as exc:  # the first failure ends the export
            self.failures.append(exc)
            self.stop.set()


def write_lists(model, version, lists, table, batch_size, where="export", method="copy",
                writers=2):
    """Replaces each user's rows with ``lists``' [(item, score)], about ``batch_size`` rows
    per transaction, through ``writers`` connections (see the module doc). Returns rows,
    batches, retries."""
    table = db.check_table(table, where)
    w = _Writers(writers, table, model, version, method)
    batches = _batches(lists, batch_size, w)
    threads = [threading.Thread(target=w.produce, args=(batches,), name="uro_rec-export",
                                daemon=True)]
    threads += [threading.Thread(target=w.write_in_thread, args=(slot,),
                                 name=f"uro_rec-writer-{slot}", daemon=True)
                for slot in range(1, writers)]
    for t in threads:
        t.start()
    try:
        w.write(0)
        for t in threads[1:]:
            t.join()  # their last transactions
    finally:
        w.stop.set()
        _join_all(threads)
        if writers > 1:
            db.release()
    if w.failures:
        raise w.failures[0]
    return tuple(sum(t[i] for t in w.tallies) for i in range(3))


# ---- observe's events -----------------------------------------------------------------------

def append_events(events, table="uro_rec_interactions"):
    """Appends observed (user, item, label, time) events in one statement."""
    table = db.check_table(table, "observe")
    users, items, labels, times = zip(*events)
    q = (f"INSERT INTO {table} (user_id, item_id, label, created_at) "
         f"SELECT u, i, l, TIMESTAMPTZ '1970-01-01 00:00:00+00' + t * INTERVAL '1 second' "
         f"FROM unnest($1::TEXT[], $2::TEXT[], "
         f"$3::FLOAT8[], $4::FLOAT8[]) AS x(u, i, l, t)")
    return db.transaction([(q, [array_literal(users), array_literal(items),
                                number_literal([float(l) for l in labels]),
                                number_literal([float(t) for t in times])])])
