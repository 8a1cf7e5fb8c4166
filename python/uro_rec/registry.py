"""Loaded models (in memory) and saved versions (on disk).

Layout: ``<model_dir>/<name>/<version>/`` with libreco's own files (prefix
``model``), ``retrain/`` (the training state a later retrain continues from:
uro_rec.retrain), ``serving/`` for embedding models (memory-mapped .npy files:
uro_rec.snapshot; versions saved before it have ``serving.npz``), plus ``uro_meta.json``, our
sidecar: algorithm, task, version, metrics, the feature layout (uro_rec.features) and the
exact user/item id lists. The sidecar exists because libreco's DataInfo keeps ids
in numpy arrays: int64 ids come back as ``numpy.int64``, bignums and strings as
pickled objects; our JSON lists give back exactly the Python ints and strs the
model was trained with. A version is written to a hidden temp dir and renamed
into place, so a crash never leaves a half-written version that ``latest`` picks.

The copies of saved versions in the database (``publish``, ``load from => database``) are
:mod:`uro_rec.registry_store`'s. Versions are signed when saved and verified before they are
read (:mod:`uro_rec.signing`: a saved model is code).
"""
import json
import os
import shutil
import tempfile

import numpy as np

from .entry import Entry
from .errors import BadArg, UnknownModel, internal
from .options import model_name
from . import algorithms, signing, snapshot as serving

PREFIX = "model"
META = "uro_meta.json"
SNAPSHOT = "serving.npz"
FORMAT = 1

_state = {"model_dir": None}
#: name -> Entry of every loaded model.
MODELS = {}


def configure(model_dir):
    if isinstance(model_dir, bytes) or not isinstance(model_dir, str) or not model_dir:
        raise BadArg(f"configure: model_dir must be a non-empty string, got {model_dir!r}")
    os.makedirs(model_dir, exist_ok=True)
    _state["model_dir"] = os.path.abspath(model_dir)


def model_dir():
    if _state["model_dir"] is None:
        raise internal("configure/1 has not been called: no model directory")
    return _state["model_dir"]


def get(name):
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(name) from None


def lookup(name, where):
    """The loaded model a command names: the name checked (BadArg), then found
    (UnknownModel)."""
    if type(name) is str:  # every loaded model's name passed model_name: found means valid
        entry = MODELS.get(name)
        if entry is not None:
            return entry
    return get(model_name(name, where))


def put(entry):
    """Register ``entry``, replacing (and releasing) any model of that name."""
    old = MODELS.get(entry.name)
    MODELS[entry.name] = entry
    if old is not None and old is not entry:
        release(old)


def release(entry):
    """Close a TF session now instead of whenever the GC gets to it."""
    # entry._model, not entry.model: releasing must not load a model that was never needed.
    sess = getattr(entry._model, "sess", None)
    if sess is not None:
        try:
            sess.close()
        except Exception:  # a half-built model: nothing to free
            pass


def versions(name):
    base = os.path.join(model_dir(), name)
    if not os.path.isdir(base):
        return []
    return sorted(int(d) for d in os.listdir(base) if d.isdigit() and
                  os.path.isfile(os.path.join(base, d, META)))


def new_graph():
    from libreco.tfops import tf  # tf.compat.v1 as libreco uses it

    return tf.Graph()


def save(entry):
    """Write ``entry`` as the next version of its name, which becomes its version and path;
    return (version, path)."""
    import libreco

    base = os.path.join(model_dir(), entry.name)
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".saving-", dir=base)
    try:
        with entry.graph_ctx():
            entry.data_info.save(tmp, PREFIX)
            # inference_only: embeddings/variables needed to serve, not the
            # optimiser state; every supported class accepts the keyword.
            entry.model.save(tmp, PREFIX, inference_only=True)
        from . import retrain  # (it imports this module)

        retrain.save_state(entry, tmp)  # what a later {train, ..., from_version} continues
        held = []  # the ids serving/ holds, left out of the sidecar
        if entry.kind == "embed":
            held = serving.save(entry.snapshot_arrays(), tmp, entry.user_ids, entry.item_ids)
        meta = {
            "format": FORMAT,
            "algorithm": entry.algorithm,
            "task": entry.task,
            "libreco": libreco.__version__,
            "user_ids": list(entry.user_ids),
            "item_ids": list(entry.item_ids),
            "metrics": {str(k): float(v) for k, v in (entry.metrics or {}).items()},
            "features": entry.features,  # the layout user_feats are read with, or None
        }
        for key in held:
            del meta[key]
        for _attempt in range(100):
            existing = [int(d) for d in os.listdir(base) if d.isdigit()]
            version = max(existing, default=0) + 1
            meta["version"] = version
            with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
                json.dump(meta, f)
            signing.sign(tmp, entry.name, version)  # when a model key is set
            final = os.path.join(base, str(version))
            try:
                os.rename(tmp, final)  # fails if another writer took the number
            except OSError:
                if os.path.exists(final):
                    continue
                raise
            entry.version, entry.path = version, final
            return version, final
        raise internal(f"save: could not allocate a version under {base}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ids_of(directory, meta):
    """(user ids, item ids) of a saved version: from its sidecar, or from serving/ for the
    ids that serving/ holds (uro_rec.idmap: the sidecar leaves those out)."""
    got = [meta[k] if k in meta else serving.ids(directory, side)
           for k, side in (("user_ids", "user"), ("item_ids", "item"))]
    if got[0] is None or got[1] is None:
        raise KeyError("user_ids")
    return got


def load(name, version=None, path=None):
    """Load a saved version (``None`` = latest) or an explicit directory."""
    if path is not None:
        directory = path
        if not os.path.isfile(os.path.join(directory, META)):
            raise BadArg(f"load: {directory} is not a saved uro_rec model (no {META})")
    else:
        vs = versions(name)
        if not vs:
            raise UnknownModel(name)
        if version is None:
            version = vs[-1]
        elif version not in vs:
            raise BadArg(
                f"load: model {name} has no version {version}; saved versions: "
                f"{', '.join(map(str, vs))}"
            )
        directory = os.path.join(model_dir(), name, str(version))
    # Before a byte of the version is read: loading it may unpickle (signing's module doc).
    what = f"load: {directory}" if path is not None else f"load: {name} version {version}"
    signed_as = (None, None) if path is not None else (name, version)
    signing.check(directory, what, *signed_as)
    try:
        with open(os.path.join(directory, META), encoding="utf-8") as f:
            meta = json.load(f)
        algorithm, _task = meta["algorithm"], meta["task"]
        snap = serving.load(directory) if serving.exists(directory) else None
        user_ids, item_ids = ids_of(directory, meta)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadArg(f"load: {directory}/{META} is not a readable uro_rec model record: {e}") from None
    algorithms.resolve_name(algorithm, "load")

    def load_libreco(later=True):
        if later:  # the snapshot was served first: the files may have changed since
            signing.check(directory, what, *signed_as)
        cls = algorithms.resolve(algorithm, "load")
        from libreco.data import DataInfo

        graph = new_graph()
        try:
            with graph.as_default():
                data_info = DataInfo.load(directory, PREFIX)
                model = cls.load(directory, PREFIX, data_info)
        except (OSError, KeyError, ValueError) as e:
            raise internal(f"load: could not read model files in {directory}: {e}") from e
        return model, data_info, graph

    snapshot = os.path.join(directory, SNAPSHOT)  # before serving/
    embed = algorithms.kind(algorithm) == "embed"
    if embed and snap is not None:
        entry = Entry.from_snapshot(
            name, algorithm, meta["task"], user_ids, item_ids,
            snap, load_libreco, version=meta.get("version"), path=directory)
    elif embed and os.path.isfile(snapshot):
        with np.load(snapshot) as npz:
            entry = Entry.from_snapshot(
                name, algorithm, meta["task"], user_ids, item_ids,
                {k: npz[k] for k in npz.files}, load_libreco,
                version=meta.get("version"), path=directory)
    else:
        model, data_info, graph = load_libreco(later=False)
        entry = Entry(
            name, algorithm, meta["task"], model, data_info, graph,
            user_ids, item_ids, version=meta.get("version"), path=directory,
        )
    entry.metrics = meta.get("metrics", {})
    entry.features = meta.get("features")
    return entry
