"""top_k: exactly the k best values of each row, best first, ties in index order: the same
answer as a full stable sort, for a row alone and in a block."""
import numpy as np

from uro_rec.recommend import top_k


def full_sort(row, k):
    return np.lexsort((np.arange(row.size), -row))[:k]


def test_top_k_equals_a_full_stable_sort():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (1, 5, 37, 100, 1000, 5041, 10000, 12345):
            for k in (1, 3, 10, 50, n):
                if k > n or k > 1000:
                    continue
                raw = rng.standard_normal((32, n)).astype(dtype)
                raw[:, rng.integers(0, n, n // 3)] = -np.inf
                raw[3, :] = 1.0  # a row of ties
                raw[5, : n // 2] = -np.inf  # half masked
                raw[7] = np.round(raw[7], 1)  # many ties among the best
                raw[9, :] = -np.inf  # nothing left: index order
                got = top_k(raw, k)
                for r in range(32):
                    assert np.array_equal(got[r], full_sort(raw[r], k)), (dtype, n, k, r)
                    assert np.array_equal(top_k(raw[r:r + 1], k)[0], got[r])  # alone == block


def test_top_k_survives_nan():
    """A NaN score (a broken model) must not lose items or crash: the row is sorted whole."""
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((4, 400))
    raw[1, ::7] = np.nan
    raw[2, :] = np.nan
    got = top_k(raw, 10)
    assert got.shape == (4, 10)
    for r in range(4):
        assert len(set(got[r].tolist())) == 10
        assert np.array_equal(top_k(raw[r:r + 1], 10)[0], got[r])
    assert np.array_equal(got[0], full_sort(raw[0], 10))


def test_rescored_scores_are_the_same_bits_alone_and_in_a_block():
    """recommend scores one user, recommend_many and export blocks of them: the chosen
    items' scores must agree to the last bit (BLAS products do not)."""
    from types import SimpleNamespace

    from uro_rec.recommend import _rescored

    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        for d in (1, 7, 8, 16, 33, 128):
            entry = SimpleNamespace(item_vecs_scoring=rng.standard_normal((500, d)).astype(dtype))
            users = rng.standard_normal((64, d)).astype(dtype)
            top = np.stack([rng.choice(500, 10, replace=False) for _ in range(64)])
            vecs = entry.item_vecs_scoring
            vecs[top[5, 4]] = vecs[top[5, 3]]  # two items with equal scores: index order
            block_top, block_scores = _rescored(entry, users, top)
            for r in range(64):
                one_top, one_scores = _rescored(entry, users[r], top[r])
                assert np.array_equal(one_top, block_top[r])
                assert np.array_equal(one_scores, block_scores[r])  # bit for bit
                assert (np.diff(one_scores) <= 0).all()  # best first
            tied = sorted(top[5, 3:5].tolist())
            pos = [block_top[5].tolist().index(i) for i in tied]
            assert pos[0] + 1 == pos[1]  # adjacent, lower index first
