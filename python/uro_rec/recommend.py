"""Ranking logic: recommend, predict and similar_items for a loaded Entry.

Guarantees of :func:`recommend` (libreco's own recommend_user gives none of the
first three in all cases: its cold start samples popular items with replacement,
and it stops filtering consumed items when a user has consumed almost all):

- no duplicates; never an excluded item; never a consumed item when
  ``filter_consumed``;
- exactly ``n`` items whenever that many candidates exist (else all of them);
- unknown users get the cold-start list instead of an error.

Embedding models are ranked by c_src/rank.c over float32 rows, the shortlist re-scored
exactly (uro_rec.shortlist: the lists of an exact ranking in doubles, ties to the lower
index). The memory-based
models give their own neighbourhood candidates (uro_rec.neighbours: never
libreco's random popular fill), the scoring networks go through libreco's
recommend_user; both are then deduplicated, filtered and topped up from the
popularity ranking, in its fixed order.

Users built at request time (``seq``, ``user_feats``, an unknown user's observed items:
uro_rec.dynamic, uro_rec.foldin) are ranked by the same code as known users: an embedding
model's user vector goes through the same masks and ranking, a scoring network's through
its own recommend_user and the same dedupe/filter/top-up.

Cold start for unknown users: ``popular`` (default) is the deterministic
popularity ranking of the training data (distinct users per item); ``average``
scores items with the mean user embedding on embedding models and falls back to
``popular`` on the others (libreco's memory-based models only know ``popular``).

Scores: ranking task -> sigmoid of the model output (as libreco's predict);
rating task -> output clipped to the rating range. For models served through
libreco (memory-based CF, Swing, scoring networks) the order is libreco's
ranking order and the scores are its predict() values, which for
UserCF/ItemCF/Swing use a different neighbourhood than its ranking, so they need
not be monotone. Popular cold-start lists
score each item by its popularity relative to the most popular item (0..1],
since the model has nothing to say about an unknown user.
"""
import contextlib
import gc
from dataclasses import dataclass

import numpy as np

from . import dynamic, features, neighbours, shortlist
from .errors import BadArg
from .options import boolean, check_id_list, check_known, choice, normalize_opts


_NO_ITEMS = np.empty(0, dtype=np.intp)


@dataclass
class RecOpts:
    filter_consumed: bool = True
    cold_start: str = "popular"
    exclude: np.ndarray = None  # inner ids of excluded items
    scores: bool = False
    seq: list = None         # inner item ids, oldest first (uro_rec.dynamic)
    user_feats: dict = None  # feature name -> value (uro_rec.features)


_DEFAULT_OPTS = RecOpts(exclude=_NO_ITEMS)


def parse_opts(entry, opts, where):
    if opts is None or (isinstance(opts, (dict, list)) and not opts):
        return _DEFAULT_OPTS  # the common call: nothing to check or build
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("filter_consumed", "cold_start", "exclude", "scores", "seq", "user_feats"),
                where)
    exclude = check_id_list(o.get("exclude", []), where, "exclude")
    idx = [entry.item_index[i] for i in exclude if i in entry.item_index]
    idx = np.unique(np.asarray(idx, dtype=np.intp)) if idx else _NO_ITEMS
    return RecOpts(
        filter_consumed=boolean(o.get("filter_consumed", True), where, "filter_consumed"),
        cold_start=choice(o.get("cold_start", "popular"), ("popular", "average"), where, "cold_start"),
        exclude=idx,
        scores=boolean(o.get("scores", False), where, "scores"),
        seq=dynamic.parse_seq(entry, o["seq"], where) if "seq" in o else None,
        user_feats=(features.user_feats_option(entry, o["user_feats"], where)
                    if "user_feats" in o else None),
    )


def normalize_scores(entry, raw):
    raw = np.asarray(raw, dtype=np.float64)
    if entry.task == "ranking":
        from scipy.special import expit  # (lazily: ~10 MB a port that never needs it)

        return expit(raw)
    lo, hi = entry.bounds
    return np.clip(raw, lo, hi)


def recommend(entry, user, n, ro):
    if n == 0:
        return []
    uid = entry.user_inner(user)
    # What an unknown user was observed consuming since training ({observe, ...}).
    observed = entry.observed.get(user) if uid is None else None
    seen = observed if ro.filter_consumed else None
    path = dynamic.how(entry, uid, observed, ro)
    if path == "vector":  # from seq, user_feats or observed items: uro_rec.dynamic
        ids, scores = _embed_top(entry, dynamic.user_vector(entry, uid, user, ro), uid, n, ro,
                                 extra=seen)
    elif path == "libreco":
        ids, scores = _via_libreco(entry, uid, n, ro, user=user, seen=seen)
    elif uid is None:
        if ro.cold_start == "average" and entry.kind == "embed":
            # libreco's 'average': the mean user embedding (row n_users).
            ids, scores = _embed_top(entry, _user_row(entry, None), None, n, ro, extra=seen)
        else:
            ids, scores = _popular(entry, n, ro,
                                   banned=set(seen.tolist()) if seen is not None else None)
    elif entry.kind == "embed":
        ids, scores = _embed_top(entry, entry.user_vecs[uid], uid, n, ro)
    else:
        ids, scores = _via_libreco(entry, uid, n, ro)
    names = entry.item_ids.take(ids)
    if ro.scores:
        return [(i, float(s)) for i, s in zip(names, scores)]
    return names


@contextlib.contextmanager
def collector_paused():
    """Bulk results (recommend_many, export) allocate hundreds of thousands of tuples that all
    stay alive. Each batch of them would trigger the cyclic collector, and its full passes
    walk every object TensorFlow and torch created at import: a third of an export's CPU
    time. Nothing allocated here is garbage until the call ends, so the collector waits."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def recommend_many(entry, users, n, ro, block=256):
    """``[(user, list)]`` for many users, the same lists :func:`recommend` gives one by one.

    Embedding models rank a block of known users with one pass of c_src/rank.c, which scores
    up to 32 users against each block of item rows while it is in cache (export of thousands
    of users reads the catalogue once per 32 users instead of once per user). Unknown users
    and other models take the one-by-one path."""
    if entry.kind != "embed" or n == 0:
        return [(u, recommend(entry, u, n, ro)) for u in users]
    out = []
    for start in range(0, len(users), block):
        out.extend(_embed_block(entry, users[start:start + block], n, ro))
    return out


def _embed_block(entry, users, n, ro):
    uids = [entry.user_inner(u) for u in users]
    known = [k for k, uid in enumerate(uids) if uid is not None]
    lists = [None] * len(users)
    if known:
        rows = [uids[k] for k in known]
        bans = [entry.consumed[u] for u in rows] if ro.filter_consumed else [None] * len(rows)
        top, exact, counts = shortlist.top(entry.items, entry.user_vecs[rows], bans,
                                           ro.exclude, n)
        # the ids of the whole block at once (per-row conversions cost more than the rows)
        names = entry.item_ids.take(top[np.arange(top.shape[1]) < counts[:, None]])
        ends = np.cumsum(counts).tolist()
        if ro.scores:
            score_lists = normalize_scores(entry, exact).tolist()
        for j, kpos in enumerate(known):
            ids = names[ends[j] - int(counts[j]):ends[j]]
            lists[kpos] = list(zip(ids, score_lists[j])) if ro.scores else ids
    return [(u, l if l is not None else recommend(entry, u, n, ro)) for u, l in zip(users, lists)]


def _user_row(entry, uid):
    if uid is not None:
        return entry.user_vecs[uid]
    if entry.user_vecs.shape[0] > entry.n_users:
        return entry.user_vecs[entry.n_users]
    return entry.user_vecs.mean(axis=0)


def _embed_top(entry, uvec, uid, n, ro, extra=None):
    """The exact top n of one user vector (uro_rec.shortlist), with the consumed items of a
    known user (when filtered) and ``extra`` (an unknown user's observed items) left out."""
    ban = entry.consumed[uid] if ro.filter_consumed and uid is not None else None
    if extra is not None and extra.size:
        ban = extra if ban is None else np.union1d(ban, extra)
    ids, exact = shortlist.top_one(entry.items, np.asarray(uvec), ban, ro.exclude, n,
                                   ro.scores)
    return ids, (normalize_scores(entry, exact) if ro.scores else None)


def _popular(entry, n, ro, banned, taken=()):
    """Most popular items not banned/excluded/already taken, up to n."""
    skip = set(ro.exclude.tolist())
    if banned:
        skip |= banned
    skip.update(taken)
    ids = []
    for start in range(0, len(entry.popular), 1024):  # (a memory map: read as far as needed)
        for i in entry.popular[start:start + 1024].tolist():
            if i not in skip:
                ids.append(i)
                if len(ids) == n:
                    return ids, (entry.pop_score[ids] if ro.scores else None)
    return ids, (entry.pop_score[ids] if ro.scores else None)


def _via_libreco(entry, uid, n, ro, user=None, seen=None):
    """The model's own candidates for known user ``uid``, or, on a dynamic path (seq,
    user_feats), for ``user`` known or not (``seen``: what an unknown one was observed
    consuming)."""
    model = entry.model
    who = entry.n_users if uid is None else uid  # libreco's padding id for an unknown user
    # Ask for enough to survive our filtering (libreco filters only the training data's
    # consumed items; we also drop excluded ones and those observed since); libreco
    # refuses n_rec > n_items.
    if uid is None:
        banned = set(seen.tolist()) if seen is not None else set()
        observed = len(banned)
    else:
        banned = set(entry.consumed[uid].tolist()) if ro.filter_consumed else set()
        observed = entry.consumed[uid].size - entry.trained_consumed[uid].size \
            if ro.filter_consumed else 0
    want = min(entry.n_items, n + int(ro.exclude.size) + observed)
    if entry.kind == "memory":  # never libreco's random fill: see uro_rec.neighbours
        got = neighbours.candidates(model, entry.algorithm, uid, want, ro.filter_consumed)
    else:
        extra = dynamic.libreco_kwargs(entry, user, ro) if user is not None else {}
        with entry.graph_ctx():
            recs = model.recommend_user(
                who, want, cold_start="popular", inner_id=True,
                filter_consumed=ro.filter_consumed, random_rec=False, **extra,
            )
        got = next(iter(recs.values())) if recs else []
    banned.update(ro.exclude.tolist())
    ids, seen = [], set()
    for i in np.asarray(got).tolist():
        if i in banned or i in seen:
            continue
        seen.add(i)
        ids.append(i)
        if len(ids) == n:
            break
    if len(ids) < n:  # memory-based models run out of neighbours: top up, in a fixed order
        more, _ = _popular(entry, n - len(ids), ro, banned, taken=seen)
        ids.extend(more)
    scores = predict_inner(entry, np.full(len(ids), who), np.asarray(ids, dtype=np.intp),
                           feats=ro.user_feats) if ro.scores and ids else ([] if ro.scores else None)
    return ids, scores


def predict(entry, user, items, feats=None):
    """Scores for (user, item) pairs, in the order of ``items``: what LibRecommender's
    ``model.predict(user, items)`` answers, unknown users and items included.

    An unknown user or item takes libreco's out-of-vocabulary row, as its predict does
    (cold_start 'average', its default): on embedding models the mean user / item
    embedding; on the scoring networks (NCF, FM, ...) the network run on the mean user /
    item variables, whatever it makes of them; the memory-based models answer libreco's
    ``default_pred`` (the global mean rating for the rating task, 0.0 for ranking).

    ``feats`` (libreco's feature dict, from user_feats / item_feats): the user's and the
    items' stored features replaced by these, as libreco's ``predict(..., feats=...)``.
    """
    if not items:
        return []
    uid = entry.user_inner(user)
    uid = entry.n_users if uid is None else uid
    oov = entry.n_items
    iids = [oov if i is None else i for i in map(entry.item_inner, items)]
    return predict_inner(entry, np.full(len(iids), uid), np.asarray(iids), feats=feats).tolist()


def predict_inner(entry, users, items, batch=8192, feats=None):
    """Scores for inner id pairs; ``n_users`` / ``n_items`` stand for an unknown user / item
    (libreco's own convention). Embedding models: the exact score a recommended list is
    ranked by (uro_rec.shortlist), so predict and recommend agree to the last bit. With ``feats`` (one user):
    libreco's predict pair by pair (it takes features for one pair at a time), or for an
    embedding model the user vector built from them."""
    users, items = np.asarray(users, dtype=np.intp), np.asarray(items, dtype=np.intp)
    if feats is not None and entry.kind != "embed":
        with entry.graph_ctx():
            return np.asarray([float(np.ravel(entry.model.predict(
                int(u), int(i), feats=feats, inner_id=True))[0]) for u, i in zip(users, items)])
    if entry.kind == "embed":
        urows = np.empty((len(users), entry.user_vecs.shape[1]))
        known = users < entry.n_users
        urows[known] = entry.user_vecs[users[known]]
        urows[~known] = _user_row(entry, None)
        if feats is not None:  # one user, built from the features (TwoTower, YouTubeRetrieval)
            urows[:] = dynamic.user_vector(entry, int(users[0]) if known[0] else None, None,
                                           RecOpts(exclude=_NO_ITEMS, user_feats=feats))
        irows = entry.items.exact_rows(np.minimum(items, entry.n_items - 1))
        irows[items >= entry.n_items] = entry.item_oov
        return normalize_scores(entry, shortlist.exact_scores(irows, urows))
    out = []
    with entry.graph_ctx():
        for start in range(0, len(users), batch):
            got = entry.model.predict(users[start:start + batch], items[start:start + batch],
                                      inner_id=True)
            out.append(np.atleast_1d(np.asarray(got, dtype=np.float64)))
    return np.concatenate(out) if out else np.empty(0)


def popular_inner(entry, uid, n):
    """The most-popular list for known user ``uid`` (inner ids): popular items they have not
    consumed (in training or observed since), in the fixed popularity order. What
    ``evaluate`` scores as its baseline."""
    return _popular(entry, n, _DEFAULT_OPTS, banned=set(entry.consumed[uid].tolist()))[0]


def similar_items(entry, item, n):
    """Most similar items first, never the item itself.

    Embedding models: cosine similarity of item embeddings (always ``n`` items
    when the model has that many). ItemCF: its similarity matrix. Every other
    model (UserCF, the Rust CF models and Swing, whose recfarm 0.2.1 objects
    expose no similarities, and the scoring networks): cosine similarity of the
    items' user sets in the training data. The last two only return items with a
    positive similarity, so they may return fewer than ``n``.
    """
    iid = entry.item_inner(item)
    if iid is None:
        raise BadArg(f"similar_items: unknown item {item!r}")
    if n == 0:
        return []
    if entry.kind == "embed":
        k = min(n, entry.n_items - 1)
        if k <= 0:
            return []
        items = entry.cosine_items()
        query = items.exact_rows([iid])[0] * items.scale[iid]
        top, exact, counts = shortlist.top(items, query[None, :], [np.asarray([iid])],
                                           None, k)
        c = int(counts[0])
        return list(zip(entry.item_ids.take(top[0, :c]), exact[0, :c].tolist()))
    if entry.algorithm == "ItemCF" and getattr(entry.model, "sim_matrix", None) is not None:
        row = entry.model.sim_matrix[iid]
        idx, vals = row.indices, row.data
    else:
        m, norms = entry.cooccurrence()
        co = np.asarray((m @ m[iid].T).todense()).ravel() / (norms * norms[iid])
        idx = np.flatnonzero(co > 0)
        vals = co[idx]
    keep = (idx != iid) & (vals > 0)
    idx, vals = idx[keep], vals[keep]
    order = np.lexsort((idx, -vals))[:n]
    return [(entry.item_ids[i], float(vals[j])) for j, i in zip(order.tolist(), idx[order].tolist())]

