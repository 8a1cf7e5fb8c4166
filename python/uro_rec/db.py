"""The database adapter: the port's C database functions, as Python calls.

The connection, streaming and CockroachDB's retry protocol live in C (``c_src/db_*.c``) and
are reached through ``_uro_port.db_*``; this module calls them, turns their failures into
``{error, {database, #{sqlstate, message}}}``, and checks the identifiers that are spliced
into SQL. What is read and written is the business of the modules that use it:
``sources`` (training data), ``export`` (lists and events), ``registry_store`` (model
versions), ``schema``. SQL in them is written to run unchanged on CockroachDB v23.2+ and
PostgreSQL 13+ (docs/COCKROACHDB.md lists why each choice was made).
"""
import contextlib
import re

from .errors import BadArg, PortError
from .port import A

try:  # pragma: no cover - only inside the C port
    import _uro_port as _port

    DatabaseError = _port.DatabaseError
except (ImportError, AttributeError):  # pytest outside the port: no database functions
    _port = None

    class DatabaseError(Exception):
        pass


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
    d["copy_fallbacks"] = copy_fallbacks
    return {A(k): v for k, v in d.items()}


#: Exports that switched from COPY to INSERT because the server refused COPY (export.py).
copy_fallbacks = 0


def check_nul(query, params):
    """SQL text and text parameters reach libpq as C strings: a NUL byte would cut them short
    (or, in the query, fail in C). Both are the caller's mistake. Bytes parameters are sent
    in binary format, length and all, and may hold any byte."""
    if "\x00" in query:
        raise BadArg("SQL: the query text holds a NUL byte")
    if isinstance(params, bytes):
        return  # COPY data (a NUL in it is the server's to refuse: 22021)
    for i, p in enumerate(params):
        if isinstance(p, str) and "\x00" in p:
            raise BadArg(f"SQL: parameter ${i + 1} holds a NUL byte (text cannot hold one)")


def execute(query, params=()):
    params = list(params)
    check_nul(query, params)
    with translated():
        return _port.db_execute(query, params)


def transaction(statements, max_retries=20, retry_unique=False, slot=0):
    """Runs (query, params) statements in one transaction; params is a list, or the bytes
    to feed a COPY ... FROM STDIN. Retried on 40001/40P01, and on 23505 (a few times) when
    retry_unique says a concurrent writer may have taken the keys first. ``slot`` picks the
    connection: 0 serves every command, 1.. an export's extra writers."""
    statements = [(q, p if isinstance(p, bytes) else list(p)) for q, p in statements]
    for q, p in statements:
        check_nul(q, p)
    with translated():
        return _port.db_transaction(statements, max_retries, retry_unique, slot)


def columns(query, params):
    """The query's result streamed into typed columns (``c_src/db_columns.c``):
    ``{names, columns: [(kind, data, nulls, first_null)], rows}``."""
    check_nul(query, params)
    with translated():
        return _port.db_columns(query, params)


def release():
    """Closes the connections of an export's extra writers (slots 1..)."""
    _port.db_release()


def copy_rows(head, tail, lists, texts, to_text):
    """An export batch in COPY's text format, built in C (``c_src/copytext.c``); ``to_text``
    gives the text of the ids C does not write itself (uro_rec.ids.to_text)."""
    return _port.copy_rows(head, tail, lists, texts, to_text)


_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def check_table(table, where):
    """Table names are spliced into SQL (they cannot be parameters): only plain, optionally
    schema-qualified, ASCII identifiers pass."""
    if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
        raise BadArg(f"{where}: table must be a plain SQL identifier, got {table!r}")
    return str(table)
