"""Ranking of embedding models (c_src/rank.c through uro_rec.shortlist): every list equals an
exact ranking of every item in doubles (sum of products in dimension order, ties to the lower
index), on every entry point, with deliberate exact ties and near-ties; the .npy serving files
round-trip through memory maps; a version saved before them (serving.npz) still loads."""
import json
import os
import shutil

import numpy as np
import pytest

from uro_rec import commands, idmap, recommend as rec, registry, shortlist, snapshot
from uro_rec.entry import Entry

from conftest import train_capturing


def reference(vecs, u, ban=(), n=10, scale=None):
    """Brute force, independent of the kernel: every item's exact score, a full stable sort."""
    v = np.asarray(vecs, dtype=np.float64)
    s = np.zeros(len(v))
    for i in range(v.shape[1]):
        s = s + v[:, i] * np.float64(u[i])
    if scale is not None:
        s = s * scale
    keep = np.ones(len(v), dtype=bool)
    keep[np.asarray(list(ban), dtype=np.intp)] = False
    cand = np.flatnonzero(keep)
    order = np.lexsort((cand, -s[cand]))[:n]
    return cand[order].tolist(), s[cand[order]].tolist()


def tricky_factors(rng, n_items, d, dtype=np.float32):
    v = rng.standard_normal((n_items, d)).astype(dtype)
    v[10:60] = v[3]                                            # exact ties with item 3
    v[100:180] = v[200] + (rng.standard_normal((80, d)) * 1e-7).astype(dtype)  # near-ties
    v[300:310] = 0                                             # zero vectors
    if n_items > 1000:
        v[1000:1040] = v[5] * np.float32(1 + 2 ** -20)         # last-bit-apart copies
    return v


def test_the_kernel_is_built():
    assert shortlist.kernel_available(), "run make build: _build/py/_uro_rank is missing"


@pytest.mark.parametrize("n_items,d", [(400, 8), (3000, 32), (5000, 10), (2500, 64), (50, 3)])
def test_kernel_lists_equal_the_exact_reference(n_items, d):
    rng = np.random.default_rng(n_items + d)
    vecs = tricky_factors(rng, n_items, d) if n_items > 310 else rng.standard_normal(
        (n_items, d)).astype(np.float32)
    items = shortlist.Items.of(vecs)
    users = rng.standard_normal((40, d))
    users[0] = vecs[3]                  # a user on the tied items
    users[1] = vecs[min(200, n_items - 1)]  # on the near-ties
    users[2] = 0                        # every score 0: index order
    bans = [np.unique(rng.integers(0, n_items, rng.integers(0, 60))) for _ in range(40)]
    bans[3] = np.arange(n_items - 5)    # almost everything consumed: fewer than n left
    bans[4] = None
    shared = np.unique(rng.integers(0, n_items, 7))
    for n in (1, 10, 100):
        idx, scores, counts = shortlist.top(items, users, bans, shared, n)
        for b in range(len(users)):
            ban = set(shared.tolist()) | set(() if bans[b] is None else bans[b].tolist())
            want_idx, want_scores = reference(vecs, users[b], ban, n)
            c = int(counts[b])
            assert idx[b, :c].tolist() == want_idx, (n, b)
            assert scores[b, :c].tolist() == want_scores, (n, b)
            # a user alone gets the same list as in the block
            alone = shortlist.top(items, users[b:b + 1], [bans[b]], shared, n)
            assert alone[0][0, :c].tolist() == want_idx


def test_doubles_float32_cannot_hold_and_scaled_items():
    rng = np.random.default_rng(7)
    vecs = tricky_factors(rng, 2000, 16, np.float64) * (1 + 1e-12)
    items = shortlist.Items.of(vecs)
    assert items.v64 is not None  # not float32-exact: the doubles are ranked
    scale = 1 / np.maximum(np.linalg.norm(vecs, axis=1), 1e-3)
    cosine = shortlist.Items.of(vecs, scale)
    for b in range(20):
        u = rng.standard_normal(16)
        got = shortlist.top(items, u[None], [None], None, 10)
        assert got[0][0].tolist() == reference(vecs, u)[0]
        got = shortlist.top(cosine, u[None], [None], None, 10)
        assert got[0][0].tolist() == reference(vecs, u, scale=scale)[0]


def test_near_ties_make_the_shortlist_grow_and_stay_exact():
    """Thousands of items a last bit apart: the float32 pass cannot tell them apart, the
    bound says so, the shortlist grows (then every item is scored exactly)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal(8).astype(np.float32)
    vecs = np.tile(base, (3000, 1))
    vecs[:, 0] += (rng.integers(0, 50, 3000) * np.spacing(base[0])).astype(np.float32)
    items = shortlist.Items.of(vecs)
    before = dict(shortlist.COUNTS)
    u = base.astype(np.float64)
    got = shortlist.top(items, u[None], [None], None, 20)
    assert got[0][0].tolist() == reference(vecs, u, n=20)[0]
    assert shortlist.COUNTS["widened"] > before["widened"]


def test_values_float32_cannot_hold_well_still_rank_exactly():
    """Products below float32's normal range (they underflow to subnormals or zero in the
    float32 pass) and values near its top (the kernel declines; numpy ranks)."""
    rng = np.random.default_rng(11)
    for scale in (1e-24, 1e-20, 1e18):
        vecs = (rng.standard_normal((800, 8)) * scale)
        items = shortlist.Items.of(vecs)
        for b in range(5):
            u = rng.standard_normal(8) * scale
            got = shortlist.top(items, u[None], [None], None, 10)
            assert got[0][0].tolist() == reference(vecs, u)[0], (scale, b)


def test_not_finite_values_are_ranked_without_the_kernel():
    vecs = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    vecs[::7, 2] = np.nan
    items = shortlist.Items.of(vecs)
    idx, _scores, counts = shortlist.top(items, np.ones((1, 8)), [None], None, 10)
    assert counts[0] == 10 and len(set(idx[0].tolist())) == 10


# ---- every entry point of an Entry ---------------------------------------------------------

def synthetic_entry(n_users=60, n_items=1500, d=16, seed=0, task="ranking"):
    """An ALS-shaped entry from a snapshot dict (no training): tied and near-tied factors."""
    rng = np.random.default_rng(seed)
    items = tricky_factors(rng, n_items + 1, d)
    users = rng.standard_normal((n_users + 1, d)).astype(np.float32)
    users[1] = items[3]
    consumed = [np.unique(rng.integers(0, n_items, rng.integers(1, 40))) for _ in range(n_users)]
    consumed[2] = np.arange(n_items - 4)  # nearly everything consumed
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in consumed])]).astype(np.int64)
    snap = {"user_vecs": users, "item_vecs": items[:n_items], "item_oov": items[n_items],
            "consumed_indptr": indptr, "consumed_indices": np.concatenate(consumed),
            "bounds": np.empty(0), "embed_width": d, "n_interactions": int(indptr[-1])}
    return Entry.from_snapshot(f"rank{seed}", "ALS", task, [f"u{i}" for i in range(n_users)],
                               [f"i{i}" for i in range(n_items)], snap, loader=None)


def expected(entry, uid, n, exclude=(), extra=()):
    ban = set(entry.consumed[uid].tolist()) | set(exclude) | set(extra)
    idx, scores = reference(entry.items.v32, entry.user_vecs[uid], ban, n)
    return [entry.item_ids[i] for i in idx], rec.normalize_scores(entry, scores).tolist()


def test_every_entry_point_gives_the_exact_lists():
    entry = synthetic_entry()
    ro = rec.parse_opts(entry, None, "t")
    scored = rec.parse_opts(entry, {"scores": True}, "export")  # what export ranks with
    users = entry.user_ids
    many = dict(rec.recommend_many(entry, users, 10, ro))
    many_scored = dict(rec.recommend_many(entry, users, 10, scored))
    for uid, user in enumerate(users):
        ids, scores = expected(entry, uid, 10)
        assert rec.recommend(entry, user, 10, ro) == ids
        assert many[user] == ids
        assert many_scored[user] == list(zip(ids, scores))
        assert rec.recommend(entry, user, 10, scored) == list(zip(ids, scores))
        # predict's scores are the list's scores, to the last bit
        assert rec.predict(entry, user, ids) == scores
    assert len(many["u2"]) == 4  # fewer left than asked
    huge = 1 << 200  # N beyond any catalogue: every item left, best first
    assert rec.recommend(entry, "u2", huge, ro) == expected(entry, 2, huge)[0]
    assert dict(rec.recommend_many(entry, ["u2"], huge, ro))["u2"] == many["u2"]


def test_exclude_and_observe_keep_working():
    entry = synthetic_entry(seed=1)
    first = rec.recommend(entry, "u5", 10, rec.parse_opts(entry, None, "t"))
    ro = rec.parse_opts(entry, {"exclude": first[:3]}, "t")
    ex = [entry.item_index[i] for i in first[:3]]
    assert rec.recommend(entry, "u5", 10, ro) == expected(entry, 5, 10, exclude=ex)[0]
    entry.observe([("u5", i, 1.0) for i in first[:5]])
    after = rec.recommend(entry, "u5", 10, rec.parse_opts(entry, None, "t"))
    assert not set(after) & set(first[:5])
    assert after == expected(entry, 5, 10)[0]
    assert dict(rec.recommend_many(entry, ["u5"], 10, rec.parse_opts(entry, None, "t")))["u5"] \
        == after


def test_similar_items_is_the_exact_cosine_ranking():
    entry = synthetic_entry(seed=2)
    v = entry.items.v32.astype(np.float64)
    norms = np.zeros(len(v))
    for i in range(v.shape[1]):  # the sum of squares in dimension order
        norms = norms + v[:, i] * v[:, i]
    norms = np.sqrt(norms)
    norms[norms == 0] = 1.0
    for iid in (3, 15, 150, 305, 999):
        q = v[iid] * (1.0 / norms[iid])
        idx, sims = reference(v, q, {iid}, 10, scale=1.0 / norms)
        got = rec.similar_items(entry, entry.item_ids[iid], 10)
        assert got == [(entry.item_ids[i], s) for i, s in zip(idx, sims)]
        assert all(abs(s - c) < 1e-5 for (_, s), c in zip(got, (v[idx] @ v[iid]) /
                                                          (norms[idx] * norms[iid])))


# ---- the .npy serving files ---------------------------------------------------------------

def test_serving_files_round_trip_as_memory_maps(tmp_path):
    entry = synthetic_entry(seed=4)
    held = snapshot.save(entry.snapshot_arrays(), str(tmp_path), entry.user_ids, entry.item_ids)
    assert held == ["user_ids", "item_ids"]
    assert sorted(os.listdir(tmp_path / "serving")) == sorted(
        ["items32.npy", "users.npy", "item_oov.npy", "consumed_indptr.npy",
         "consumed_indices.npy", "bounds.npy", "popular.npy", "pop_score.npy", "info.json"] +
        [f"{side}_ids{x}.npy" for side in ("user", "item") for x in ("", "_sorted", "_pos")])
    snap = snapshot.load(str(tmp_path))
    assert snapshot.mapped(snap["items"].v32) and snapshot.mapped(snap["user_vecs"])
    assert not snapshot.mapped(entry.items.v32)
    assert not snap["items"].v32.flags.writeable
    users, items = snapshot.ids(str(tmp_path), "user"), snapshot.ids(str(tmp_path), "item")
    assert list(users) == entry.user_ids and list(items) == entry.item_ids
    again = Entry.from_snapshot("again", "ALS", "ranking", users, items, snap, loader=None)
    assert isinstance(again.item_ids, idmap.Ids)
    for opts in (None, {"scores": True}, {"cold_start": "average"}):
        ro = rec.parse_opts(entry, opts, "t")
        everyone = entry.user_ids + ["nobody"]
        assert rec.recommend_many(again, everyone, 10, ro) == \
            rec.recommend_many(entry, everyone, 10, ro)
        assert rec.recommend(again, "nobody", 10, ro) == rec.recommend(entry, "nobody", 10, ro)
    assert rec.similar_items(again, "i7", 5) == rec.similar_items(entry, "i7", 5)


def test_memory_mapped_ids_behave_as_the_dict_did(tmp_path):
    from uro_rec.port import Atom

    def write(directory, name, array):
        np.save(os.path.join(directory, name), array)

    for ids, probes in (([5, -3, 2**62, 0, 17], [5, 5.0, True, "5", 2**64, None, 4]),
                        (["b", "a", "ü", "", "ab"], ["a", Atom("a"), "ab", "a\0", 1, "zz"])):
        assert idmap.save(ids, str(tmp_path), "x", write)
        got = idmap.load(str(tmp_path), "x")
        plain = {x: i for i, x in enumerate(ids)}
        assert list(got) == ids and got[1] == ids[1] and got[1:3] == ids[1:3]
        assert got.take([4, 0]) == [ids[4], ids[0]]
        assert all(type(a) is type(b) for a, b in zip(got, ids))
        for p in probes:
            assert got.index.get(p) == plain.get(p), p
            assert (p in got.index) == (p in plain)
    for ids in ([7, 8, 9, 10], [7, 9, 8, 10], [3, 4, 6]):  # a range in order: subtraction
        assert idmap.save(ids, str(tmp_path), "r", write)
        got = idmap.load(str(tmp_path), "r")
        assert (got.start is not None) == (ids == [7, 8, 9, 10])
        for idx in ([2, 0, 1], np.asarray([2, 0, 1])):  # a list (an add) or an array (numpy)
            taken = got.take(idx)
            assert taken == [ids[2], ids[0], ids[1]] and all(type(x) is int for x in taken)
        for p in (6, 7, 8, 9, 10, 11, 9.0, True, "8", -1):
            assert got.index.get(p) == {x: i for i, x in enumerate(ids)}.get(p), (ids, p)
    assert not idmap.save([1, "1"], str(tmp_path), "y", write)      # mixed: the sidecar
    assert not idmap.save([2**64], str(tmp_path), "y", write)       # beyond int64


def test_saved_versions_map_their_files_and_old_versions_still_load(model_dir, rows):
    train_capturing("rank_npy", {"algorithm": "ALS", "data": ("rows", rows),
                                 "params": {"n_epochs": 1, "embed_size": 8}})
    users = sorted({r[0] for r in rows})[:20]
    want = [commands.recommend("rank_npy", u, 5, None) for u in users]
    saved = commands.save("rank_npy")
    assert os.path.isfile(os.path.join(saved["path"], "serving", "items32.npy"))
    with open(os.path.join(saved["path"], registry.META)) as f:
        assert "item_ids" not in json.load(f)  # serving/ holds them
    entry = registry.load("rank_npy", saved["version"])
    assert snapshot.mapped(entry.items.v32) and isinstance(entry.item_ids, idmap.Ids)
    assert snapshot.mapped(entry.item_ids.arr)
    assert [rec.recommend(entry, u, 5, rec.parse_opts(entry, None, "t")) for u in users] == want
    # the layout of versions saved before serving/: serving.npz of doubles
    old = os.path.join(model_dir, "rank_npy_old")
    shutil.copytree(saved["path"], old)
    shutil.rmtree(os.path.join(old, "serving"))
    with open(os.path.join(old, registry.META)) as f:
        meta = json.load(f)
    meta["user_ids"], meta["item_ids"] = list(entry.user_ids), list(entry.item_ids)
    with open(os.path.join(old, registry.META), "w") as f:
        json.dump(meta, f)
    arrays = entry.snapshot_arrays()
    items = arrays.pop("items")
    del arrays["popular"], arrays["pop_score"]
    np.savez(os.path.join(old, "serving.npz"), item_vecs=items.exact_rows(slice(None)),
             **{k: v for k, v in arrays.items() if k != "user_vecs"},
             user_vecs=np.asarray(arrays["user_vecs"], dtype=np.float64))
    commands.load("rank_npy", {"path": old})
    assert [commands.recommend("rank_npy", u, 5, None) for u in users] == want
    assert not snapshot.mapped(registry.get("rank_npy").items.v32)


def test_one_user_gives_the_lists_of_the_block():
    """top_one (recommend's path: lists from the kernel) against top, on float32, float64,
    float16 and strided user vectors, with and without bans, scores and a catalogue the
    kernel declines (not finite: numpy ranks)."""
    rng = np.random.default_rng(5)
    vecs = tricky_factors(rng, 3000, 32)
    nan = vecs.copy()
    nan[::7, 2] = np.nan
    for items in (shortlist.Items.of(vecs), shortlist.Items.of(nan)):
        shared = np.unique(rng.integers(0, 3000, 5))
        for b in range(12):
            u = rng.standard_normal(32)
            u = (u.astype(np.float32), u, u.astype(np.float16), np.repeat(u, 2)[::2])[b % 4]
            ban = None if b % 3 == 0 else np.unique(rng.integers(0, 3000, 30))
            for n in (1, 10, 5000):
                idx, exact, counts = shortlist.top(items, np.asarray(u, np.float64)[None],
                                                   [ban], shared, n)
                c = int(counts[0])
                ids, scores = shortlist.top_one(items, u, ban, shared, n, scores=True)
                assert ids == idx[0, :c].tolist(), (b, n)
                assert np.array_equal(scores, exact[0, :c], equal_nan=True), (b, n)
                assert shortlist.top_one(items, u, ban, shared, n) == (ids, None)
