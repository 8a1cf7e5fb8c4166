"""top_k: the chunked partition gives the k best values, best first, the same for a row
alone as in a block."""
import numpy as np

from uro_rec.recommend import top_k


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    for n in (1, 5, 37, 100, 1000, 10000, 12345):
        for k in (1, 3, 10, 50):
            if k > n:
                continue
            raw = rng.standard_normal((32, n)).astype(np.float32)
            raw[:, rng.integers(0, n, n // 3)] = -np.inf
            raw[3, :] = 1.0  # a row of ties
            got = top_k(raw, k)
            for r in range(32):
                want = np.sort(raw[r])[::-1][:k]
                vals = raw[r, got[r]]
                assert np.array_equal(vals, want)  # the k best values, best first
                assert len(set(got[r].tolist())) == k  # no index twice
                ties = vals[:-1] == vals[1:]
                assert (got[r][:-1][ties] < got[r][1:][ties]).all()  # equal values by index
                assert np.array_equal(top_k(raw[r:r + 1], k)[0], got[r])  # alone == in a block
