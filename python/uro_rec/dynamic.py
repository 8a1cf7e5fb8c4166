"""Users built at request time instead of looked up: from a behaviour sequence (``seq``), from
features (``user_feats``), or folded in from what an unknown user was observed consuming.

Which path a ``recommend`` takes (:func:`how`):

- ``seq => [Item]``: the sequence models (LibRecommender's ``SequenceModels``:
  YouTubeRetrieval, RNN4Rec, Caser, WaveNet, YouTubeRanking, DIN, Transformer, SIM) build
  the user from the sequence, oldest first (LibRecommender's
  ``recommend_user(..., seq=...)``, truncated to the model's ``recent_num``); items the model
  does not know are left out. Any other model: ``badarg``.
- An unknown user with items observed since training (``observe``) and no ``seq``: the
  sequence models take those items as the sequence, in the order they were observed; the
  other embedding models fold them in (:mod:`uro_rec.foldin`). Everything else (the
  memory-based models, the scoring networks that take no sequence) serves the popularity
  list without those items.

Embedding models get a user vector here and are ranked by :mod:`uro_rec.recommend` exactly as
a known user is (the same masks, the same top-k); the scoring networks are asked through their
own ``recommend_user``. The dynamic paths run LibRecommender's TensorFlow graph, so an
embedding model served from its snapshot loads the libreco model on the first such call.
"""
import numpy as np

from .errors import BadArg
from .options import check_id_list

#: libreco.utils.constants.SequenceModels, spelled out so this import stays cheap.
SEQ_MODELS = ("YouTubeRetrieval", "RNN4Rec", "Caser", "WaveNet", "YouTubeRanking", "DIN",
              "Transformer", "SIM")


def takes_seq(entry):
    return entry.algorithm in SEQ_MODELS


def parse_seq(entry, value, where):
    """``seq`` option -> inner item ids in the given order (unknown items left out)."""
    if not takes_seq(entry):
        raise BadArg(f"{where}: seq is for the sequence models ({', '.join(SEQ_MODELS)}); "
                     f"{entry.algorithm} builds no user from a sequence")
    if where != "recommend":
        raise BadArg(f"{where}: seq describes one user: use recommend")
    items = check_id_list(value, where, "seq")
    return [i for i in map(entry.item_inner, items) if i is not None]


def how(entry, uid, seen, ro):
    """None (the usual path), ``vector`` (an embedding model's user vector from
    :func:`user_vector`) or ``libreco`` (a scoring network's own recommend_user with
    :func:`libreco_kwargs`)."""
    asked = ro.seq is not None or ro.user_feats is not None
    observed = uid is None and seen is not None and seen.size > 0
    if not asked and not observed:
        return None  # (the usual call: known user, no options; before any import)
    from . import foldin

    if not asked and not (takes_seq(entry) or foldin.applies(entry)):
        return None
    return "vector" if entry.kind == "embed" else "libreco"


def user_vector(entry, uid, user, ro):
    """The user row (float64) an embedding model scores items with on a dynamic path."""
    from . import foldin

    if ro.seq is None and ro.user_feats is None and not takes_seq(entry):
        return foldin.user_vector(entry, entry.observed_seq[user])
    model = entry.model
    with entry.graph_ctx():
        vec = model.dyn_user_embedding(
            entry.n_users if uid is None else uid, user_feats=ro.user_feats,
            seq=_seq(entry, user, ro), include_bias=True, inner_id=True)
    return np.asarray(vec, dtype=np.float64)


def libreco_kwargs(entry, user, ro):
    """recommend_user keyword arguments for a scoring network's dynamic path."""
    kw = {}
    seq = _seq(entry, user, ro) if takes_seq(entry) else None
    if seq is not None:
        kw["seq"] = seq
    if ro.user_feats is not None:
        kw["user_feats"] = ro.user_feats
    return kw


def _seq(entry, user, ro):
    if ro.seq is not None:
        return list(ro.seq)
    observed = entry.observed_seq.get(user)
    return list(observed) if observed else None
