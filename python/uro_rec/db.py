"""The database side of the port: training data from SQL, exports, the model registry.

The connection, streaming and CockroachDB's retry protocol live in C (``c_src/db.c``) and
are reached through ``_uro_port.db_*``; this module turns their results into frames and
their failures into ``{error, {database, #{sqlstate, message}}}``. SQL here is written to
run unchanged on CockroachDB v23.2+ and PostgreSQL 13+ (docs/COCKROACHDB.md lists why each
choice was made).
"""
import contextlib
import hashlib
import os
import queue
import re
import shutil
import tempfile
import threading

import numpy as np
import pandas as pd

from .errors import BadArg, PortError
from .port import A

try:  # pragma: no cover - only inside the C port
    import _uro_port as _port

    DatabaseError = _port.DatabaseError
except (ImportError, AttributeError):  # pytest outside the port: no database functions
    _port = None

    class DatabaseError(Exception):
        pass


CHUNK_BYTES = 1 << 20
SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "priv", "sql")


def database_error(exc):
    sqlstate, message = (list(exc.args) + ["XX000", ""])[:2]
    return PortError({A("sqlstate"): str(sqlstate), A("message"): str(message).strip()},
                     kind="database")


@contextlib.contextmanager
def translated():
    """Every database failure leaves as {error, {database, #{sqlstate, message}}}."""
    if _port is None:
        raise PortError("the database functions exist only inside the port", kind="internal")
    try:
        yield
    except DatabaseError as exc:
        raise database_error(exc) from None


def info():
    if _port is None:
        return {A("configured"): False, A("connected"): False, A("server_version"): None}
    d = _port.db_info()
    return {A(k): v for k, v in d.items()}


def execute(query, params=()):
    with translated():
        return _port.db_execute(query, list(params))


def transaction(statements, max_retries=20, retry_unique=False, slot=0):
    """Runs (query, params) statements in one transaction; params is a list, or the bytes
    to feed a COPY ... FROM STDIN. Retried on 40001/40P01, and on 23505 (a few times) when
    retry_unique says a concurrent writer may have taken the keys first. ``slot`` picks the
    connection: 0 serves every command, 1.. an export's extra writers."""
    with translated():
        return _port.db_transaction(
            [(q, p if isinstance(p, bytes) else list(p)) for q, p in statements], max_retries,
            retry_unique, slot)


# ---- training data ---------------------------------------------------------------------------

def _sql_params(params, where):
    if not isinstance(params, list):
        raise BadArg(f"{where}: SQL params must be a list, got {params!r}")
    for i, p in enumerate(params):
        if p is not None and not isinstance(p, (str, bytes, int, float, bool)):
            raise BadArg(f"{where}: SQL param ${i + 1} must be a binary, integer, float, "
                         f"boolean or nil, got {p!r}")
    return params


def _column(kind, data, rows):
    if kind == "text":
        return data  # a list of (interned) str
    dtype = np.int64 if kind in ("int64", "time") else np.float64
    return np.frombuffer(data, dtype=dtype, count=rows)


def frame_from_sql(query, params, where):
    """``{sql, Query, Params}`` -> DataFrame ``user, item, label[, time]``.

    The first columns are user, item, label and optionally time, in that order. Numeric
    columns arrive as one buffer each (no Python object per row)."""
    if not isinstance(query, str) or not query.strip():
        raise BadArg(f"{where}: SQL query must be a non-empty binary")
    params = _sql_params(params, where)
    with translated():
        result = _port.db_columns(query, params)
    names, cols, rows = result["names"], result["columns"], result["rows"]
    if len(cols) < 3:
        raise BadArg(f"{where}: the query must return user, item, label[, time] columns, "
                     f"got {names}")
    fields = ["user", "item", "label", "time"][:min(len(cols), 4)]
    if rows == 0:
        raise BadArg(f"{where}: the query returned no rows")
    data = {}
    for field, name, (kind, values, nulls, first_null) in zip(fields, names, cols):
        if nulls:
            raise BadArg(f"{where}: column {name} ({field}) is NULL in {nulls} rows, first at "
                         f"row {first_null + 1}; nothing was loaded")
        if kind == "unsupported":
            raise BadArg(f"{where}: column {name} ({field}) has a type (oid {values}) that "
                         f"cannot be an id, a label or a time: cast it in the query")
        if field == "label" and kind in ("text", "text_array"):
            raise BadArg(f"{where}: column {name} (label) must be numeric")
        if field == "time" and kind == "text_array":
            raise BadArg(f"{where}: column {name} (time) must be a timestamp or a number")
        if field in ("user", "item") and kind in ("float64", "time", "text_array"):
            raise BadArg(f"{where}: column {name} ({field}) must be an integer or text id")
        data[field] = _column(kind, values, rows)
    return pd.DataFrame(data)


def sql_columns(query, params, where):
    """``{sql, Query, Params}`` -> ``(names, [(kind, values, nulls, first_null)], rows)`` for
    every column of the result, for readers of named columns (uro_rec.features). Kinds as
    db_columns gives them: int64, float64 (booleans 0/1), time and their numpy arrays; text
    and text_array (arrays of text as lists of str) as lists; unsupported with the type OID."""
    if not isinstance(query, str) or not query.strip():
        raise BadArg(f"{where}: SQL query must be a non-empty binary")
    params = _sql_params(params, where)
    with translated():
        result = _port.db_columns(query, params)
    rows = result["rows"]
    cols = [(kind, values if kind in ("text", "text_array", "unsupported")
             else _column(kind, values, rows), nulls, first)
            for kind, values, nulls, first in result["columns"]]
    return result["names"], cols, rows


# ---- export --------------------------------------------------------------------------------

def _array_literal(values):
    """A text array literal for one $n::TEXT[] parameter (4 parameters per batch, whatever
    its size, instead of 6 per row)."""
    out = []
    for v in values:
        s = str(v)
        out.append('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


def _number_literal(values):
    return "{" + ",".join(repr(float(v)) if isinstance(v, float) else str(int(v))
                          for v in values) + "}"


_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def check_table(table, where):
    """Table names are spliced into SQL (they cannot be parameters): only plain, optionally
    schema-qualified, ASCII identifiers pass."""
    if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
        raise BadArg(f"{where}: table must be a plain SQL identifier, got {table!r}")
    return str(table)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _batch_statements(table, model, version, batch, method, texts):
    """One batch of (user, [(item, score)]) pairs: delete the batch's users' rows, write
    their new lists. ``texts`` caches each id's escaped COPY text for the whole export."""
    delete = (f"DELETE FROM {table} WHERE model = $1 AND user_id = ANY($2::TEXT[])",
              [model, _array_literal([user for user, _ in batch])])
    if method == "copy":
        head = (str(model).translate(_COPY_ESCAPES) + "\t").encode()
        payload, _ = _port.copy_rows(head, f"\t{int(version)}\n".encode(), batch, texts)
        write = (f"COPY {table} (model, user_id, rank, item_id, score, model_version) "
                 f"FROM STDIN", payload)
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
                 [model, version, _array_literal(us), _number_literal(rs),
                  _array_literal(its), _number_literal(ss)])
    return [delete, write]


def _batches(table, model, version, lists, batch_size, method, stop):
    """(statements, rows) per batch of about batch_size rows; a user's list never splits.
    Stops early once ``stop`` is set (the export failed or timed out)."""
    texts = {}
    batch, rows = [], 0
    for pair in lists:
        if stop.is_set():
            return
        batch.append(pair)
        rows += len(pair[1])
        if rows >= batch_size:
            yield _batch_statements(table, model, version, batch, method, texts), rows
            batch, rows = [], 0
    if batch:
        yield _batch_statements(table, model, version, batch, method, texts), rows


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


def write_lists(model, version, lists, table, batch_size, where="export", method="copy",
                writers=2):
    """Replaces each user's rows with ``lists``' [(item, score)], about ``batch_size`` rows
    per transaction. Returns rows, batches, retries.

    Each batch deletes its users' rows and writes the new ones in one transaction, retried
    as a whole (c_src/db.c). A producer thread computes the batches; ``writers`` threads
    (this one and writers - 1 more, each on its own connection) take them from a short
    queue and run their transactions without the GIL. One server connection is one server
    process: it writes a batch on one core, and a second one doubles what the server can
    take (batches never share a user, so they cannot conflict with each other)."""
    table = check_table(table, where)
    pending = queue.Queue(maxsize=2 * writers)
    stop = threading.Event()
    failures = []

    def hand_over(item):
        """Queues item unless the export has stopped (nobody reads any more)."""
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in _batches(table, model, version, lists, batch_size, method, stop):
                if not hand_over(batch):
                    return
            for _ in range(writers):  # one end mark per writer
                hand_over(None)
        except BaseException as exc:  # handed to a writer, which raises it
            hand_over(exc)

    def write(slot, tally):
        while not stop.is_set():
            try:
                item = pending.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            statements, n = item
            tally[2] += transaction(statements, retry_unique=True, slot=slot)["retries"]
            tally[0] += n
            tally[1] += 1

    def write_in_thread(slot, tally):
        try:
            write(slot, tally)
        except BaseException as exc:  # the first failure ends the export
            failures.append(exc)
            stop.set()

    tallies = [[0, 0, 0] for _ in range(writers)]
    threads = [threading.Thread(target=produce, name="uro_rec-export", daemon=True)]
    threads += [threading.Thread(target=write_in_thread, args=(slot, tallies[slot]),
                                 name=f"uro_rec-writer-{slot}", daemon=True)
                for slot in range(1, writers)]
    for t in threads:
        t.start()
    try:
        write(0, tallies[0])
        for t in threads[1:]:
            t.join()  # their last transactions
    finally:
        stop.set()
        _join_all(threads)
        if writers > 1:
            _port.db_release()
    if failures:
        raise failures[0]
    return tuple(sum(t[i] for t in tallies) for i in range(3))


# ---- schema ---------------------------------------------------------------------------------

def apply_schema(directory=None):
    """Runs priv/sql/*.sql in order, one statement at a time (CockroachDB wants DDL outside
    explicit transactions)."""
    directory = os.path.abspath(directory or SCHEMA_DIR)
    if not os.path.isdir(directory):
        raise BadArg(f"apply_schema: {directory} is not a directory")
    applied = []
    for fname in sorted(f for f in os.listdir(directory) if f.endswith(".sql")):
        with open(os.path.join(directory, fname)) as f:
            text = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("--"))
        for stmt in (s.strip() for s in text.split(";")):
            if stmt:
                execute(stmt)
        applied.append(fname)
    return applied


# ---- the registry ----------------------------------------------------------------------------

def _files_of(directory):
    out = []
    for root, _dirs, files in os.walk(directory):
        for f in files:
            full = os.path.join(root, f)
            out.append((os.path.relpath(full, directory), full))
    return sorted(out)


def checksum(directory):
    """sha256 over every file's relative path and bytes, in path order."""
    h = hashlib.sha256()
    for rel, full in _files_of(directory):
        h.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                h.update(block)
    return h.hexdigest()


def publish(name, version, algorithm, n_users, n_items, metrics_json, directory):
    """Stores a saved version: chunks first, in transactions of ~8 MiB, then the metadata
    row, so a reader never finds a version whose files are incomplete."""
    total = 0
    # Re-publishing a version: its metadata row goes with its old chunks, in one
    # transaction, so no reader ever sees metadata over half-replaced files.
    transaction([("DELETE FROM uro_rec_models WHERE name = $1 AND version = $2", [name, version]),
                 ("DELETE FROM uro_rec_model_chunks WHERE name = $1 AND version = $2",
                  [name, version])])
    pending, pending_bytes = [], 0
    insert = ("INSERT INTO uro_rec_model_chunks (name, version, path, chunk, data) "
              "VALUES ($1, $2, $3, $4, $5)")
    for rel, full in _files_of(directory):
        with open(full, "rb") as f:
            for i, block in enumerate(iter(lambda: f.read(CHUNK_BYTES), b"")):
                pending.append((insert, [name, version, rel, i, block]))
                pending_bytes += len(block)
                total += len(block)
                if pending_bytes >= 8 * CHUNK_BYTES:
                    transaction(pending)
                    pending, pending_bytes = [], 0
    if pending:
        transaction(pending)
    digest = checksum(directory)
    transaction([(
        "INSERT INTO uro_rec_models (name, version, algorithm, n_users, n_items, metrics, "
        "checksum, total_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (name, version) DO UPDATE SET algorithm = excluded.algorithm, "
        "n_users = excluded.n_users, n_items = excluded.n_items, metrics = excluded.metrics, "
        "checksum = excluded.checksum, total_bytes = excluded.total_bytes, created_at = now()",
        [name, version, algorithm, n_users, n_items, metrics_json, digest, total])])
    return digest, total


def registry_versions(name=None):
    q = ("SELECT name, version, algorithm, n_users, n_items, checksum, total_bytes "
         "FROM uro_rec_models")
    r = execute(q + (" WHERE name = $1" if name else "") + " ORDER BY name, version",
                [name] if name else [])
    return r["rows"]


def fetch(name, version, model_root):
    """Writes version ``version`` (None: the newest) of ``name`` under
    ``model_root/name/version`` and verifies its checksum. Returns (version, path)."""
    rows = [r for r in registry_versions(name) if version is None or r[1] == version]
    if not rows:
        from .errors import UnknownModel
        raise UnknownModel(name)
    _, version, _algo, _nu, _ni, digest, _total = rows[-1]
    final = os.path.join(model_root, name, str(version))
    if os.path.isdir(final) and checksum(final) == digest:
        return version, final
    # The temporary directory sits beside the final one: rename(2) cannot cross filesystems.
    os.makedirs(os.path.join(model_root, name), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".fetch-{version}-", dir=os.path.join(model_root, name))
    try:
        r = execute("SELECT path, data FROM uro_rec_model_chunks WHERE name = $1 AND "
                    "version = $2 ORDER BY path, chunk", [name, version])
        for rel, data in r["rows"]:
            if os.path.isabs(rel) or ".." in rel.split(os.sep):
                raise PortError(f"registry: refusing path {rel!r}", kind="internal")
            dest = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "ab") as f:
                f.write(data)
        got = checksum(tmp)
        if got != digest:
            raise PortError(f"registry: checksum mismatch for {name} version {version}: "
                            f"stored {digest}, fetched {got}", kind="internal")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        return version, final
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def append_events(events, table="uro_rec_interactions"):
    """Appends observed events in one statement (arrays, not one parameter per row)."""
    table = check_table(table, "observe")
    users, items, labels, times = zip(*events)
    q = (f"INSERT INTO {table} (user_id, item_id, label, created_at) "
         f"SELECT u, i, l, TIMESTAMPTZ '1970-01-01 00:00:00+00' + t * INTERVAL '1 second' "
         f"FROM unnest($1::TEXT[], $2::TEXT[], "
         f"$3::FLOAT8[], $4::FLOAT8[]) AS x(u, i, l, t)")
    return transaction([(q, [_array_literal(users), _array_literal(items),
                             _number_literal([float(l) for l in labels]),
                             _number_literal([float(t) for t in times])])])
