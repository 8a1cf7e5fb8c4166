"""The exact top-n of embedding models, computed near the speed of a float32 scan.

The score an item is ranked by is its *exact score*: the sum of ``u_i * v_i`` over the
dimensions in order, in doubles (times the item's scale for cosine similarity), so a user's
list is a function of its vector alone: the same for recommend, recommend_many, export and
predict's scores. Ties go to the lower inner index (today's rule, as before).

:func:`top` asks c_src/rank.c (``rank_top`` of the port's ``_uro_port``, or of the
``_uro_rank`` extension the tests build) for it: a float32 pass keeps a shortlist of more than
n items, the shortlist is scored exactly, and a float32 error bound decides whether the
shortlist was provably enough (else it grows, then every item is scored exactly: rank.c's file
comment). Without the kernel (plain Python tools) or for values float32 cannot hold, every
item is scored exactly here in numpy: slower, the same lists. :func:`top_one` is the same for
one user (``rank_one``: recommend's path, the lists come back as lists, no array is built).
"""
import numpy as np

try:  # pragma: no cover - inside the port
    from _uro_port import rank_one as _kernel_one  # type: ignore[import-not-found]
    from _uro_port import rank_top as _kernel  # type: ignore[import-not-found]
except ImportError:
    try:
        from _uro_rank import rank_one as _kernel_one  # type: ignore[import-not-found]
        from _uro_rank import rank_top as _kernel  # type: ignore[import-not-found]
    except ImportError:
        _kernel = _kernel_one = None

_NONE = np.empty(0, dtype=np.int64)

#: How many users needed a longer shortlist / the exact pass over every item (the tests read it).
COUNTS = {"widened": 0, "full": 0}


def kernel_available():
    return _kernel is not None


class Items:
    """The item side of the scoring: ``v32`` (float32, n x d, the fast pass), ``v64`` (the
    exact values when float32 does not hold them, else None), ``scale`` (per-item factor or
    None) and ``bound_norm`` (max ||v_j|| * |scale_j|; computed when not given)."""

    def __init__(self, v32, v64=None, scale=None, bound_norm=None):
        self.v32 = v32 if v32.dtype == np.float32 and v32.flags.c_contiguous \
            else np.ascontiguousarray(v32, dtype=np.float32)
        self.v64 = None if v64 is None else np.ascontiguousarray(v64, dtype=np.float64)
        self.scale = None if scale is None else np.ascontiguousarray(scale, dtype=np.float64)
        if bound_norm is None:
            bound_norm = norm_bound(self.v64 if self.v64 is not None else self.v32, self.scale)
        self.bound_norm = float(bound_norm)
        self.n, self.d = self.v32.shape

    @classmethod
    def of(cls, vecs, scale=None):
        """From any float matrix: float32 holds it exactly, or its doubles are kept too."""
        v32 = np.ascontiguousarray(vecs, dtype=np.float32)
        lossless = vecs.dtype == np.float32 or np.array_equal(v32, vecs)
        return cls(v32, None if lossless else vecs, scale)

    def exact_rows(self, idx):
        """The exact values of rows ``idx``, as doubles."""
        src = self.v64 if self.v64 is not None else self.v32
        return np.asarray(src[idx], dtype=np.float64)


def norm_bound(vecs, scale=None):
    """max_j ||v_j||_2 * |scale_j| (inf or nan when a value is not finite)."""
    if len(vecs) == 0:
        return 0.0
    norms = np.empty(len(vecs))
    for start in range(0, len(vecs), 1 << 16):  # bounded temporaries on big catalogues
        block = np.asarray(vecs[start:start + (1 << 16)], dtype=np.float64)
        norms[start:start + len(block)] = np.sqrt(np.einsum("nd,nd->n", block, block))
    if scale is not None:
        norms *= np.abs(scale)
    return float(norms.max())


def exact_scores(rows, u):
    """The exact score of each row of ``rows`` (m x d) against ``u`` (d,), or of each row
    pair when ``u`` is m x d: products rounded to doubles and summed in dimension order, as
    rank.c's exact pass does (numpy gives the same bits: each step is one IEEE operation)."""
    rows = np.asarray(rows)
    u = np.asarray(u, dtype=np.float64)
    acc = np.zeros(rows.shape[0])
    for i in range(rows.shape[1]):
        ui = u[..., i]
        acc += rows[:, i].astype(np.float64) * ui
    return acc


def top(items, users, bans, shared, n):
    """``(idx, scores, counts)``: the exact top ``n`` of each row of ``users`` (B x d), best
    first, ties to the lower index, never an item of ``bans[b]`` (a sorted int64 array or
    None) or of ``shared`` (sorted); ``counts[b]`` < n when fewer items are left."""
    users = np.ascontiguousarray(users, dtype=np.float64)
    b = users.shape[0]
    n = min(n, items.n)  # (N may be any integer: a list never holds more than the items)
    idx = np.empty((b, n), dtype=np.int64)
    scores = np.empty((b, n), dtype=np.float64)
    counts = np.empty(b, dtype=np.int64)
    shared = _NONE if shared is None or not len(shared) else shared
    got = None
    if _kernel is not None:
        # None: a value float32 cannot hold (not finite, or a score that could overflow)
        got = _kernel(items.v32, items.v64, items.scale, items.bound_norm, users, bans,
                      shared, n, idx, scores, counts)
    if got is not None:
        COUNTS["widened"] += got[0]
        COUNTS["full"] += got[1]
        return idx, scores, counts
    for r in range(b):
        found, sc = exact_top(items, users[r], bans[r], shared, n)
        counts[r] = len(found)
        idx[r, :len(found)], scores[r, :len(found)] = found, sc
    return idx, scores, counts


def top_one(items, u, ban, shared, n, scores=False):
    """:func:`top` for one user ``u`` (d,): ``(ids, exact)``, the inner ids as a list and,
    when ``scores``, their exact scores as a list (else None). recommend's path: the kernel
    gives lists, no array is built."""
    shared = _NONE if shared is None or not len(shared) else shared
    if not (u.dtype.char in "fd" and u.flags.c_contiguous):  # what the kernel reads as it is
        u = np.ascontiguousarray(u, dtype=np.float64)
    got = None
    if _kernel_one is not None:
        got = _kernel_one(items.v32, items.v64, items.scale, items.bound_norm, u, ban, shared,
                          min(n, items.n), scores)
    if got is not None:
        COUNTS["widened"] += got[2]
        COUNTS["full"] += got[3]
        return got[0], got[1]
    found, sc = exact_top(items, np.asarray(u, dtype=np.float64), ban, shared, min(n, items.n))
    return found.tolist(), (sc.tolist() if scores else None)


def exact_top(items, u, ban, shared, n):
    """Every item scored exactly (numpy): the reference the kernel's lists must equal."""
    src = items.v64 if items.v64 is not None else items.v32
    s = np.concatenate([exact_scores(src[start:start + (1 << 16)], u)
                        for start in range(0, items.n, 1 << 16)]) if items.n else np.empty(0)
    if items.scale is not None:
        s = s * items.scale
    keep = np.ones(items.n, dtype=bool)
    for x in (ban, shared):
        if x is not None and len(x):
            keep[np.asarray(x, dtype=np.intp)] = False
    cand = np.flatnonzero(keep)
    order = np.lexsort((cand, -s[cand]))[:n]
    return cand[order], s[cand[order]]
