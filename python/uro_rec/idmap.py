"""Id <-> inner index maps of a loaded version, shared between ports like its matrices.

A model trained here holds its ids as a Python list and a dict (exact Python values: see
uro_rec.registry). At a million items those are ~150 MB of objects in every port. A version
saved with ``serving/`` (uro_rec.snapshot) stores ids that numpy holds exactly (all ints in
int64, or all strs of at most 256 characters) as .npy files instead: the ids in inner order,
the same sorted, and each sorted id's inner index. :class:`Ids` maps them read-only; a lookup
is a binary search (microseconds), and the values come back as the Python ``int`` / ``str``
they were trained as. Ids numpy cannot hold exactly (bignums, mixed types, strs ending in NUL)
and strs longer than 256 characters stay in the version's uro_meta.json as before.
"""
import os

import numpy as np

_MAX_STR = 256  # longer str ids: a fixed-width array would be mostly padding


def encodable(ids):
    """The numpy array holding ``ids`` exactly, or None."""
    if not ids:
        return None
    if all(type(x) is int for x in ids):
        if min(ids) < -(1 << 63) or max(ids) >= 1 << 63:
            return None
        return np.asarray(ids, dtype=np.int64)
    if all(type(x) is str for x in ids):
        longest = max(len(x) for x in ids)
        if longest > _MAX_STR or any(x.endswith("\0") for x in ids):
            return None
        return np.asarray(ids, dtype=f"<U{max(1, longest)}")
    return None


def save(ids, directory, side, write):
    """Writes ``side``_ids*.npy with ``write(directory, name, array)`` when the ids can be
    held exactly; True then (the version's sidecar leaves them out)."""
    arr = ids.arr if isinstance(ids, Ids) else encodable(ids)
    if arr is None:
        return False
    order = np.argsort(arr, kind="stable")
    write(directory, f"{side}_ids.npy", arr)
    write(directory, f"{side}_ids_sorted.npy", arr[order])
    write(directory, f"{side}_ids_pos.npy", order.astype(np.int64))
    return True


def load(directory, side):
    """The :class:`Ids` of ``side`` ('user' or 'item') in a serving directory, or None."""
    path = os.path.join(directory, f"{side}_ids.npy")
    if not os.path.isfile(path):
        return None

    def arr(name):  # (a plain ndarray over the map: np.memmap indexes slowly)
        return np.asarray(np.load(os.path.join(directory, name), mmap_mode="r",
                                  allow_pickle=False))

    return Ids(arr(f"{side}_ids.npy"), arr(f"{side}_ids_sorted.npy"), arr(f"{side}_ids_pos.npy"))


class IdList(list):
    """The ids of a model trained in this process: a list, with :meth:`Ids.take`."""

    __slots__ = ()

    def take(self, idx):
        return [self[i] for i in idx]


class Ids:
    """inner index -> id, as a read-only sequence (``ids[i]``, slices, ``take``, iteration);
    ``index`` is the reverse map (``get``, ``in``, ``[]``)."""

    def __init__(self, arr, sorted_ids, pos):
        self.arr, self.sorted, self.pos = arr, sorted_ids, pos
        self.is_int = arr.dtype.kind == "i"
        # Integer ids that are start, start + 1, ... in inner order (the usual database
        # keys): a lookup is a subtraction. One pass over the ids at load to know it.
        n = len(arr)
        self.start = int(arr[0]) if self.is_int and n and \
            int(arr[-1]) - int(arr[0]) == n - 1 and bool(np.all(np.diff(arr) == 1)) else None
        self.index = IdIndex(self)

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, i):
        got = self.arr[i]
        return got.tolist()

    def take(self, idx):
        """The ids of inner indices ``idx``, as a list of Python values."""
        if self.start is not None and type(idx) is list:  # recommend's: an add beats numpy
            return [self.start + i for i in idx]
        return self.arr[np.asarray(idx, dtype=np.intp)].tolist() if len(idx) else []

    def __iter__(self):
        for start in range(0, len(self.arr), 1 << 14):
            yield from self.arr[start:start + (1 << 14)].tolist()


class IdIndex:
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def _key(self, key):
        """``key`` as the array's type, or None when it cannot name an id (a dict of the same
        ids would not find it either: 1.0 finds 1, True finds 1, a str never finds an int)."""
        if self.ids.is_int:
            if isinstance(key, float) and key.is_integer():
                key = int(key)
            return key if isinstance(key, int) and -(1 << 63) <= key < 1 << 63 else None
        # (numpy's str arrays drop trailing NULs: such a key would match its stripped self)
        return key if isinstance(key, str) and not key.endswith("\0") else None

    def get(self, key, default=None):
        start = self.ids.start
        if start is not None and type(key) is int:
            at = key - start
            return at if 0 <= at < len(self.ids.arr) else default
        k = self._key(key)
        if k is None:
            return default
        s = self.ids.sorted
        at = int(np.searchsorted(s, k))
        if at < len(s) and s[at] == k:
            return int(self.ids.pos[at])
        return default

    def __contains__(self, key):
        return self.get(key) is not None

    def __getitem__(self, key):
        got = self.get(key)
        if got is None:
            raise KeyError(key)
        return got
