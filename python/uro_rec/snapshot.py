"""An embedding model's serving arrays as .npy files, mapped read-only: one copy per machine.

``save`` writes ``serving/`` inside a version's directory (each file to a temporary name,
then renamed: the version directory itself is renamed into place by uro_rec.registry after):

- ``items32.npy``  the item rows in float32, what c_src/rank.c scans;
- ``items64.npy``  the same in float64, only when float32 does not hold them exactly;
- ``users.npy``    the user rows (libreco's out-of-vocabulary row last), float32 when that is
  exact, else float64;
- ``item_oov.npy``, ``consumed_indptr.npy``, ``consumed_indices.npy``, ``bounds.npy``,
  ``popular.npy`` and ``pop_score.npy`` (the cold-start ranking);
- ``user_ids*.npy``, ``item_ids*.npy`` when numpy holds the ids exactly (uro_rec.idmap; the
  version's uro_meta.json then leaves them out);
- ``info.json``    embed width, interaction count and the items' norm bound (so a load reads
  no matrix).

``load`` opens the matrices with ``np.load(mmap_mode='r')``: every port of a pool maps the
same files, the kernel's page cache holds one copy, and a load costs milliseconds whatever
the catalogue size (pages are read when first scored). The files are covered by the
version's signature like every other file (uro_rec.signing). Versions saved before this have
``serving.npz`` (read whole, a private copy per port) or nothing (libreco's files).
"""
import json
import os

import numpy as np

from . import idmap, shortlist

DIR = "serving"
_INFO = "info.json"


def _write(directory, name, array):
    """np.save to a temporary name, then rename: a reader sees the whole file or none."""
    final = os.path.join(directory, name)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, final)


def _narrowest(a):
    """float32 when it holds ``a`` exactly (libreco's embeddings are float32), else float64."""
    a = np.asarray(a)
    if a.dtype == np.float32:
        return a
    narrow = a.astype(np.float32)
    return narrow if np.array_equal(narrow, a) else a.astype(np.float64)


def save(arrays, version_dir, user_ids, item_ids):
    """``arrays``: Entry.snapshot_arrays(). Writes ``version_dir``/serving/; returns the
    sides ("user_ids", "item_ids") whose ids it holds."""
    out = os.path.join(version_dir, DIR)
    os.makedirs(out, exist_ok=True)
    items = arrays["items"]
    _write(out, "items32.npy", items.v32)
    if items.v64 is not None:
        _write(out, "items64.npy", items.v64)
    _write(out, "users.npy", _narrowest(arrays["user_vecs"]))
    for key in ("item_oov", "consumed_indptr", "consumed_indices", "bounds", "popular",
                "pop_score"):
        _write(out, key + ".npy", arrays[key])
    held = [side + "_ids" for side, ids in (("user", user_ids), ("item", item_ids))
            if idmap.save(ids, out, side, _write)]
    info = {"format": 1, "embed_width": int(arrays["embed_width"]),
            "n_interactions": int(arrays["n_interactions"]), "bound_norm": items.bound_norm}
    tmp = os.path.join(out, _INFO + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, os.path.join(out, _INFO))
    return held


def open_npy(path, mmap=True):
    """A .npy file mapped read-only, as a plain ndarray over the map (np.memmap's
    Python-level indexing costs microseconds a call on the serving path)."""
    a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return np.asarray(a) if mmap else a


def mapped(a):
    """True when ``a`` reads a memory-mapped file (for the tests and the benchmark)."""
    import mmap

    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = getattr(a, "base", None) if not isinstance(a, np.memmap) else a._mmap
    return False


def exists(version_dir):
    return os.path.isfile(os.path.join(version_dir, DIR, _INFO))


def load(version_dir):
    """The snapshot dict Entry.from_snapshot takes; the matrices memory-mapped."""
    d = os.path.join(version_dir, DIR)
    with open(os.path.join(d, _INFO), encoding="utf-8") as f:
        info = json.load(f)

    def arr(name, mmap=True):
        return open_npy(os.path.join(d, name + ".npy"), mmap)

    v64 = arr("items64") if os.path.isfile(os.path.join(d, "items64.npy")) else None
    return {
        "items": shortlist.Items(arr("items32"), v64, bound_norm=info["bound_norm"]),
        "user_vecs": arr("users"),
        "item_oov": arr("item_oov", mmap=False),
        "consumed_indptr": arr("consumed_indptr"),
        "consumed_indices": arr("consumed_indices"),
        "bounds": arr("bounds", mmap=False),
        "popular": arr("popular"),
        "pop_score": arr("pop_score"),
        "embed_width": info["embed_width"],
        "n_interactions": info["n_interactions"],
    }


def ids(version_dir, side):
    """The memory-mapped ids of ``side`` ('user', 'item') of a version, or None."""
    return idmap.load(os.path.join(version_dir, DIR), side)
