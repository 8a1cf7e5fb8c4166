"""The algorithm table: which libreco classes we serve and how to drive them.

Every class in ``libreco.algorithms`` was tried on a DatasetPure (no features)
train set with libreco 1.5.2: all of them train, recommend, save and load except
the two DGL variants (DGL is not installed, and their non-DGL twins PinSage and
GraphSage do the same job). So everything but those is in :data:`SUPPORTED`;
the feature models (FM, WideDeep, ...) then simply run with no features.

``kind`` says how we serve a model:

- ``embed``: it has ``user_embeds_np``/``item_embeds_np`` after fit and load, so
  recommend/predict/similar_items are done here, not by libreco: lists ranked by their exact
  float64 score through the float32 kernel of c_src/rank.c (uro_rec.shortlist), deterministic.
- ``memory``: the neighbourhood models; their own candidates come from
  :mod:`uro_rec.neighbours` (never libreco's random popular fill), scores from ``predict``.
- ``other``: we call the model's own ``recommend_user``/``predict``.
"""
import inspect

from .errors import BadArg, Unsupported

#: libreco class name -> kind. Kept explicit (not introspected) so an upgrade of
#: libreco cannot silently add an algorithm nobody has tried.
SUPPORTED = {
    # memory-based
    "UserCF": "memory",
    "ItemCF": "memory",
    "RsUserCF": "memory",
    "RsItemCF": "memory",
    "Swing": "memory",
    # matrix factorisation / pure embedding models
    "SVD": "embed",
    "SVDpp": "embed",
    "ALS": "embed",
    "BPR": "embed",
    "Item2Vec": "embed",
    "DeepWalk": "embed",
    "NGCF": "embed",
    "LightGCN": "embed",
    "PinSage": "embed",
    "GraphSage": "embed",
    # dynamic embedding (TF graph rebuilt on load, embeddings precomputed)
    "YouTubeRetrieval": "embed",
    "RNN4Rec": "embed",
    "Caser": "embed",
    "WaveNet": "embed",
    "TwoTower": "embed",
    # scoring networks (feature models, run without features)
    "NCF": "other",
    "YouTubeRanking": "other",
    "FM": "other",
    "WideDeep": "other",
    "DeepFM": "other",
    "AutoInt": "other",
    "DIN": "other",
    "Transformer": "other",
    "SIM": "other",
}

UNSUPPORTED = {
    "PinSageDGL": "needs the DGL library, which is not installed; use PinSage",
    "GraphSageDGL": "needs the DGL library, which is not installed; use GraphSage",
}

TORCH_MODELS = {"NGCF", "LightGCN", "PinSage", "GraphSage"}


def resolve(name, where="train"):
    """Algorithm name (str or atom) -> libreco class; BadArg/Unsupported otherwise."""
    name = resolve_name(name, where)
    import libreco.algorithms as algos  # slow import (TensorFlow): only when needed

    return getattr(algos, name)


def resolve_name(name, where="train"):
    """Checks an algorithm name without importing libreco; returns it as a plain str."""
    if isinstance(name, bytes) or not isinstance(name, str):
        raise BadArg(f"{where}: algorithm must be a string or atom, got {name!r}")
    name = str(name)
    if name in UNSUPPORTED:
        raise Unsupported(f"{where}: algorithm {name} {UNSUPPORTED[name]}")
    if name not in SUPPORTED:
        raise BadArg(
            f"{where}: unknown algorithm {name!r}; supported: {', '.join(sorted(SUPPORTED))}"
        )
    return name


def kind(name):
    return SUPPORTED[name]


def constructor_kwargs(cls, params, n_items, where="train"):
    """User params + our defaults, checked against the constructor's signature.

    Defaults exist where libreco's own would fail or misbehave here:
    ALS needs a positive float ``reg`` (its default None raises), torch models
    default to ``device='cuda'``, YouTubeRetrieval samples ``batch_size``
    negatives by default which must stay below the number of items.
    """
    sig = inspect.signature(cls.__init__).parameters
    accepted = set(sig) - {"self", "task", "data_info"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise BadArg(
            f"{where}: unknown param(s) {', '.join(unknown)} for {cls.__name__}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    kw = {k: _check_param_type(cls.__name__, k, v, sig[k].default, where)
          for k, v in params.items()}
    name = cls.__name__
    if name == "ALS":
        reg = kw.get("reg", 1.0)
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or reg <= 0:
            raise BadArg(f"{where}: ALS param reg must be a positive number, got {reg!r}")
        kw["reg"] = float(reg)
    if name in TORCH_MODELS:
        kw.setdefault("device", "cpu")
    if name == "YouTubeRetrieval" and kw.get("num_sampled_per_batch") is None:
        batch = kw.get("batch_size", sig["batch_size"].default)
        kw["num_sampled_per_batch"] = max(1, min(int(batch), n_items - 1))
    return kw


def fit_kwargs(cls, fit, neg_sampling, where="train"):
    sig = inspect.signature(cls.fit).parameters
    # Only named parameters: ALS.fit takes **kwargs and would swallow typos.
    accepted = {n for n, p in sig.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    accepted -= {"self", "train_data", "eval_data", "metrics", "k"}
    unknown = sorted(set(fit) - accepted)
    if unknown:
        raise BadArg(
            f"{where}: unknown fit option(s) {', '.join(unknown)} for "
            f"{cls.__name__}; accepted: {', '.join(sorted(accepted))}"
        )
    kw = {"verbose": 2}  # 2: libreco prints per-epoch loss, which streams.py turns into events
    kw.update(fit)
    ns = kw.get("neg_sampling", neg_sampling)
    if not isinstance(ns, bool):
        raise BadArg(f"{where}: fit neg_sampling must be true or false, got {ns!r}")
    kw["neg_sampling"] = ns
    return kw


def _check_param_type(algorithm, key, value, default, where):
    """Check a param against the type of libreco's default for it.

    libreco does little validation of its own: a string embed_size or a float
    n_epochs fails deep inside TF or Cython. Ints are accepted where floats are
    expected (Erlang callers write ``lr => 1``); lists and tuples are
    interchangeable (Erlang tuples arrive as tuples, JSON gives back lists).
    Params whose default is None can be anything libreco accepts.
    """
    def bad(expected):
        return BadArg(
            f"{where}: {algorithm} param {key} must be {expected}, got {value!r}"
        )

    if default is None or default is inspect.Parameter.empty:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if default > 0 and value <= 0:  # sizes, counts, epochs: zero trains nothing useful
            raise bad("a positive integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string or atom")
    elif isinstance(default, (list, tuple)):
        if isinstance(value, bool) or not isinstance(value, (list, tuple, int)):
            raise bad("a list, tuple or integer")
    return value
