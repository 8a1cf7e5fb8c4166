"""A loaded model plus everything precomputed to serve it fast.

An :class:`Entry` is built once, after train or load, and then only read. It
holds the libreco model, its DataInfo and TF graph, our own id <-> inner-index
maps (ids keep the exact Python type they were trained with), each user's
consumed items as a sorted numpy array, the item popularity ranking used for
cold start and top-ups, and for embedding models contiguous copies of the
embedding matrices so a recommendation is one mat-vec and one argpartition.
"""
import contextlib

import numpy as np

from . import algorithms


class Entry:
    def __init__(self, name, algorithm, task, model, data_info, graph,
                 user_ids, item_ids, version=None, path=None):
        self.name = name
        self.algorithm = algorithm
        self.task = task
        self.model = model
        self.data_info = data_info
        self.graph = graph
        self.version = version
        self.path = path
        self.kind = algorithms.kind(algorithm)
        self.n_users = int(data_info.n_users)
        self.n_items = int(data_info.n_items)
        # Python lists, not numpy arrays: indexing a list gives back the exact
        # Python int/str we were trained with, and is faster per element.
        self.user_ids = list(user_ids)
        self.item_ids = list(item_ids)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}
        self.n_interactions = int(len(data_info.interaction_data))

        consumed = data_info.user_consumed or {}
        self.consumed = [
            np.unique(np.asarray(consumed.get(u, ()), dtype=np.intp))
            for u in range(self.n_users)
        ]
        flat = np.concatenate(self.consumed) if self.consumed else np.empty(0, np.intp)
        counts = np.bincount(flat, minlength=self.n_items).astype(np.float64)
        # Most interacted-with first (distinct users), ties by inner index, so
        # the ranking is deterministic and survives save/load unchanged.
        self.popular = np.argsort(-counts, kind="stable")
        self.popular_list = self.popular.tolist()
        self.pop_score = counts / counts.max() if counts.size and counts.max() > 0 else counts

        if self.kind == "embed":
            # Row n_users is libreco's out-of-vocabulary row: the mean user
            # embedding, i.e. the 'average' cold-start user.
            self.user_vecs = np.ascontiguousarray(model.user_embeds_np)
            self.item_vecs = np.ascontiguousarray(model.item_embeds_np[: self.n_items])
            width = int(getattr(model, "embed_size", self.item_vecs.shape[1]) or self.item_vecs.shape[1])
            self.embed_width = min(width, self.item_vecs.shape[1])
        # Items seen after training ({observe, ...}) by users the model does not know:
        # user -> sorted inner ids. Known users' observations go into self.consumed.
        self.observed = {}
        self.metrics = {}
        self._item_unit = None      # lazily: normalised item embeddings
        self._cooc = None           # lazily: item x user binary matrix + norms

    def graph_ctx(self):
        """TF1 models must be built, saved and run in their own graph."""
        return self.graph.as_default() if self.graph is not None else contextlib.nullcontext()

    def summary(self):
        from .port import A

        return {
            A("name"): self.name,
            A("version"): self.version,
            A("algorithm"): self.algorithm,
            A("n_users"): self.n_users,
            A("n_items"): self.n_items,
        }

    # -- ids ----------------------------------------------------------------------
    def user_inner(self, user):
        """Inner index or None for an unknown user."""
        return self.user_index.get(user)

    def item_inner(self, item):
        return self.item_index.get(item)

    # -- lazily built similarity helpers -------------------------------------------
    def item_unit(self):
        if self._item_unit is None:
            emb = self.item_vecs[:, : self.embed_width].astype(np.float64)
            norm = np.linalg.norm(emb, axis=1)
            norm[norm == 0] = 1.0
            self._item_unit = emb / norm[:, None]
        return self._item_unit

    def cooccurrence(self):
        """Binary item x user matrix and row norms, for models whose item
        similarity libreco does not expose."""
        if self._cooc is None:
            from scipy.sparse import csr_matrix

            rows = np.concatenate([c for c in self.consumed] or [np.empty(0, np.intp)])
            cols = np.repeat(np.arange(self.n_users), [len(c) for c in self.consumed])
            m = csr_matrix(
                (np.ones(len(rows)), (rows, cols)), shape=(self.n_items, self.n_users)
            )
            norms = np.sqrt(np.asarray(m.sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            self._cooc = (m, norms)
        return self._cooc
