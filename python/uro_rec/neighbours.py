"""The memory-based models' own candidates: ItemCF, UserCF, RsItemCF, RsUserCF and Swing.

LibRecommender's ``recommend_user`` for these models fills a list that runs short of
neighbours with ``data_info.np_rng.choice(popular_items, n)``: a random draw, with repeats,
that changes from call to call and from process to process. So the port never calls it.
Here are the same candidates without the fill, best first, in inner ids:

- ItemCF / UserCF: the scores libreco's ``recommend_one`` sums over the top-``k_sim``
  neighbours, ranked by libreco's own ``rank_recommendations`` (the consumed items filtered
  first, as libreco does). Replicated, not called: ``recommend_one`` returns the random fill
  itself whenever it has no candidates, and its result does not say which it was.
- RsItemCF / RsUserCF / Swing: the Rust model's ``recommend``, which answers an empty list
  where libreco would add the fill.

:func:`uro_rec.recommend.recommend` de-duplicates these, drops excluded and observed items and
tops the list up in the fixed popularity order, so a list is a function of the model and the
user alone: the same from recommend, recommend_many, export and a fresh port after load.
"""
from collections import defaultdict

import numpy as np

#: libreco class name -> how its candidates are computed.
FAMILY = {
    "ItemCF": "cf",
    "UserCF": "cf",
    "RsItemCF": "rust",
    "RsUserCF": "rust",
    "Swing": "rust",
}


def candidates(model, algorithm, uid, n, filter_consumed):
    """At most ``n`` inner item ids for known user ``uid``, best first; possibly fewer, or
    none, when the user has few neighbours."""
    if n <= 0:
        return []
    if FAMILY[algorithm] == "rust":
        recs, _fill_counts = model.rs_model.recommend([uid], n, filter_consumed, False)
        return list(recs[0]) if recs else []
    scores = _item_cf_scores(model, uid) if model.cf_type == "item_cf" else _user_cf_scores(model, uid)
    if not scores:
        return []
    ids = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
    preds = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    if filter_consumed:
        keep = np.isin(ids, model.user_consumed[uid], invert=True)
        ids, preds = ids[keep], preds[keep]
        if not ids.size:
            return []
    # libreco's own ranking (its argsort order for ties), consumed items already gone
    return np.asarray(model.rank_recommendations(uid, ids, preds, n, (), False, False)).tolist()


def _top_sims(model, i):
    return model.topk_sim[i] if model.topk_sim is not None else model.get_top_k_sims(i)


def _item_cf_scores(model, uid):
    """ItemCF.recommend_one's sums: every neighbour of every item the user consumed, weighted
    by the user's label for that item (insertion order kept: it decides libreco's ties)."""
    inter = model.user_interaction
    row = slice(inter.indptr[uid], inter.indptr[uid + 1])
    scores = defaultdict(float)
    for i, label in zip(inter.indices[row], inter.data[row]):
        for j, sim in _top_sims(model, i) or ():
            scores[j] += sim * label
    return scores


def _user_cf_scores(model, uid):
    """UserCF.recommend_one's sums: every item of every top-k similar user, weighted."""
    inter = model.user_interaction
    scores = defaultdict(float)
    for v, sim in _top_sims(model, uid) or ():
        row = slice(inter.indptr[v], inter.indptr[v + 1])
        for i, label in zip(inter.indices[row], inter.data[row]):
            scores[i] += sim * label
    return scores
