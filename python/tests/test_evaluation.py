"""evaluate: #{metrics, baseline, lift}, scoring what the port serves with LibRecommender's
metric functions; train's eval reports the same figures on its held-out split."""
import numpy as np
import pandas as pd
import pytest

from conftest import train_capturing
from uro_rec import commands, evaluation, recommend as rec, registry, sources
from uro_rec.datagen import generate

ALL_RANKING = ["roc_auc", "log_loss", "pr_auc", "roc_gauc", "precision", "recall", "map",
               "ndcg", "coverage"]


@pytest.fixture(scope="module")
def split():
    rows = generate(150, 90, 3000, seed=11)
    return rows[:2400], rows[2400:]


@pytest.fixture(scope="module")
def als_eval(model_dir, split):
    train_capturing("ev_als", {"algorithm": "ALS", "data": ("rows", split[0]),
                               "params": {"embed_size": 8, "n_epochs": 4}, "save": False})
    return registry.get("ev_als")


def _known_frame(entry, rows):
    df = pd.DataFrame([r[:3] for r in rows], columns=["user", "item", "label"])
    return df[df.user.isin(entry.user_index) & df.item.isin(entry.item_index)]


def test_embedding_model_equals_libreco_evaluate(als_eval, split):
    """For an embedding model the port's lists are libreco's lists: the listwise figures are
    equal; pointwise ones differ only by float32 (libreco) vs float64 (port) scores."""
    from libreco.evaluation import evaluate

    res = commands.evaluate("ev_als", ("rows", split[1]), {"metrics": ALL_RANKING, "k": 10})
    lib = evaluate(als_eval.model, _known_frame(als_eval, split[1]), neg_sampling=True,
                   metrics=ALL_RANKING, k=10, seed=42)
    for m in ALL_RANKING:
        tol = 1e-12 if m in evaluation.LISTWISE else 1e-4
        assert res["metrics"][m] == pytest.approx(lib[m], abs=tol), m


def test_baseline_is_the_popular_unconsumed_list_and_lift_the_ratio(als_eval, split):
    from libreco.evaluation.metrics import precision_at_k

    res = commands.evaluate("ev_als", ("rows", split[1]),
                            {"metrics": ["precision", "roc_auc", "log_loss"], "k": 5})
    truth = {}
    for u, i, *_ in split[1]:
        if u in als_eval.user_index and i in als_eval.item_index:
            truth.setdefault(als_eval.user_index[u], set()).add(als_eval.item_index[i])
    want = np.mean([precision_at_k(sorted(t), rec.popular_inner(als_eval, u, 5), 5)
                    for u, t in truth.items()])
    base = res["baseline"]
    assert base["precision"] == pytest.approx(want, rel=1e-12)
    lift = res["lift"]
    assert lift["precision"] == pytest.approx(res["metrics"]["precision"] / base["precision"])
    assert lift["roc_auc"] == pytest.approx(res["metrics"]["roc_auc"] / base["roc_auc"])
    # a loss: lower is better, so the lift is baseline / model
    assert lift["log_loss"] == pytest.approx(base["log_loss"] / res["metrics"]["log_loss"])


def test_lift_is_nil_when_the_baseline_scores_zero():
    assert evaluation.lift("precision", 0.1, 0.0) is None
    assert evaluation.lift("rmse", 0.0, 1.0) is None
    assert evaluation.lift("ndcg", 0.3, 0.2) == pytest.approx(1.5)
    assert evaluation.lift("mae", 0.5, 1.0) == pytest.approx(2.0)


def test_rating_baseline_is_the_mean_label(model_dir):
    data = [(u, i, float(1 + (u * i) % 5)) for u, i, *_ in generate(100, 60, 1500, seed=4)]
    train_capturing("ev_svd", {"algorithm": "SVD", "task": "rating", "data": ("rows", data[:1200]),
                               "params": {"n_epochs": 2, "embed_size": 4}, "save": False})
    res = commands.evaluate("ev_svd", ("rows", data[1200:]), {"metrics": ["rmse", "mae"]})
    entry = registry.get("ev_svd")
    df = _known_frame(entry, data[1200:])
    mean = np.mean([lab for *_, lab in data[:1200]])
    assert res["baseline"]["rmse"] == pytest.approx(np.sqrt(np.mean((df.label - mean) ** 2)), rel=1e-5)
    assert res["lift"]["rmse"] == pytest.approx(res["baseline"]["rmse"] / res["metrics"]["rmse"])
    commands.unload("ev_svd")


def test_train_eval_reports_what_evaluate_reports_on_the_same_split(model_dir):
    """train's eval holds out a random split (seed 42) and reports evaluate's figures on it."""
    from libreco.data import random_split

    rows = generate(150, 90, 3000, seed=12)
    spec = {"metrics": ["roc_auc", "precision", "ndcg"], "k": 5, "test_size": 0.2}
    reply, _ = train_capturing("ev_train", {"algorithm": "ALS", "data": ("rows", rows),
                                            "params": {"embed_size": 8, "n_epochs": 2},
                                            "eval": spec, "save": False})
    df = sources.training_frame(sources.load(("rows", rows)))
    _train, test = random_split(df, test_size=0.2, seed=42, filter_unknown=True)
    res = commands.evaluate("ev_train", ("rows", list(test.itertuples(index=False, name=None))),
                            {"metrics": spec["metrics"], "k": 5})
    for part in ("metrics", "baseline", "lift"):
        assert reply[part] == res[part]
    commands.unload("ev_train")
