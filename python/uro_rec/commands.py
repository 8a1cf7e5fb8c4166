"""The port's commands: one function per command, called by the C side with the
decoded elements of the request tuple. Each validates its arguments (BadArg),
delegates to the module that owns the work, and returns only encodable values
(maps with Atom keys, lists, tuples, str, int, float).
"""
import sys
import time
from importlib import metadata

from . import db, evaluation, features, limits, registry, registry_store, schema, sources
from . import export as exporter
from . import recommend as rec
from .errors import BadArg
from .options import (
    boolean, check_id, check_id_list, check_known, check_length, choice, finite_float,
    model_name, non_neg_int, normalize_opts, pos_int,
)
from .port import A

# Commands whose work lives in modules of their own and needs no check here (docs/URO.md): the
# C table calls uro_rec.commands.<name>, so they are named here.
from .cluster import lease, record_run, serve, served  # noqa: F401
from .holdout import compare, observe_source  # noqa: F401
from .interactions import forget_user, purge_forgotten, record_interactions  # noqa: F401


def configure(model_dir):
    """Called once at start-up with the directory holding saved models."""
    registry.configure(model_dir)
    return A("ok")


def echo(term):
    return term


def python_info():
    # The version from the package metadata: importing libreco would pull in TensorFlow
    # and torch (seconds) just to answer info.
    return {
        A("python"): sys.version.split()[0],
        A("librecommender"): metadata.version("LibRecommender"),
        A("models"): sorted(registry.MODELS),
        A("database"): db.info(),
    }


def train(name, spec):
    """See :func:`uro_rec.training.train`."""
    from . import training

    return training.train(name, spec)


def recommend(name, user, n, opts=None):
    where = "recommend"
    entry = registry.lookup(name, where)
    user = check_id(user, where, "user")
    n = non_neg_int(n, where, "N")
    ro = rec.parse_opts(entry, opts, where)
    return rec.recommend(entry, user, n, ro)


def recommend_many(name, users, n, opts=None):
    where = "recommend_many"
    entry = registry.lookup(name, where)
    users = check_id_list(users, where, "users")
    n = non_neg_int(n, where, "N")
    ro = rec.parse_opts(entry, opts, where)
    reply_items = len(users) * min(n, entry.n_items)
    if reply_items > limits.get("max_reply_items"):
        raise BadArg(f"{where}: {len(users)} users x {min(n, entry.n_items)} items is more "
                     f"than {limits.get('max_reply_items')} ids in one reply (the limit is "
                     f"{limits.hint('max_reply_items')}); split the users")
    with rec.collector_paused():
        return dict(rec.recommend_many(entry, users, n, ro))


def predict(name, user, items, opts=None):
    """Scores in the order of ``items``; see :func:`uro_rec.recommend.predict`
    for unknown users and items. Opts ``user_feats``, ``item_feats``: uro_rec.features."""
    where = "predict"
    entry = registry.lookup(name, where)
    user = check_id(user, where, "user")
    items = check_id_list(items, where, "items")
    return rec.predict(entry, user, items, _request_feats(entry, opts, where))


def _request_feats(entry, opts, where):
    """predict's Opts -> libreco's feats dict (user and item columns together) or None."""
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("user_feats", "item_feats"), where)
    feats = {}
    if "user_feats" in o:
        feats.update(features.user_feats_option(entry, o["user_feats"], where))
    if "item_feats" in o:
        feats.update(features.item_feats_option(entry, o["item_feats"], where))
    return feats if o else None


def update_features(name, sources_map):
    """``{update_features, Name, #{users | items => Source}}``: replaces stored features
    without retraining (uro_rec.features.update); ``save`` keeps them as a new version."""
    where = "update_features"
    entry = registry.lookup(name, where)
    counts = features.update(entry, sources_map, where)
    # not registry.put: the refreshed entry shares the libreco model (and its TF session,
    # which put would close with the entry it replaces)
    registry.MODELS[entry.name] = entry.refreshed()
    return {A(k): v for k, v in counts.items()}


def similar_items(name, item, n):
    where = "similar_items"
    entry = registry.lookup(name, where)
    item = check_id(item, where, "item")
    n = non_neg_int(n, where, "N")
    return rec.similar_items(entry, item, n)


def save(name):
    version, path = registry.save(registry.lookup(name, "save"))
    return {A("version"): version, A("path"): path}


def load(name, opts=None):
    where = "load"
    name = model_name(name, where)
    o = normalize_opts(opts, "load: opts")
    check_known(o, ("version", "path", "from"), where)
    source = choice(o.get("from", "disk"), ("disk", "database"), where, "from")
    version = o.get("version", "latest")
    if isinstance(version, str) and str(version) == "latest":
        version = None
    elif isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise BadArg(f"load: version must be a positive integer or latest, got {version!r}")
    path = o.get("path")
    if path is not None and (isinstance(path, bytes) or not isinstance(path, str)):
        raise BadArg(f"load: path must be a string, got {path!r}")
    if source == "database":
        if path is not None:
            raise BadArg("load: path and from => database exclude each other")
        version, _path = registry_store.fetch(name, version, registry.model_dir())
    entry = registry.load(name, version, path)
    registry.put(entry)
    return {A("name"): name, A("version"): entry.version, A("algorithm"): entry.algorithm}


def unload(name):
    entry = registry.lookup(name, "unload")
    registry.release(registry.MODELS.pop(entry.name))
    return A("ok")


def models(opts=None):
    """Loaded models, or with ``from => database`` the versions the registry holds."""
    o = normalize_opts(opts, "models: opts")
    check_known(o, ("from",), "models")
    if choice(o.get("from", "loaded"), ("loaded", "database"), "models", "from") == "loaded":
        return [registry.MODELS[n].summary() for n in sorted(registry.MODELS)]
    return [
        {A("name"): n, A("version"): v, A("algorithm"): a, A("n_users"): nu,
         A("n_items"): ni, A("checksum"): c, A("bytes"): b}
        for n, v, a, nu, ni, c, b in registry_store.versions()
    ]


def evaluate(name, source, opts=None):
    """``#{metrics, baseline, lift}``: see :mod:`uro_rec.evaluation`."""
    where = "evaluate"
    entry = registry.lookup(name, where)
    o = normalize_opts(opts, "evaluate: opts")
    check_known(o, ("metrics", "k"), where)
    metrics, k = evaluation.parse_metrics(entry.task, o, where)
    df = sources.load(source, "evaluate: data")
    return evaluation.evaluate_frame(entry, df, metrics, k, where)


def export(name, opts=None):
    """Top-N lists for ``users`` (``all`` or a list) into a recommendations table, in
    batches of ``batch_size`` rows, each batch one retried transaction (see
    :mod:`uro_rec.export`)."""
    where = "export"
    entry = registry.lookup(name, where)
    o = normalize_opts(opts, "export: opts")
    check_known(o, ("users", "n", "table", "batch_size", "method", "writers"), where)
    method = choice(o.get("method", "copy"), ("copy", "insert"), where, "method")
    writers = pos_int(o.get("writers", 2), where, "writers")
    if writers > 4:
        raise BadArg(f"{where}: writers must be 1..4, got {writers}")
    users = o.get("users", "all")
    if isinstance(users, str) and str(users) == "all":
        users = entry.user_ids
    else:
        # Ids are stored as text: 1 and "1" would be one user twice in a batch.
        seen = set()
        users = [u for u in check_id_list(users, where, "users")
                 if not (str(u) in seen or seen.add(str(u)))]
    n = pos_int(o.get("n", 10), where, "n")
    batch_size = pos_int(o.get("batch_size", 5000), where, "batch_size")
    if batch_size > limits.get("max_reply_items"):  # a batch is built in memory, like a reply
        raise BadArg(f"{where}: batch_size must be at most {limits.get('max_reply_items')} "
                     f"rows (the limit is {limits.hint('max_reply_items')})")
    table = db.check_table(o.get("table", "uro_rec_recommendations"), where)
    return exporter.export(entry, users, n, table, batch_size, method, writers)


def publish(name, opts=None):
    """Stores the loaded version of ``name`` (saved first if it never was) in the
    database registry, so any port can ``load`` it ``from => database``."""
    where = "publish"
    entry = registry.lookup(name, where)
    check_known(normalize_opts(opts, "publish: opts"), (), where)
    if entry.path is None:
        registry.save(entry)
    digest, total = registry_store.publish(entry)
    return {A("name"): entry.name, A("version"): entry.version, A("checksum"): digest,
            A("bytes"): total}


def apply_schema(directory=None):
    """Creates the interactions, recommendations and registry tables (priv/sql/*.sql)."""
    if directory is not None and not isinstance(directory, str):
        raise BadArg("apply_schema: directory must be a string")
    return schema.apply_schema(directory)


def _events(events, where):
    """Observed events as (user, item, label, time) rows; time defaults to now."""
    if not isinstance(events, list):
        raise BadArg(f"{where}: events must be a list of {{User, Item, Label, Time}}")
    check_length(events, where, "events")
    rows = []
    now = time.time()
    for k, ev in enumerate(events):
        if not isinstance(ev, tuple) or len(ev) not in (3, 4):
            raise BadArg(f"{where}: event {k + 1} must be {{User, Item, Label[, Time]}}, "
                         f"got {ev!r}")
        user = check_id(ev[0], where, "user")
        item = check_id(ev[1], where, "item")
        label = finite_float(ev[2], where, f"event {k + 1} label")
        t = finite_float(ev[3], where, f"event {k + 1} time") if len(ev) == 4 else now
        rows.append((user, item, label, t))
    return rows


def observe(name, events, opts=None):
    """Interaction events ``{User, Item, Label, Time}`` (Time optional) take effect at once:
    ``recommend`` stops returning what a user just consumed, without a retrain. With a
    database configured (and ``store`` not false) they are also appended to the
    interactions table (``table``, default uro_rec_interactions) in one statement."""
    where = "observe"
    entry = registry.lookup(name, where)
    o = normalize_opts(opts, "observe: opts")
    check_known(o, ("store", "table"), where)
    store = boolean(o.get("store", True), where, "store")
    table = db.check_table(o.get("table", "uro_rec_interactions"), where)
    rows = _events(events, where)
    # Store first: a failed call must leave the model as it was.
    stored = 0
    if rows and store and db.info()[A("configured")]:
        stored = exporter.append_events(rows, table)["affected"]
    unknown_items = entry.observe(rows)
    return {A("events"): len(rows), A("applied"): len(rows) - unknown_items,
            A("unknown_items"): unknown_items, A("stored"): stored}
