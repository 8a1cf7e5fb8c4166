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
- Before ``fit`` the global random generators (Python's, numpy's, torch's) are seeded with
  the model's seed: libreco's first-epoch shuffle draws from torch's, so a model would
  otherwise depend on what the process trained before it.
- ``features`` (uro_rec.features) train on DatasetFeat instead of DatasetPure; the column
  layout is kept with the Entry and saved with the version, serving needs it.
"""
import time

from . import algorithms, features, registry, sources
from .entry import Entry
from .evaluation import evaluate_frame, needs_neg_sampling, parse_metrics
from .errors import BadArg
from .options import (
    boolean, check_known, choice, fraction, model_name, normalize_opts, plain,
)
from .port import A

SPEC_KEYS = ("algorithm", "data", "task", "params", "fit", "eval", "save", "features",
             "from_version")


def train(name, spec):
    """``{train, Name, Spec}``: a new model, or with ``from_version`` a retrained one
    (uro_rec.retrain)."""
    where = "train"
    name = model_name(name, where)
    spec = normalize_opts(spec, "train: spec")
    check_known(spec, SPEC_KEYS, where)
    if "data" not in spec:
        raise BadArg("train: spec must contain data")
    if "from_version" in spec:
        from . import retrain

        return retrain.retrain(name, spec)
    if "algorithm" not in spec:
        raise BadArg("train: spec must contain algorithm")
    cls = algorithms.resolve(spec["algorithm"], where)
    task = choice(spec.get("task", "ranking"), ("ranking", "rating"), where, "task")
    params = plain(normalize_opts(spec.get("params"), "train: params"))
    boolean(spec.get("save", True), where, "save")  # checked before the work, used after
    layout = None
    if spec.get("features") is not None:
        feats = features.parse_spec(spec["features"], cls.__name__, where)
        df, layout = features.training_frame(spec["data"], feats, "train: data")
    else:
        df = sources.training_frame(sources.load(spec["data"], "train: data"))
    ev = parse_eval(spec, task)
    df, test_df = split(df, ev)

    def build():
        from libreco.data import DatasetFeat, DatasetPure

        if layout is None:
            return DatasetPure.build_trainset(df)
        try:
            return DatasetFeat.build_trainset(df, **features.libreco_columns(layout))
        except ValueError as e:
            raise BadArg(f"train: features: {e}") from e

    started = time.perf_counter()
    trainset, data_info = build()
    kwargs = algorithms.constructor_kwargs(cls, params, data_info.n_items, where)
    model, graph = fit_model(cls, task, data_info, trainset, kwargs, spec, df, where)
    entry = Entry(name, cls.__name__, task, model, data_info, graph,
                  data_info.user_unique_vals.tolist(), data_info.item_unique_vals.tolist())
    entry.features = layout
    entry.trained_here = True
    return finish(entry, test_df, ev, spec, time.perf_counter() - started)


def parse_eval(spec, task):
    if spec.get("eval") is None:
        return None
    eo = normalize_opts(spec["eval"], "train: eval")
    check_known(eo, ("test_size", "metrics", "k"), "train: eval")
    test_size = fraction(eo.get("test_size", 0.2), "train: eval", "test_size")
    metrics, k = parse_metrics(task, eo, "train: eval")
    return test_size, metrics, k


def split(df, ev):
    """(train, held-out) with LibRecommender's random_split, seed 42; no held-out without eval."""
    if ev is None:
        return df, None
    from libreco.data import random_split

    if len(df) < 5:
        raise BadArg("train: eval needs at least 5 rows of data")
    return random_split(df, test_size=ev[0], seed=42, filter_unknown=True)


def fit_model(cls, task, data_info, trainset, kwargs, spec, df, where, rebuild=None):
    """Construct ``cls`` in a graph of its own, run ``rebuild(model)`` (retraining), fit."""
    from . import streams

    algorithm = cls.__name__
    fit = plain(normalize_opts(spec.get("fit"), "train: fit"))
    graph = registry.new_graph()
    streams.reset_epochs()
    with graph.as_default():
        try:
            model = cls(task=task, data_info=data_info, **kwargs)
        except (TypeError, ValueError, AssertionError) as e:
            raise BadArg(f"train: {algorithm} rejected its params: {e}") from e
        if rebuild is not None:
            rebuild(model)
        ns = needs_neg_sampling(task, df["label"].to_numpy()) or (
            getattr(model, "loss_type", None) in ("bpr", "max_margin")
        )
        fitkw = algorithms.fit_kwargs(cls, fit, ns, where)
        seed_global_rngs(getattr(model, "seed", 42))
        try:
            model.fit(trainset, **fitkw)
        except (ValueError, AssertionError, TypeError) as e:
            # libreco validates task/labels/neg_sampling combinations this way
            raise BadArg(f"train: libreco refused to fit {algorithm}: {e}") from e
    return model, graph


def seed_global_rngs(seed):
    """LibRecommender seeds its own generators from the model's seed, except one draw: the
    first epoch's shuffle (torch's RandomSampler) takes its seed from torch's global
    generator before libreco seeds it, so without this a model depends on what trained
    before it in the same process. Python's and numpy's global generators likewise."""
    import random

    import numpy as np
    import torch

    seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 42
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def finish(entry, test_df, ev, spec, seconds):
    """Evaluate on the held-out part, save (unless ``save => false``), serve; the reply."""
    save = boolean(spec.get("save", True), "train", "save")
    report = {A("metrics"): {}, A("baseline"): {}, A("lift"): {}}
    if ev is not None and test_df is not None and len(test_df):
        report = evaluate_frame(entry, test_df, ev[1], ev[2], "train: eval")
    entry.metrics = report[A("metrics")]
    if save:
        registry.save(entry)  # which sets entry.version and entry.path
    registry.put(entry)
    return {
        A("name"): entry.name,
        A("version"): entry.version,
        A("algorithm"): entry.algorithm,
        A("task"): A(entry.task),
        A("n_users"): entry.n_users,
        A("n_items"): entry.n_items,
        A("n_interactions"): entry.n_interactions,
        A("seconds"): float(seconds),
        **report,
    }
