"""Incremental retraining: ``{train, Name, #{from_version => V | latest, data => NewSource}}``
continues a saved version on new data with LibRecommender's own retraining path:

1. ``DataInfo.load`` of version V, then ``DatasetPure`` / ``DatasetFeat.merge_trainset(new data,
   data_info, merge_behavior=True)``: new users and items get new inner ids after the old
   ones, old ones keep theirs, and each user's consumed items are the old and the new;
2. a new model of the same class with V's hyperparameters (``params`` in the spec override
   them, e.g. ``n_epochs``), ``rebuild_model`` from V's training state (the variables, with
   the optimiser's, that LibRecommender reads), then ``fit`` on the new data only;
3. the result is saved as the next version, like any ``train``.

The training state is what ``model.save(..., inference_only=False)`` writes; the port keeps it
in ``<version>/retrain/`` beside the inference files (:func:`save_state`), for every algorithm
LibRecommender can retrain, when the model was trained in this process, and copies it from the
version a loaded model came from otherwise (ALS and the Rust models: the version's own files,
:data:`STATE_IN_PLACE`). A version without it (saved before this existed)
cannot be continued: ``unsupported``, naming the reason, as for the algorithms
LibRecommender cannot retrain (:data:`UNSUPPORTED`).
"""
import json
import os
import shutil
import time

from . import algorithms, registry
from .errors import BadArg, Unsupported
from .options import normalize_opts, plain

STATE_DIR = "retrain"
#: Algorithms whose saved files are their whole training state however the model was saved
#: (ALS keeps its embeddings, the Rust models their similarities): the version directory
#: is their state, nothing is written twice.
STATE_IN_PLACE = ("ALS", "RsItemCF", "RsUserCF", "Swing")

#: Algorithms LibRecommender 1.5.2 has no retraining path for, and why.
UNSUPPORTED = {
    "ItemCF": "LibRecommender 1.5.2 cannot retrain ItemCF (its rebuild_model raises "
              "NotImplementedError); RsItemCF is the same model and retrains",
    "UserCF": "LibRecommender 1.5.2 cannot retrain UserCF (its rebuild_model raises "
              "NotImplementedError); RsUserCF is the same model and retrains",
}
BPR_CYTHON = ("LibRecommender 1.5.2 cannot retrain BPR's Cython backend (use_tf => false): "
              "its save keeps no variables and its rebuild_model needs TensorFlow's "
              "(AttributeError: no sess); train with use_tf => true")


def unsupported_reason(algorithm, hparams):
    if algorithm in UNSUPPORTED:
        return UNSUPPORTED[algorithm]
    if algorithm == "BPR" and hparams.get("use_tf") is False:
        return BPR_CYTHON
    return None


def save_state(entry, directory):
    """Writes ``directory/retrain/`` for a version being saved (called by registry.save)."""
    if entry.algorithm in STATE_IN_PLACE or unsupported_reason(entry.algorithm,
                                                                 entry.hyperparameters()):
        return
    target = os.path.join(directory, STATE_DIR)
    if entry.trained_here and entry._model is not None:
        os.makedirs(target)
        with entry.graph_ctx():
            entry.model.save(target, registry.PREFIX, inference_only=False)
        return
    origin = entry.path or entry.saved_from
    if origin and os.path.isdir(os.path.join(origin, STATE_DIR)):
        shutil.copytree(os.path.join(origin, STATE_DIR), target)


def retrain(name, spec):
    """train's ``from_version`` path (see the module doc); the reply is train's."""
    from . import training

    where = "train"
    directory, meta = _version(name, spec["from_version"], where)
    algorithm, task = meta["algorithm"], meta["task"]
    if spec.get("algorithm") is not None and str(spec["algorithm"]) != algorithm:
        raise BadArg(f"{where}: version {meta['version']} of {name} is {algorithm}, "
                     f"not {spec['algorithm']}")
    saved = _hyperparameters(directory)
    reason = unsupported_reason(algorithm, saved)
    if reason:
        raise Unsupported(f"{where}: {reason}")
    state = directory if algorithm in STATE_IN_PLACE else os.path.join(directory, STATE_DIR)
    if not os.path.isdir(state):
        raise Unsupported(f"{where}: version {meta['version']} of {name} holds no training "
                          f"state to continue from (saved before retraining existed, or "
                          f"from a model whose state was not kept); train it anew")
    cls = algorithms.resolve(algorithm, where)
    layout = meta.get("features")
    df = _new_data(spec, layout, where)
    ev = training.parse_eval(spec, task)
    df, test_df = training.split(df, ev)
    started = time.perf_counter()
    trainset, info = _merged(df, directory, layout, where)
    params = {**saved, **plain(normalize_opts(spec.get("params"), "train: params"))}
    params.pop("task", None)
    kwargs = algorithms.constructor_kwargs(cls, params, info.n_items, where)
    model, graph = training.fit_model(cls, task, info, trainset, kwargs, spec, df, where,
                                      rebuild=lambda m: _rebuild(m, state, where))
    entry = _entry(name, algorithm, task, model, info, graph, meta, directory)
    entry.features = layout
    return training.finish(entry, test_df, ev, spec, time.perf_counter() - started)


def _version(name, version, where):
    vs = registry.versions(name)
    if not vs:
        raise BadArg(f"{where}: from_version: model {name} has no saved version")
    if isinstance(version, str) and str(version) == "latest":
        version = vs[-1]
    if isinstance(version, bool) or not isinstance(version, int) or version not in vs:
        raise BadArg(f"{where}: from_version must be latest or one of {name}'s saved "
                     f"versions ({', '.join(map(str, vs))}), got {version!r}")
    directory = os.path.join(registry.model_dir(), name, str(version))
    with open(os.path.join(directory, registry.META), encoding="utf-8") as f:
        return directory, json.load(f)


def _hyperparameters(directory):
    path = os.path.join(directory, f"{registry.PREFIX}_hyper_parameters.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _new_data(spec, layout, where):
    from . import features, sources

    if layout is None:
        if spec.get("features") is not None:
            raise BadArg(f"{where}: the version was trained without features")
        return sources.training_frame(sources.load(spec["data"], "train: data"))
    given = normalize_opts(spec.get("features"), "train: features")
    if set(given) - {"users", "items"}:
        raise BadArg(f"{where}: a retrain keeps the version's feature columns: features "
                     f"takes users => Source and items => Source only")
    kinds = {side: {**{c: "sparse" for c in layout[side]["sparse"]},
                    **{c: "dense" for c in layout[side]["dense"]},
                    **{c: "multi_sparse" for c in layout[side]["multi_sparse"]}}
             for side in ("user", "item")}
    feats = {**kinds, "users": given.get("users"), "items": given.get("items")}
    df, _ = features.training_frame(spec["data"], feats, "train: data", like=layout)
    return df


def _merged(df, directory, layout, where):
    from libreco.data import DataInfo, DatasetFeat, DatasetPure

    old = DataInfo.load(directory, registry.PREFIX)
    dataset = DatasetPure if layout is None else DatasetFeat
    try:
        return dataset.merge_trainset(df, old, merge_behavior=True)
    except (ValueError, KeyError) as e:
        raise BadArg(f"{where}: the new data does not fit the version's: {e}") from e


def _rebuild(model, state, where):
    try:
        model.rebuild_model(state, registry.PREFIX)
    except (OSError, KeyError, ValueError) as e:
        raise BadArg(f"{where}: LibRecommender could not rebuild the model from "
                     f"{state}: {e}") from e


def _entry(name, algorithm, task, model, info, graph, meta, directory):
    """Old ids keep their exact Python values (the version's sidecar); new ones follow in
    LibRecommender's order."""
    from .entry import Entry

    old_users, old_items = registry.ids_of(directory, meta)  # (serving/ may hold them)
    users = list(old_users) + info.user_unique_vals[len(old_users):].tolist()
    items = list(old_items) + info.item_unique_vals[len(old_items):].tolist()
    entry = Entry(name, algorithm, task, model, info, graph, users, items)
    entry.trained_here = True
    return entry
