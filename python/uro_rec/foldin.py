"""Fold-in: a user vector for a user the model never saw, from the items they were observed
consuming since training (``observe``), computed from the item vectors alone: no retraining,
a d x d solve (microseconds), so three visits turn a popularity list into a personal one.

How, per algorithm (the algorithms whose users come from a behaviour sequence instead, the
sequence models, use :mod:`uro_rec.dynamic`):

- ALS: exactly ALS's own user step with the item vectors fixed (Hu, Koren, Volinsky): for the
  ranking task ``x = (YᵀY + reg·I + Σ (c-1)·y yᵀ)⁻¹ Σ c·y`` over the observed items, with
  confidence ``c = 1 + alpha`` (each observed item counts as one interaction of label 1) and
  the model's ``reg`` and ``alpha``; for the rating task the explicit step
  ``x = (Σ y yᵀ + reg·I)⁻¹ Σ r·y`` with r = 1.
- Item2Vec, DeepWalk: the mean of the observed items' vectors, which is how LibRecommender
  builds these models' user vectors in the first place.
- The other embedding models (BPR, SVD, SVDpp, NGCF, LightGCN, PinSage, GraphSage, TwoTower):
  the same implicit least squares as ALS (alpha 10, ALS's default), on the factor columns;
  the bias columns (SVD/SVDpp/BPR) keep the mean user's values, the items' biases are part
  of the fit's offsets, and ``reg`` is scaled to the item vectors (a tenth of YᵀY's mean
  diagonal) because these models' vectors are not on ALS's scale.

Every fold-in keeps the mean user's (libreco's out-of-vocabulary row's) extra columns, so
scores stay comparable with known users'.
"""
import numpy as np

MEAN_OF_ITEMS = ("Item2Vec", "DeepWalk")
DEFAULT_ALPHA = 10.0  # ALS's default confidence scale
REG_SCALE = 0.1


def applies(entry):
    """Whether this entry folds unknown users in (embedding models that are not sequence
    models: those take the observed items as a sequence instead)."""
    from .dynamic import takes_seq

    return entry.kind == "embed" and not takes_seq(entry)


def user_vector(entry, items):
    """A full user row (factors and extra columns, float64) for observed inner ``items``."""
    items = np.unique(np.asarray(items, dtype=np.intp))
    w = entry.embed_width
    base = entry.user_vecs[entry.n_users] if entry.user_vecs.shape[0] > entry.n_users \
        else entry.user_vecs.mean(axis=0)
    row = np.array(base, dtype=np.float64)
    if not items.size:
        return row
    Y = entry.item_vecs[:, :w]
    if entry.algorithm in MEAN_OF_ITEMS:
        row[:w] = Y[items].mean(axis=0)
        return row
    # the extra columns' contribution to every item's score: the fit's offsets
    offsets = entry.item_vecs[:, w:] @ row[w:] if entry.item_vecs.shape[1] > w else None
    row[:w] = _least_squares(entry, Y, items, offsets)
    return row


def _least_squares(entry, Y, items, offsets):
    hp = entry.hyperparameters()
    gram = _gram(entry, Y)
    d = Y.shape[1]
    obs = Y[items]
    if entry.algorithm == "ALS":
        reg = float(hp.get("reg") or 1.0)
        if entry.task == "rating":  # explicit: only the observed items, target 1
            return np.linalg.solve(obs.T @ obs + reg * np.eye(d), obs.sum(axis=0))
        alpha = float(hp.get("alpha", DEFAULT_ALPHA))
    else:
        alpha = DEFAULT_ALPHA
        reg = REG_SCALE * float(np.trace(gram)) / d
    c = 1.0 + alpha
    A = gram + reg * np.eye(d) + (c - 1.0) * (obs.T @ obs)
    b = c * obs.sum(axis=0)
    if offsets is not None:  # targets p - offset: every item with confidence 1, observed c
        b -= Y.T @ offsets + (c - 1.0) * (obs.T @ offsets[items])
    return np.linalg.solve(A, b)


def _gram(entry, Y):
    """YᵀY over every item, once per entry (items do not change until the next train)."""
    if entry._foldin_gram is None:
        entry._foldin_gram = Y.T @ Y
    return entry._foldin_gram
