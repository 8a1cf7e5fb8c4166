"""The rows through which a cluster's nodes agree (priv/sql/004_scheduler.sql): the lease that
makes one node the scheduler, the version of each model every node serves, the run log.

CockroachDB has no advisory locks, so the lease is a row: ``lease`` takes it when it is free
(expired) or renews it for its holder, in one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``,
which is atomic on both servers (PostgreSQL locks the conflicting row; CockroachDB runs it
SERIALIZABLE and c_src/db_execute.c retries a 40001). Every time is the server's ``now()``, so the
nodes' clocks never have to agree. With ``every_ms`` the lease is only taken when the last
holder finished (``release``) at least that long ago: that turns "one node at a time" into "one
run per interval across the cluster", however many nodes ask.
"""
import json
import math

from .db import transaction
from .errors import BadArg
from .options import (
    boolean, check_known, finite_float, model_name, non_neg_int, normalize_opts, pos_int,
)
from .port import A


def _text(value, where, field):
    if not isinstance(value, str) or not value or len(value) > 256:
        raise BadArg(f"{where}: {field} must be a non-empty string of at most 256 "
                     f"characters, got {value!r}")
    return str(value)


def lease(name, holder, opts=None):
    """Takes, renews or releases lease ``name`` for ``holder``.

    Opts: ``ttl_ms`` (how long the lease lasts unless renewed, default 60000), ``every_ms``
    (take a free lease only when its last release is at least this old; default 0),
    ``release`` (true: give it up now and stamp the release time).
    ``#{held, holder, expires_in_ms, released_ago_ms}``: whether ``holder`` has it now, who
    has it (``nil`` when nobody), and when it was last released (``nil`` if never)."""
    where = "lease"
    name, holder = _text(name, where, "name"), _text(holder, where, "holder")
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("ttl_ms", "every_ms", "release"), where)
    ttl = pos_int(o.get("ttl_ms", 60_000), where, "ttl_ms")
    every = non_neg_int(o.get("every_ms", 0), where, "every_ms")
    if boolean(o.get("release", False), where, "release"):
        change = ("UPDATE uro_rec_leases SET expires_at = now(), done_at = now() "
                  "WHERE name = $1 AND holder = $2", [name, holder])
    else:
        change = (
            "INSERT INTO uro_rec_leases (name, holder, expires_at) "
            "VALUES ($1, $2, now() + $3::INT8 * INTERVAL '1 millisecond') "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at "
            "WHERE (uro_rec_leases.holder = excluded.holder AND uro_rec_leases.expires_at > now()) "
            "OR (uro_rec_leases.expires_at <= now() AND (uro_rec_leases.done_at IS NULL OR "
            "uro_rec_leases.done_at <= now() - $4::INT8 * INTERVAL '1 millisecond'))",
            [name, holder, ttl, every])
    state = ("SELECT holder, CAST(extract(epoch FROM (expires_at - now())) * 1000 AS INT8), "
             "CAST(extract(epoch FROM (now() - done_at)) * 1000 AS INT8) "
             "FROM uro_rec_leases WHERE name = $1", [name])
    rows = transaction([change, state])["rows"]
    if not rows:
        return {A("held"): False, A("holder"): None, A("expires_in_ms"): 0,
                A("released_ago_ms"): None}
    who, expires_in, released_ago = rows[0]
    live = expires_in > 0
    return {A("held"): live and who == holder, A("holder"): who if live else None,
            A("expires_in_ms"): max(0, expires_in), A("released_ago_ms"): released_ago}


def serve(name, version, opts=None):
    """Makes ``version`` of ``name`` the one every node serves (``uro_rec_served``).
    Opts: ``run`` (the run's UUID, kept beside it). Returns ``ok``."""
    where = "serve"
    name = model_name(name, where)
    version = pos_int(version, where, "version")
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("run",), where)
    run = o.get("run")
    if run is not None:
        run = _text(run, where, "run")
    transaction([(
        "INSERT INTO uro_rec_served (name, version, run_id, served_at) "
        "VALUES ($1, $2, $3::UUID, now()) ON CONFLICT (name) DO UPDATE SET "
        "version = excluded.version, run_id = excluded.run_id, served_at = excluded.served_at",
        [name, version, run])])
    return A("ok")


def served():
    """``#{Name => Version}``: what every node is to serve."""
    rows = transaction([("SELECT name, version FROM uro_rec_served", [])])["rows"]
    return {name: int(version) for name, version in rows}


_RUN_TEXT = ("model", "decision", "reason", "error", "node")
_RUN_JSON = ("metrics", "baseline", "current_metrics")
_RUN_INT = ("version", "current_version", "train_ms", "evaluate_ms", "publish_ms", "export_ms")


def _json(value, where, field):
    if not isinstance(value, dict):
        raise BadArg(f"{where}: {field} must be a map, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # JSON has no NaN
        out[str(k)] = v if v is None or isinstance(v, (int, float)) else str(v)
    return json.dumps(out, sort_keys=True)


def record_run(run):
    """Appends one row to ``uro_rec_runs``; ``run`` is a map of its columns (``id``,
    ``model``, ``decision`` and ``started_at``, seconds since 1970, required). Returns the id."""
    where = "record_run"
    r = normalize_opts(run, f"{where}: run")
    check_known(r, ("id", "started_at") + _RUN_TEXT + _RUN_JSON + _RUN_INT, where)
    for key in ("id", "model", "decision", "started_at"):
        if key not in r:
            raise BadArg(f"{where}: run must have {key}")
    cols, vals = ["id", "started_at"], [_text(r["id"], where, "id"),
                                        finite_float(r["started_at"], where, "started_at")]
    for key in _RUN_TEXT:
        if r.get(key) is not None:
            cols.append(key)
            vals.append(str(r[key]) if key != "model" else model_name(r[key], where))
    for key in _RUN_JSON:
        if r.get(key) is not None:
            cols.append(key)
            vals.append(_json(r[key], where, key))
    for key in _RUN_INT:
        if r.get(key) is not None:
            cols.append(key)
            vals.append(non_neg_int(r[key], where, key))
    exprs = [f"${i}" for i in range(1, len(cols) + 1)]
    exprs[0] = "$1::UUID"
    exprs[1] = "TIMESTAMPTZ '1970-01-01 00:00:00+00' + $2::FLOAT8 * INTERVAL '1 second'"
    transaction([(f"INSERT INTO uro_rec_runs ({', '.join(cols)}) VALUES ({', '.join(exprs)})",
                  vals)])
    return vals[0]
