"""What users did, in the interactions table: appended in batches, and removed per user.

``record_interactions`` is what ``UroRecommender.Interactions`` flushes its buffer with: one
INSERT for the whole batch (six array parameters, however many rows), inside a transaction
that c_src/db_execute.c retries on 40001/40P01. It is idempotent: every row carries the UUID the
client gave it, and a row whose id is already there is skipped (``ON CONFLICT (id) DO
NOTHING``), so a flush sent again after a port crash cannot write a visit twice. It skips,
and counts, the rows it must not write:

- rows of a user ``forget_user`` removed at or after the row's own time (the row was recorded
  before the removal and sat in a buffer, on this node or another, while it ran);
- with ``users`` (a table whose ``id`` is the user's), rows of a user no longer there: a
  deleted account's buffered visits, which its foreign key would otherwise refuse, failing the
  whole batch.

``forget_user`` deletes a user's interactions and exported lists in one transaction and
leaves a tombstone (``uro_rec_forgotten``), which ``purge_forgotten`` reads after an export:
an export whose model was trained before the removal would otherwise write that user's lists
back. Tombstones older than ``keep_hours`` (24) are deleted then.

Ids are TEXT on the wire; ``ids => uuid`` casts them to UUID for uro's table (TEXT to UUID
is no assignment cast in PostgreSQL), and checks each one first so that one bad id is a
``badarg`` naming its row, never a failed batch. Table names are checked identifiers.
"""
import uuid

from .db import check_table, transaction
from .export import array_literal, number_literal
from .errors import BadArg
from .options import (
    check_id, check_known, choice, finite_float, normalize_opts, pos_int,
)
from .port import A

KINDS = ("world", "avatar", "prop")
EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"


def _uuid_text(value, where, field):
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadArg(f"{where}: {field} must be a UUID, got {value!r}") from None


def _rows(rows, ids, where):
    """[{Id, User, Kind, Item, Weight, Time}] -> six columns, checked."""
    if not isinstance(rows, list) or not rows:
        raise BadArg(f"{where}: rows must be a non-empty list of "
                     "{Id, User, Kind, Item, Weight, Time}")
    cols = ([], [], [], [], [], [])
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, tuple) or len(row) != 6:
            raise BadArg(f"{where}: row {n} must be {{Id, User, Kind, Item, Weight, Time}}, "
                         f"got {row!r}")
        rid, user, kind, item, weight, t = row
        cols[0].append(_uuid_text(rid, where, f"row {n} id"))
        user = check_id(user, where, f"row {n} user")
        item = check_id(item, where, f"row {n} item")
        if ids == "uuid":
            user = _uuid_text(user, where, f"row {n} user")
            item = _uuid_text(item, where, f"row {n} item")
        cols[1].append(str(user))
        cols[2].append(choice(kind, KINDS, where, f"row {n} kind"))
        cols[3].append(str(item))
        cols[4].append(finite_float(weight, where, f"row {n} weight"))
        cols[5].append(finite_float(t, where, f"row {n} time"))
    return cols


def record_interactions(rows, opts=None):
    """Appends ``rows`` in one statement; ``#{rows, written, skipped, retries}``."""
    where = "record_interactions"
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("table", "ids", "users"), where)
    table = check_table(o.get("table", "uro_rec_interactions"), where)
    ids = choice(o.get("ids", "text"), ("text", "uuid"), where, "ids")
    users = o.get("users")
    cols = _rows(rows, ids, where)
    cast = "::UUID" if ids == "uuid" else ""
    at = f"{EPOCH} + x.t * INTERVAL '1 second'"
    alive = ""
    if users is not None:
        alive = (f" AND EXISTS (SELECT 1 FROM {check_table(users, where)} AS w "
                 f"WHERE w.id = x.u{cast})")
    query = (
        f"INSERT INTO {table} (id, user_id, item_kind, item_id, label, created_at) "
        f"SELECT x.id::UUID, x.u{cast}, x.k, x.i{cast}, x.l, {at} "
        f"FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::FLOAT8[], "
        f"$6::FLOAT8[]) AS x(id, u, k, i, l, t) "
        f"WHERE NOT EXISTS (SELECT 1 FROM uro_rec_forgotten AS f "
        f"WHERE f.user_id = x.u AND f.forgotten_at >= {at}){alive} "
        f"ON CONFLICT (id) DO NOTHING")
    params = [array_literal(c) for c in cols[:4]] + [number_literal(c) for c in cols[4:]]
    result = transaction([(query, params)])
    return {A("rows"): len(cols[0]), A("written"): result["affected"],
            A("skipped"): len(cols[0]) - result["affected"], A("retries"): result["retries"]}


def forget_user(user, opts=None):
    """Deletes ``user``'s interactions and exported lists (every model) in one transaction,
    and leaves a tombstone; ``#{interactions, recommendations}`` are the rows deleted."""
    where = "forget_user"
    user = check_id(user, where, "user")
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("table", "recommendations"), where)
    table = check_table(o.get("table", "uro_rec_interactions"), where)
    recs = check_table(o.get("recommendations", "uro_rec_recommendations"), where)
    # $1 compared with user_id takes that column's type (UUID in uro's table, TEXT otherwise);
    # the recommendations table stores ids as text.
    tombstone = ("INSERT INTO uro_rec_forgotten (user_id, forgotten_at) VALUES ($1, now()) "
                 "ON CONFLICT (user_id) DO UPDATE SET forgotten_at = excluded.forgotten_at",
                 [str(user)])
    deleted = (f"WITH i AS (DELETE FROM {table} WHERE user_id = $1 RETURNING 1), "
               f"r AS (DELETE FROM {recs} WHERE user_id = $2 RETURNING 1) "
               f"SELECT (SELECT count(*) FROM i), (SELECT count(*) FROM r)",
               [str(user), str(user)])
    (n_interactions, n_recs), = transaction([tombstone, deleted])["rows"]
    return {A("interactions"): int(n_interactions), A("recommendations"): int(n_recs)}


def purge_forgotten(model, since, opts=None):
    """After an export of ``model`` whose run began at ``since`` (seconds since 1970): deletes
    the exported lists of users forgotten since then, and tombstones older than
    ``keep_hours``. ``#{recommendations, tombstones}`` are the rows deleted."""
    where = "purge_forgotten"
    if not isinstance(model, str):
        raise BadArg(f"{where}: model must be a string, got {model!r}")
    since = finite_float(since, where, "since")
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("recommendations", "keep_hours"), where)
    recs = check_table(o.get("recommendations", "uro_rec_recommendations"), where)
    keep = pos_int(o.get("keep_hours", 24), where, "keep_hours")
    purge = (f"DELETE FROM {recs} WHERE model = $1 AND user_id IN (SELECT user_id FROM "
             f"uro_rec_forgotten WHERE forgotten_at >= {EPOCH} + $2::FLOAT8 * INTERVAL '1 second')",
             [str(model), since])
    old = ("DELETE FROM uro_rec_forgotten WHERE forgotten_at < now() - $1::INT8 * INTERVAL '1 hour'",
           [keep])
    first = transaction([purge])["affected"]
    second = transaction([old])["affected"]
    return {A("recommendations"): first, A("tombstones"): second}
