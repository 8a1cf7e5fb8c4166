"""Is the model worth serving? Its metrics on held-out rows, the most-popular baseline's on the
same rows, and the lift: what ``evaluate`` answers and ``train``'s ``eval`` reports.

What is scored is what the port serves:

- listwise metrics (precision, recall, map, ndcg, coverage) score, for every user with a
  positive row in the data, the list ``recommend_many`` returns for them with the default
  options (unique, consumed and observed items filtered, topped up in popularity order);
  the baseline scores the most popular items that user has not consumed, in the same fixed
  order the port tops lists up with;
- pointwise metrics (roc_auc, log_loss, ...; rmse, mae, r2 for the rating task) score the
  port's ``predict`` on the rows, with one negative item sampled per positive row as
  LibRecommender's ``evaluate`` does (same sampler, seed 42, the model's ``num_neg``) when
  the labels are not already 0/1; the baseline scores every pair with the item's popularity
  (ranking) or the training data's mean label (rating).

The metric functions are LibRecommender's own (``libreco.evaluation.metrics``). Where
LibRecommender's ``evaluate`` would give another figure, docs/PROTOCOL.md says why (its lists
for the memory-based models hold a random fill with repeats, which its ndcg counts as hits).

``lift`` is model / baseline for metrics where higher is better and baseline / model for the
losses (rmse, mae, loss, log_loss), so above 1.0 always means better than recommending what is
popular; ``nil`` where the denominator is 0.
"""
import numpy as np

from . import recommend as rec
from .errors import BadArg
from .options import pos_int
from .port import A

RATING_METRICS = ("rmse", "mae", "r2", "loss")
RANKING_METRICS = ("loss", "log_loss", "balanced_accuracy", "roc_auc", "pr_auc",
                   "roc_gauc", "precision", "recall", "map", "ndcg", "coverage")
LISTWISE = ("precision", "recall", "map", "ndcg", "coverage")
LOWER_IS_BETTER = ("rmse", "mae", "loss", "log_loss")
DEFAULT_METRICS = {"ranking": ["roc_auc", "precision", "recall", "ndcg"],
                   "rating": ["rmse", "mae"]}
SEED = 42  # libreco's evaluate default: the same negatives as libreco would draw


def needs_neg_sampling(task, labels):
    return task == "ranking" and set(np.unique(labels).tolist()) != {0.0, 1.0}


def parse_metrics(task, opts, where):
    metrics = opts.get("metrics", DEFAULT_METRICS[task])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise BadArg(f"{where}: metrics must be a non-empty list, got {metrics!r}")
    allowed = RATING_METRICS if task == "rating" else RANKING_METRICS
    out = []
    for m in metrics:
        if not isinstance(m, str) or str(m) not in allowed:
            raise BadArg(
                f"{where}: metric {m!r} is not available for the {task} task; "
                f"choose from {', '.join(allowed)}"
            )
        out.append(str(m))
    k = pos_int(opts.get("k", 10), where, "k")
    return out, k


def evaluate_frame(entry, df, metrics, k, where):
    """``#{metrics, baseline, lift}`` of ``entry`` on a DataFrame (user, item, label); rows
    whose user or item the model never saw are left out."""
    from libreco.data import TransformedEvalSet

    uidx, iidx, keep = [], [], []
    for pos, (u, i) in enumerate(zip(df["user"].tolist(), df["item"].tolist())):
        ui, ii = entry.user_index.get(u), entry.item_index.get(i)
        if ui is not None and ii is not None:
            uidx.append(ui)
            iidx.append(ii)
            keep.append(pos)
    if not keep:
        raise BadArg(f"{where}: no rows whose user and item are known to the model")
    if k > entry.n_items:
        raise BadArg(f"{where}: k {k} exceeds the model's {entry.n_items} items")
    labels = df["label"].to_numpy(dtype=np.float32)[keep]
    data = TransformedEvalSet(np.asarray(uidx), np.asarray(iidx), labels)
    model_m, base_m = {}, {}
    pointwise = [m for m in metrics if m not in LISTWISE]
    if pointwise:
        _pointwise(entry, data, labels, pointwise, model_m, base_m)
    listwise = [m for m in metrics if m in LISTWISE]
    if listwise:
        _listwise(entry, data, listwise, k, model_m, base_m)
    return {
        A("metrics"): {A(m): model_m[m] for m in metrics},
        A("baseline"): {A(m): base_m[m] for m in metrics},
        A("lift"): {A(m): lift(m, model_m[m], base_m[m]) for m in metrics},
    }


def lift(metric, model_value, baseline_value):
    num, den = ((baseline_value, model_value) if metric in LOWER_IS_BETTER
                else (model_value, baseline_value))
    return float(num / den) if den != 0 else None


def _pointwise(entry, data, labels, metrics, model_m, base_m):
    if needs_neg_sampling(entry.task, labels):
        num_neg = entry.hyperparameters().get("num_neg") or 1
        data.build_negatives(entry.n_items, num_neg, seed=SEED)
    users, items, y = data.user_indices, data.item_indices, data.labels
    scores = rec.predict_inner(entry, users, items)
    if entry.task == "rating":
        base = np.full(len(y), entry.global_mean())
    else:
        base = entry.pop_score[items]
    model_m.update(_pointwise_scores(entry.task, metrics, y, scores, users))
    base_m.update(_pointwise_scores(entry.task, metrics, y, base, users))


def _pointwise_scores(task, metrics, y, pred, users):
    """LibRecommender's evaluate, metric by metric (labels are 0/1 here for ranking)."""
    from sklearn.metrics import log_loss, mean_absolute_error, r2_score, roc_auc_score
    from libreco.evaluation.metrics import (
        balanced_accuracy, pr_auc_score, rmse, roc_gauc_score,
    )

    if task == "rating":
        fns = {"rmse": rmse, "loss": rmse, "mae": mean_absolute_error, "r2": r2_score}
    else:
        fns = {"log_loss": log_loss, "loss": log_loss, "roc_auc": roc_auc_score,
               "pr_auc": pr_auc_score, "balanced_accuracy": balanced_accuracy,
               "roc_gauc": lambda t, p: roc_gauc_score(t, p, users)}
    return {m: float(fns[m](y, np.asarray(pred, dtype=np.float64))) for m in metrics}


def _listwise(entry, data, metrics, k, model_m, base_m):
    from libreco.evaluation.metrics import (
        average_precision_at_k, listwise_scores, ndcg_at_k, precision_at_k, rec_coverage,
        recall_at_k,
    )

    fns = {"precision": precision_at_k, "recall": recall_at_k,
           "map": average_precision_at_k, "ndcg": ndcg_at_k}
    users = list(data.positive_consumed)  # libreco's order: the mean is summed in it
    truth = data.positive_consumed
    served = served_lists(entry, users, k)
    popular = {u: np.asarray(rec.popular_inner(entry, u, k), dtype=np.int64) for u in users}
    for lists, out in ((served, model_m), (popular, base_m)):
        for m in metrics:
            if m == "coverage":
                out[m] = float(rec_coverage(lists, users, entry.n_items))
            else:
                out[m] = float(listwise_scores(fns[m], truth, lists, users, k))


def served_lists(entry, users, k):
    """inner user -> the inner items of the list recommend_many serves that user."""
    ids = [entry.user_ids[u] for u in users]
    index = entry.item_index
    ro = rec.parse_opts(entry, None, "evaluate")
    return {u: np.asarray([index[i] for i in items], dtype=np.int64)
            for u, (_, items) in zip(users, rec.recommend_many(entry, ids, k, ro))}
