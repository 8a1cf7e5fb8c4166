"""A loaded model plus everything precomputed to serve it fast.

An :class:`Entry` is built once, after train or load, and then only read (but for
:meth:`Entry.observe`, which adds to the consumed sets and to unknown users' observed items,
``registry.save``, which sets its version and path, and ``update_features``, which rebuilds an
embedding model's entry: :meth:`Entry.refreshed`). An embedding model loaded from disk is
built from its serving snapshot (uro_rec.snapshot: memory-mapped .npy files) without libreco, so a restarted port serves
it in well under a second instead of after TensorFlow's and torch's imports. It
holds the libreco model, its DataInfo and TF graph, our own id <-> inner-index
maps (ids keep the exact Python type they were trained with), each user's
consumed items as a sorted numpy array, the item popularity ranking used for
cold start and top-ups, and for embedding models the embedding matrices (float32 rows for
uro_rec.shortlist, memory-mapped when loaded, and libreco's out-of-vocabulary rows, which
predict uses), so a recommendation is one pass of c_src/rank.c. Also: the feature layout of a
feature model, its hyperparameters (read lazily), and whether it was fitted in this process
(retraining keeps its optimiser state then).
"""
import contextlib
import os

import numpy as np

from . import algorithms, idmap, shortlist


def _id_maps(ids):
    """(inner index -> id, id -> inner index) of an id sequence."""
    if isinstance(ids, idmap.Ids):
        return ids, ids.index
    ids = idmap.IdList(ids)
    return ids, {x: i for i, x in enumerate(ids)}


class Consumed:
    """Each user's consumed items (sorted inner ids) read from a snapshot's CSR arrays
    (memory-mapped: nothing per user is built at load), with what ``observe`` added since
    held apart. Indexes, assigns and iterates like the list a trained entry has."""

    def __init__(self, indptr, indices):
        self.indptr, self.indices, self.changed = indptr, indices, {}

    def __len__(self):
        return len(self.indptr) - 1

    def __getitem__(self, u):
        got = self.changed.get(u)
        return got if got is not None else self.indices[self.indptr[u]:self.indptr[u + 1]]

    def __setitem__(self, u, items):
        self.changed[u] = items

    def __iter__(self):
        return (self[u] for u in range(len(self)))


class Entry:
    def __init__(self, name, algorithm, task, model, data_info, graph,
                 user_ids, item_ids, version=None, path=None):
        self._set_identity(name, algorithm, task, user_ids, item_ids, version, path)
        self._model, self._data_info, self._graph, self._loader = model, data_info, graph, None
        self.n_users = int(data_info.n_users)
        self.n_items = int(data_info.n_items)
        self.n_interactions = int(len(data_info.interaction_data))
        consumed = data_info.user_consumed or {}
        self.consumed = [
            np.unique(np.asarray(consumed.get(u, ()), dtype=np.intp))
            for u in range(self.n_users)
        ]
        self.trained_consumed = list(self.consumed)
        # copies: libreco may update its arrays in place (a later fit of the same object)
        vecs = (np.array(model.user_embeds_np), np.array(model.item_embeds_np)) \
            if self.kind == "embed" else None
        bounds = (getattr(model, "lower_bound", None), getattr(model, "upper_bound", None))
        width = getattr(model, "embed_size", None)
        self._finish(vecs, width, bounds)

    @classmethod
    def from_snapshot(cls, name, algorithm, task, user_ids, item_ids, snapshot, loader,
                      version=None, path=None):
        """An embedding model served from its saved matrices alone. libreco (and with it
        TensorFlow and torch, seconds to import) is loaded by ``loader`` only if something
        needs the model object itself, such as saving it again."""
        self = cls.__new__(cls)
        self._set_identity(name, algorithm, task, user_ids, item_ids, version, path)
        self._model = self._data_info = self._graph = None
        self._loader = loader
        self.n_users = len(self.user_ids)
        self.n_items = len(self.item_ids)
        self.n_interactions = int(snapshot["n_interactions"])
        indptr = np.asarray(snapshot["consumed_indptr"], dtype=np.int64)
        indices = np.asarray(snapshot["consumed_indices"], dtype=np.intp)
        self.consumed = Consumed(indptr, indices)
        self.trained_consumed = Consumed(indptr, indices)
        bounds = tuple(float(b) for b in snapshot["bounds"]) if snapshot["bounds"].size else (None, None)
        # serving/ (uro_rec.snapshot) gives the scoring side ready-made; serving.npz (older
        # versions) the doubles, and before item_oov was saved only the known items' rows
        items = snapshot["items"] if "items" in snapshot else snapshot["item_vecs"]
        oov = snapshot["item_oov"] if "item_oov" in snapshot else None
        popular = (snapshot["popular"], snapshot["pop_score"]) if "popular" in snapshot else None
        self._finish((snapshot["user_vecs"], items), int(snapshot["embed_width"]), bounds,
                     oov=oov, popular=popular)
        return self

    def snapshot_arrays(self):
        """What :meth:`from_snapshot` needs, for an embedding model (saved beside libreco's
        own files by uro_rec.snapshot)."""
        # What the model was trained on, not what observe added since: observations live in
        # memory until the next train or load, on both load paths alike.
        consumed = self.trained_consumed
        lengths = np.fromiter((len(c) for c in consumed), dtype=np.int64, count=self.n_users)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = (np.concatenate(consumed) if consumed else np.empty(0)).astype(np.int64)
        lo, hi = self.bounds
        return {
            "user_vecs": self.user_vecs, "items": self.items, "item_oov": self.item_oov,
            "embed_width": np.int64(self.embed_width),
            "n_interactions": np.int64(self.n_interactions),
            "consumed_indptr": indptr, "consumed_indices": indices,
            "popular": self.popular, "pop_score": self.pop_score,
            "bounds": np.asarray([lo, hi], dtype=np.float64) if lo is not None else np.empty(0),
        }

    # -- the libreco objects, loaded on first use for snapshot entries --------------
    def _load_model(self):
        if self._model is None and self._loader is not None:
            self._model, self._data_info, self._graph = self._loader()
            self._loader = None
        return self._model

    @property
    def model(self):
        return self._load_model()

    @property
    def data_info(self):
        self._load_model()
        return self._data_info

    @property
    def graph(self):
        self._load_model()
        return self._graph

    def _set_identity(self, name, algorithm, task, user_ids, item_ids, version, path):
        self.name = name
        self.algorithm = algorithm
        self.task = task
        self.version = version
        self.path = path
        self.kind = algorithms.kind(algorithm)
        self.features = None  # the feature layout (uro_rec.features) of a feature model
        self.saved_from = path  # the saved version this entry's model came from, if any
        # True when the model was fitted in this process (its optimiser state is in memory:
        # uro_rec.retrain saves it with the version)
        self.trained_here = False
        # Python lists, not numpy arrays: indexing a list gives back the exact
        # Python int/str we were trained with, and is faster per element. A loaded version
        # may bring memory-mapped ids instead (uro_rec.idmap: the same values, shared).
        self.user_ids, self.user_index = _id_maps(user_ids)
        self.item_ids, self.item_index = _id_maps(item_ids)

    def _finish(self, vecs, width, bounds, oov=None, popular=None):
        self.bounds = bounds
        if popular is None:
            flat = np.concatenate(self.consumed) if self.consumed else np.empty(0, np.intp)
            counts = np.bincount(flat, minlength=self.n_items).astype(np.float64)
            # Most interacted-with first (distinct users), ties by inner index, so
            # the ranking is deterministic and survives save/load unchanged.
            order = np.argsort(-counts, kind="stable")
            score = counts / counts.max() if counts.size and counts.max() > 0 else counts
            popular = (order, score)
        self.popular, self.pop_score = popular  # (memory-mapped when loaded from serving/)

        if self.kind == "embed":
            # Row n_users is libreco's out-of-vocabulary row: the mean user
            # embedding, i.e. the 'average' cold-start user. Kept as given (a memory map
            # of the version's serving files: uro_rec.snapshot); scored as doubles.
            self.user_vecs = vecs[0]
            # The scoring side (uro_rec.shortlist): float32 rows, and the doubles only when
            # float32 does not hold them exactly (libreco's embeddings are float32).
            items = vecs[1]
            if not isinstance(items, shortlist.Items):
                if oov is None and len(items) > self.n_items:
                    oov = items[self.n_items]
                items = shortlist.Items.of(items[: self.n_items])
            self.items = items
            self._item_vecs = None
            width = int(width or items.d)
            self.embed_width = min(width, items.d)
            # libreco's out-of-vocabulary item row (the mean item embedding), what its
            # predict scores an unknown item with
            if oov is None:
                oov = items.exact_rows(slice(None)).mean(axis=0)
            self.item_oov = np.asarray(oov, dtype=np.float64)
        # Items seen after training ({observe, ...}) by users the model does not know:
        # user -> sorted inner ids, and the same items in the order they were observed (a
        # repeat moves to the end), the sequence models' and fold-in's input. Known users'
        # observations go into self.consumed.
        self.observed = {}
        self.observed_seq = {}
        self._foldin_gram = None  # lazily: YᵀY of the item factors (uro_rec.foldin)
        self.metrics = {}
        self._params = None         # lazily: hyperparameters of a snapshot entry
        self._cosine = None         # lazily: the items scaled for similar_items
        self._cooc = None           # lazily: item x user binary matrix + norms

    def refreshed(self):
        """After features changed in the DataInfo (update_features): an embedding model's
        vectors computed again from them (libreco's set_embeddings), this entry's state
        (observations, metrics, the feature layout) carried over; other models read their
        DataInfo at every call and are returned as they are. The result is unsaved: its
        ``path`` is None, so ``publish`` saves it first, and ``saved_from`` names the
        directory it came from (uro_rec.retrain copies that version's training state)."""
        if self.path is not None:
            self.saved_from, self.path = self.path, None
        if self.kind != "embed":
            return self
        model = self.model
        with self.graph_ctx():
            model.set_embeddings()
            model.assign_embedding_oov()
        new = Entry(self.name, self.algorithm, self.task, model, self.data_info, self.graph,
                    self.user_ids, self.item_ids, version=self.version)
        for attr in ("consumed", "trained_consumed", "observed", "observed_seq", "metrics",
                     "features", "saved_from", "trained_here"):
            setattr(new, attr, getattr(self, attr))
        return new

    def hyperparameters(self):
        """The libreco constructor's arguments (embed_size, reg, alpha, num_neg...): from the
        model object when it is loaded, else from the saved ``*_hyper_parameters.json``
        (a snapshot entry: reading them must not import libreco)."""
        if self._model is not None:
            args = getattr(self._model, "all_args", {}) or {}
            return {k: v for k, v in args.items() if k not in ("self", "data_info", "__class__")}
        if self._params is None:
            import glob
            import json

            found = sorted(glob.glob(os.path.join(self.path or "", "*_hyper_parameters.json")))
            self._params = {}
            if found:
                with open(found[0], encoding="utf-8") as f:
                    self._params = json.load(f)
        return self._params

    def global_mean(self):
        """The training labels' mean: libreco's ``default_pred`` for the rating task."""
        return float(self.data_info.global_mean)

    def graph_ctx(self):
        """TF1 models must be built, saved and run in their own graph."""
        graph = self.graph
        return graph.as_default() if graph is not None else contextlib.nullcontext()

    def summary(self):
        from .port import A

        return {
            A("name"): self.name,
            A("version"): self.version,
            A("algorithm"): self.algorithm,
            A("n_users"): self.n_users,
            A("n_items"): self.n_items,
        }

    def observe_unknown(self, user, inners):
        """Items (inner ids, in event order) observed for a user the model does not know."""
        arr = np.asarray(inners, dtype=np.intp)
        self.observed[user] = np.union1d(self.observed.get(user, arr[:0]), arr)
        seq = self.observed_seq.get(user, [])
        for i in inners:
            if i in seq:
                seq.remove(i)  # a repeat moves to the end: the latest visit counts
            seq.append(i)
        self.observed_seq[user] = seq

    # -- ids ----------------------------------------------------------------------
    def user_inner(self, user):
        """Inner index or None for an unknown user."""
        return self.user_index.get(user)

    def item_inner(self, item):
        return self.item_index.get(item)

    # -- observe -------------------------------------------------------------------
    def observe(self, events):
        """Takes (user, item, ...) events into what each user has consumed, so recommend
        stops returning those items: a known user's consumed set, an unknown user's
        ``observed`` set and sequence (:meth:`observe_unknown`). Returns how many events
        named an item the model does not know (they change nothing)."""
        by_user, unknown_items = {}, 0
        for user, item, *_ in events:
            inner = self.item_inner(item)
            if inner is None:
                unknown_items += 1
            else:
                by_user.setdefault(user, []).append(inner)
        for user, inners in by_user.items():
            arr = np.asarray(inners, dtype=np.intp)
            uid = self.user_inner(user)
            if uid is not None:
                self.consumed[uid] = np.union1d(self.consumed[uid], arr)
            else:
                self.observe_unknown(user, inners)
        return unknown_items

    # -- lazily built similarity helpers -------------------------------------------
    @property
    def item_vecs(self):
        """The item embeddings as doubles (fold-in's least squares read them whole): a
        private copy, made on first use, when only float32 rows are stored."""
        if self.items.v64 is not None:
            return self.items.v64
        if self._item_vecs is None:
            self._item_vecs = self.items.v32.astype(np.float64)
        return self._item_vecs

    def cosine_items(self):
        """The items for similar_items: the same rows, each scaled by 1 / its norm."""
        if self._cosine is None:
            v = self.items
            # the norm as the exact score of a row with itself: a defined sum order
            norms = np.sqrt(np.concatenate([
                shortlist.exact_scores(r, r) for r in
                (v.exact_rows(slice(s, s + (1 << 16))) for s in range(0, v.n, 1 << 16))
            ])) if v.n else np.empty(0)
            norms[norms == 0] = 1.0
            self._cosine = shortlist.Items(v.v32, v.v64, 1.0 / norms)
        return self._cosine

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
