"""ItemCF, UserCF, RsItemCF, RsUserCF and Swing serve the same list from recommend,
recommend_many and a fresh process after load: their own candidates, then a top-up in the
fixed popularity order, never LibRecommender's random popular fill. (The database export
of the same lists is test/db_test.escript's case 8.)"""
import json
import os
import subprocess
import sys

import pytest

from conftest import train_capturing
from uro_rec import commands, registry
from uro_rec.datagen import generate

MEMORY = ["ItemCF", "UserCF", "RsItemCF", "RsUserCF", "Swing"]
N = 12


@pytest.fixture(scope="module")
def sparse_rows():
    """Sparse enough that many users run out of neighbours, plus five users whose only item
    nobody else has: no neighbours at all, so their whole list is the top-up."""
    rows = [r[:3] for r in generate(300, 400, 1500, seed=5)]
    return rows + [(10_000 + k, 20_000 + k, 1) for k in range(5)]


@pytest.fixture(scope="module")
def memory_models(model_dir, sparse_rows):
    for alg in MEMORY:
        train_capturing("det_" + alg, {"algorithm": alg, "data": ("rows", sparse_rows)})
    return ["det_" + alg for alg in MEMORY]


def users_of(rows):
    return sorted({r[0] for r in rows})


def _lists(name, users):
    return [commands.recommend(name, u, N, None) for u in users]


@pytest.mark.parametrize("alg", MEMORY)
def test_lists_are_unique_unconsumed_and_repeatable(memory_models, sparse_rows, alg):
    name = "det_" + alg
    users = users_of(sparse_rows)
    first = _lists(name, users)
    assert _lists(name, users) == first == _lists(name, users)
    entry = registry.get(name)
    for u, recs in zip(users, first):
        consumed = {entry.item_ids[i] for i in entry.consumed[entry.user_index[u]]}
        assert len(recs) == N == len(set(recs)) and not consumed & set(recs)
    # the lonely users' lists are the popularity order minus what they consumed
    lonely = first[users.index(10_000)]
    assert lonely == entry.item_ids.take(entry.popular[:N])


@pytest.mark.parametrize("alg", MEMORY)
def test_recommend_many_equals_recommend(memory_models, sparse_rows, alg):
    name = "det_" + alg
    users = users_of(sparse_rows)
    assert commands.recommend_many(name, users, N, None) == dict(zip(users, _lists(name, users)))
    opts = {"exclude": _lists(name, users[:1])[0][:4], "scores": True}
    many = commands.recommend_many(name, users[:40], N, opts)
    assert many == {u: commands.recommend(name, u, N, opts) for u in users[:40]}


def test_fresh_process_after_load_gives_the_same_lists(memory_models, sparse_rows, model_dir):
    users = users_of(sparse_rows)
    before = {name: _lists(name, users) for name in memory_models}
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from uro_rec import commands as C; C.configure(sys.argv[2]);"
        "names, users = json.loads(sys.argv[3]), json.loads(sys.argv[4]);"
        "[C.load(n, []) for n in names];"
        "out = {n: [C.recommend(n, u, %d, None) for u in users] for n in names};"
        "many = {n: list(C.recommend_many(n, users, %d, None).values()) for n in names};"
        "sys.__stdout__.write('RESULT' + json.dumps([out, many]))" % (N, N)
    )
    py_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code, py_dir, model_dir, json.dumps(memory_models),
         json.dumps(users)], capture_output=True, text=True, timeout=600)
    assert "RESULT" in out.stdout, out.stderr[-3000:]
    fresh, fresh_many = json.loads(out.stdout.split("RESULT", 1)[1])
    assert fresh == before
    assert fresh_many == before


def test_evaluate_scores_the_served_lists(memory_models, sparse_rows):
    """evaluate's ndcg is LibRecommender's ndcg_at_k over the very lists recommend serves."""
    import numpy as np
    from libreco.evaluation.metrics import ndcg_at_k

    name = "det_Swing"
    entry = registry.get(name)
    held = [(u, i, 1) for u, i, _ in sparse_rows[::7]]
    res = commands.evaluate(name, ("rows", held), {"metrics": ["ndcg"], "k": 10})
    truth = {}
    for u, i, _ in held:
        truth.setdefault(u, set()).add(entry.item_index[i])
    want = np.mean([ndcg_at_k(sorted(t), [entry.item_index[x] for x in commands.recommend(name, u, 10, None)], 10)
                    for u, t in truth.items()])
    assert res["metrics"]["ndcg"] == pytest.approx(want, rel=1e-12)
    assert set(res) == {"metrics", "baseline", "lift"}
