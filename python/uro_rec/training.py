"""train and evaluate: DataFrame -> fitted model -> Entry, and metrics.

Why the details:

- Each model gets its own ``tf.Graph``: libreco builds TF1-style graphs in the
  default graph and saves/loads variables with ``tf.global_variables()``, so two
  TF models in one default graph would clash (that is what the usual
  ``reset_default_graph()`` guards against, but resetting would break models
  already loaded in this long-lived process).
- ``neg_sampling`` defaults to True for the ranking task unless the labels are
  exactly {0, 1} (explicit negatives); BPR-style losses always need it.
- ``eval`` holds out a random split and reports on it exactly what ``evaluate``
  reports (uro_rec.evaluation): the model's metrics, the most-popular baseline's, the lift.
"""
import time

from . import algorithms, registry, sources
from .entry import Entry
from .evaluation import evaluate_frame, needs_neg_sampling, parse_metrics
from .errors import BadArg
from .options import (
    boolean, check_known, choice, fraction, model_name, normalize_opts, plain,
)
from .port import A


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
        ns = needs_neg_sampling(task, df["label"].to_numpy()) or (
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
    report = {A("metrics"): {}, A("baseline"): {}, A("lift"): {}}
    if ev is not None and test_df is not None and len(test_df):
        report = evaluate_frame(entry, test_df, ev[1], ev[2], "train: eval")
    entry.metrics = report[A("metrics")]
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
        **report,
    }
