"""predict equals LibRecommender's own model.predict, unknown users and items included, for
every kind of model: embedding (Cython, TensorFlow, rating with biases), scoring network
(NCF, FM), memory-based (ItemCF, Swing)."""
import pytest

from conftest import train_capturing
from uro_rec import commands, registry

GHOST_USER, GHOST_ITEM = 10**9, 10**9 + 1

CASES = [
    ("ALS", "ranking", {"embed_size": 8, "n_epochs": 2}),
    ("RNN4Rec", "ranking", {"embed_size": 8, "n_epochs": 1}),
    ("SVD", "rating", {"embed_size": 4, "n_epochs": 1}),
    ("NCF", "ranking", {"embed_size": 8, "n_epochs": 1}),
    ("FM", "ranking", {"embed_size": 8, "n_epochs": 1}),
    ("ItemCF", "ranking", {}),
    ("Swing", "ranking", {}),
]


def _data(rows, task):
    if task == "rating":
        return [(u, i, float(1 + (u * i) % 5)) for u, i, *_ in rows]
    return rows


@pytest.mark.parametrize("alg, task, params", CASES, ids=[c[0] for c in CASES])
def test_predict_equals_libreco(model_dir, rows, alg, task, params):
    name = "pred_" + alg.lower()
    train_capturing(name, {"algorithm": alg, "task": task, "data": ("rows", _data(rows, task)),
                           "params": params})
    entry = registry.get(name)
    user, items = rows[0][0], [rows[3][1], rows[9][1], GHOST_ITEM]
    for u in (user, GHOST_USER):
        got = commands.predict(name, u, items)
        with entry.graph_ctx():
            want = [float(entry.model.predict(u, i)) for i in items]
        # libreco scores embeddings in float32, the port in float64
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7), (alg, u)
    if alg == "NCF":  # the case the issue reported: the network's answer, not 0.0
        assert commands.predict(name, GHOST_USER, items[:1])[0] != 0.0
    if entry.kind == "embed":  # a fresh load from the serving snapshot answers the same
        before = commands.predict(name, GHOST_USER, items) + commands.predict(name, user, items)
        commands.load(name)
        assert registry.get(name)._model is None  # served from the snapshot
        assert commands.predict(name, GHOST_USER, items) + commands.predict(name, user, items) == before
    commands.unload(name)


def test_predict_scores_equal_recommend_scores(als, rows):
    scored = commands.recommend("als_str", f"u{rows[0][0]}", 10, {"scores": True})
    assert commands.predict("als_str", f"u{rows[0][0]}", [i for i, _ in scored]) == [s for _, s in scored]
