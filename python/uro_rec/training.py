"""train and evaluate: DataFrame -> fitted model -> Entry, and metrics.

Why the details:

- Each model gets its own ``tf.Graph``: libreco builds TF1-style graphs in the
  default graph and saves/loads variables with ``tf.global_variables()``, so two
  TF models in one default graph would clash (that is what the usual
  ``reset_default_graph()`` guards against, but resetting would break models
  already loaded in this long-lived process).
- ``neg_sampling`` defaults to True for the ranking task unless the labels are
  exactly {0, 1} (explicit negatives); BPR-style losses always need it.
- Evaluation data is converted to inner ids here and rows with users or items
  the model has never seen are dropped, because libreco's listwise metrics fail
  on them.
"""
import time

import numpy as np

from . import algorithms, registry, sources
from .entry import Entry
from .errors import BadArg
from .options import (
    boolean, check_known, choice, fraction, model_name, normalize_opts, plain, pos_int,
)
from .port import A

RATING_METRICS = ("rmse", "mae", "r2", "loss")
RANKING_METRICS = ("loss", "log_loss", "balanced_accuracy", "roc_auc", "pr_auc",
                   "roc_gauc", "precision", "recall", "map", "ndcg", "coverage")
DEFAULT_METRICS = {"ranking": ["roc_auc", "precision", "recall", "ndcg"],
                   "rating": ["rmse", "mae"]}


def _needs_neg_sampling(task, labels):
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
    """Metrics of ``entry`` on a DataFrame (user, item, label)."""
    from libreco.data import TransformedEvalSet
    from libreco.evaluation import evaluate

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
    with entry.graph_ctx():
        result = evaluate(
            entry.model, data, neg_sampling=_needs_neg_sampling(entry.task, labels),
            metrics=metrics, k=k, seed=42,
        )
    return {A(m): float(v) for m, v in result.items()}


def _eval_opts(spec, task):
    """train's ``eval``: (test_size, metrics, k), or None for no evaluation."""
    if spec.get("eval") is None:
        return None
    eo = normalize_opts(spec["eval"], "train: eval")
    check_known(eo, ("test_size", "metrics", "k"), "train: eval")
    test_size = fraction(eo.get("test_size", 0.2), "train: eval", "test_size")
    metrics, k = parse_metrics(task, eo, "train: eval")
    return test_size, metrics, k


def _fit(cls, task, params, fit, df, where):
    """Builds the train set and fits ``cls`` on it in a graph of its own; returns (model,
    data_info, graph, seconds)."""
    from libreco.data import DatasetPure
    from . import streams

    algorithm = cls.__name__
    started = time.perf_counter()
    trainset, data_info = DatasetPure.build_trainset(df)
    graph = registry.new_graph()
    kwargs = algorithms.constructor_kwargs(cls, params, data_info.n_items, where)
    streams.reset_epochs()
    with graph.as_default():
        try:
            model = cls(task=task, data_info=data_info, **kwargs)
        except (TypeError, ValueError, AssertionError) as e:
            raise BadArg(f"train: {algorithm} rejected its params: {e}") from e
        ns = _needs_neg_sampling(task, df["label"].to_numpy()) or (
            getattr(model, "loss_type", None) in ("bpr", "max_margin")
        )
        fitkw = algorithms.fit_kwargs(cls, fit, ns, where)
        try:
            model.fit(trainset, **fitkw)
        except (ValueError, AssertionError, TypeError) as e:
            # libreco validates task/labels/neg_sampling combinations this way
            raise BadArg(f"train: libreco refused to fit {algorithm}: {e}") from e
    return model, data_info, graph, time.perf_counter() - started


def train(name, spec):
    where = "train"
    name = model_name(name, where)
    spec = normalize_opts(spec, "train: spec")
    check_known(spec, ("algorithm", "data", "task", "params", "fit", "eval", "save"), where)
    if "algorithm" not in spec:
        raise BadArg("train: spec must contain algorithm")
    if "data" not in spec:
        raise BadArg("train: spec must contain data")
    cls = algorithms.resolve(spec["algorithm"], where)
    algorithm = cls.__name__
    task = choice(spec.get("task", "ranking"), ("ranking", "rating"), where, "task")
    params = plain(normalize_opts(spec.get("params"), "train: params"))
    fit = plain(normalize_opts(spec.get("fit"), "train: fit"))
    save = boolean(spec.get("save", True), where, "save")
    ev = _eval_opts(spec, task)

    df = sources.training_frame(sources.load(spec["data"], "train: data"))
    test_df = None
    if ev is not None:
        from libreco.data import random_split

        if len(df) < 5:
            raise BadArg("train: eval needs at least 5 rows of data")
        df, test_df = random_split(df, test_size=ev[0], seed=42, filter_unknown=True)

    model, data_info, graph, seconds = _fit(cls, task, params, fit, df, where)
    entry = Entry(name, algorithm, task, model, data_info, graph,
                  data_info.user_unique_vals.tolist(), data_info.item_unique_vals.tolist())
    metrics = {}
    if ev is not None and test_df is not None and len(test_df):
        metrics = evaluate_frame(entry, test_df, ev[1], ev[2], "train: eval")
    entry.metrics = metrics
    if save:
        registry.save(entry)
    registry.put(entry)
    return {
        A("name"): name,
        A("version"): entry.version,
        A("algorithm"): algorithm,
        A("task"): A(task),
        A("n_users"): entry.n_users,
        A("n_items"): entry.n_items,
        A("n_interactions"): entry.n_interactions,
        A("seconds"): float(seconds),
        A("metrics"): metrics,
    }
