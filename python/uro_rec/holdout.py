"""The held-out rows of a scheduled run: comparing two versions on them, and telling the
version that is served what it was not trained on.

The scheduler (``UroRecommender.Pipeline``) trains a candidate on every row but each user's
latest ones and holds those out (the split is SQL: ``UroRecommender.Models``). ``compare``
then scores, on the same held-out rows, the candidate (the loaded model ``Name``), the version
served now (``Against``, a saved version of the same name, read from the model directory or
fetched from the registry, never put in place of the loaded one) and the most-popular
baseline, with ``uro_rec.evaluation`` for all three: what is scored is what the port serves.
Only the rows whose user and item both versions know are kept, so the two versions answer
for the same users (the older one has not seen the newest users and worlds); the baseline is
the candidate's popularity ranking on those users, as ``evaluate`` computes it.

``observe_source`` applies a source's rows as ``observe`` events (never stored): after a
version trained without each user's latest rows is loaded, its ports are told of them, so no
list holds the world a user visited last.
"""
from . import evaluation, registry, sources
from .errors import BadArg
from .options import boolean, check_known, choice, model_name, normalize_opts, pos_int
from .port import A


def _saved(name, version, source):
    """Version ``version`` of ``name`` as an Entry of its own (not registered)."""
    if version not in registry.versions(name):
        if source != "database":
            raise BadArg(f"compare: model {name} has no version {version} on disk")
        from . import registry_store

        registry_store.fetch(name, version, registry.model_dir())
    return registry.load(name, version)


def _known(entry, df):
    users, items = entry.user_index, entry.item_index
    return [u in users and i in items for u, i in zip(df["user"].tolist(), df["item"].tolist())]


def compare(name, against, source, opts=None):
    """``#{rows, users, k, candidate => #{metrics, baseline, lift}, current => ... | nil}``;
    ``current`` is nil without ``Against``, or when no held-out row has a user and an item
    that both versions know (then the candidate is scored on the rows it knows)."""
    where = "compare"
    candidate = registry.get(model_name(name, where))
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("metrics", "k", "from"), where)
    fetch = choice(o.get("from", "database"), ("disk", "database"), where, "from")
    metrics, k = evaluation.parse_metrics(candidate.task, o, where)
    df = sources.load(source, f"{where}: data")
    current = None
    if against is not None:
        current = _saved(candidate.name, pos_int(against, where, "against"), fetch)
    try:
        known = _known(candidate, df)
        both = [a and b for a, b in zip(known, _known(current, df))] if current else []
        if not any(both):
            if current is not None:
                registry.release(current)
            current = None
            both = known
        df = df[both]
        if df.empty:
            raise BadArg(f"{where}: no held-out row has a user and an item the model knows")
        k = min([k, candidate.n_items] + ([current.n_items] if current else []))
        return {A("rows"): int(len(df)), A("users"): int(df["user"].nunique()), A("k"): k,
                A("candidate"): evaluation.evaluate_frame(candidate, df, metrics, k, where),
                A("current"): (evaluation.evaluate_frame(current, df, metrics, k, where)
                               if current is not None else None)}
    finally:
        if current is not None:
            registry.release(current)


def observe_source(name, source, opts=None):
    """The rows of ``source`` as ``observe`` events of ``name`` (``store`` is false unless
    Opts say otherwise); ``observe``'s reply."""
    from .commands import observe

    where = "observe_source"
    name = model_name(name, where)
    o = normalize_opts(opts, f"{where}: opts")
    check_known(o, ("store",), where)
    store = boolean(o.get("store", False), where, "store")
    df = sources.load(source, f"{where}: data")
    cols = [df["user"].tolist(), df["item"].tolist(), df["label"].astype(float).tolist()]
    if "time" in df.columns:
        cols.append(df["time"].astype(float).tolist())
    return observe(name, list(zip(*cols)), {"store": store})
