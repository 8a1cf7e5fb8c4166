"""The port's commands: one function per command, called by the C side with the
decoded elements of the request tuple. Each validates its arguments (BadArg),
delegates to the module that owns the work, and returns only encodable values
(maps with Atom keys, lists, tuples, str, int, float).
"""
import sys

from . import recommend as rec
from . import registry, sources
from .errors import BadArg
from .options import (
    check_id, check_id_list, check_known, model_name, non_neg_int, normalize_opts,
)
from .port import A


def configure(model_dir):
    """Called once at start-up with the directory holding saved models."""
    registry.configure(model_dir)
    return A("ok")


def echo(term):
    return term


def python_info():
    import libreco

    return {
        A("python"): sys.version.split()[0],
        A("librecommender"): libreco.__version__,
        A("models"): sorted(registry.MODELS),
    }


def train(name, spec):
    """See :func:`uro_rec.training.train`."""
    from . import training

    return training.train(name, spec)


def recommend(name, user, n, opts=None):
    where = "recommend"
    entry = registry.get(model_name(name, where))
    user = check_id(user, where, "user")
    n = non_neg_int(n, where, "N")
    ro = rec.parse_opts(entry, opts, where)
    return rec.recommend(entry, user, n, ro)


def recommend_many(name, users, n, opts=None):
    where = "recommend_many"
    entry = registry.get(model_name(name, where))
    users = check_id_list(users, where, "users")
    n = non_neg_int(n, where, "N")
    ro = rec.parse_opts(entry, opts, where)
    return {u: rec.recommend(entry, u, n, ro) for u in users}


def predict(name, user, items):
    """Scores in the order of ``items``; see :func:`uro_rec.recommend.predict`
    for unknown users and items."""
    where = "predict"
    entry = registry.get(model_name(name, where))
    user = check_id(user, where, "user")
    items = check_id_list(items, where, "items")
    return rec.predict(entry, user, items)


def similar_items(name, item, n):
    where = "similar_items"
    entry = registry.get(model_name(name, where))
    item = check_id(item, where, "item")
    n = non_neg_int(n, where, "N")
    return rec.similar_items(entry, item, n)


def save(name):
    entry = registry.get(model_name(name, "save"))
    version, path = registry.save(entry)
    entry.version, entry.path = version, path
    return {A("version"): version, A("path"): path}


def load(name, opts=None):
    where = "load"
    name = model_name(name, where)
    o = normalize_opts(opts, "load: opts")
    check_known(o, ("version", "path"), where)
    version = o.get("version", "latest")
    if isinstance(version, str) and str(version) == "latest":
        version = None
    elif isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise BadArg(f"load: version must be a positive integer or latest, got {version!r}")
    path = o.get("path")
    if path is not None and (isinstance(path, bytes) or not isinstance(path, str)):
        raise BadArg(f"load: path must be a string, got {path!r}")
    entry = registry.load(name, version, path)
    registry.put(entry)
    return {A("name"): name, A("version"): entry.version, A("algorithm"): entry.algorithm}


def unload(name):
    name = model_name(name, "unload")
    registry.get(name)
    registry.release(registry.MODELS.pop(name))
    return A("ok")


def models():
    return [registry.MODELS[n].summary() for n in sorted(registry.MODELS)]


def evaluate(name, source, opts=None):
    from . import training

    where = "evaluate"
    entry = registry.get(model_name(name, where))
    o = normalize_opts(opts, "evaluate: opts")
    check_known(o, ("metrics", "k"), where)
    metrics, k = training.parse_metrics(entry.task, o, where)
    df = sources.load(source, "evaluate: data")
    return training.evaluate_frame(entry, df, metrics, k, where)
