"""Train / recommend / save / load with real libreco models (tiny data)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import BIG, consumed_of
from uro_rec import commands, registry
from uro_rec.errors import BadArg
from uro_rec.port import Atom

MODELS = ["als_str", "bpr_tf", "lgcn_big", "itemcf_int"]


def model_consumed(name, user):
    """Items the model saw ``user`` consume (its train split, not all rows)."""
    entry = registry.get(name)
    return {entry.item_ids[i] for i in entry.consumed[entry.user_index[user]]}


@pytest.fixture(params=MODELS)
def model(request, all_models):
    return request.param, all_models[request.param]


def test_train_reply(als):
    assert als[Atom("name")] == "als_str" and als[Atom("algorithm")] == "ALS"
    assert als[Atom("version")] == 1
    assert als[Atom("n_users")] > 0 and als[Atom("n_items")] > 0
    assert als[Atom("n_interactions")] > 0 and als[Atom("seconds")] > 0
    metrics = als[Atom("metrics")]
    assert set(metrics) == {"roc_auc", "precision", "recall", "ndcg"}
    assert set(als[Atom("baseline")]) == set(als[Atom("lift")]) == set(metrics)
    assert all(isinstance(k, Atom) and isinstance(v, float) for k, v in metrics.items())
    assert metrics["roc_auc"] > 0.5  # the synthetic data has learnable structure


def test_training_sends_epoch_events_with_loss(bpr):
    _reply, events = bpr
    epochs = [e for e in events if e[Atom("type")] == "epoch"]
    assert [e[Atom("epoch")] for e in epochs if Atom("loss") not in e] == [1, 2]
    losses = [e for e in epochs if Atom("loss") in e]
    assert [e[Atom("epoch")] for e in losses] == [1, 2]
    assert all(isinstance(e[Atom("loss")], float) and e[Atom("seconds")] >= 0 for e in losses)


def test_recommend_guarantees(model, rows):
    name, (kind, U, I) = model
    user = rows[0][0]
    consumed = model_consumed(name, U(user))
    if name != "als_str":  # trained without an eval split: saw every row
        assert consumed == {I(i) for i in consumed_of(rows, user)}
    recs = commands.recommend(name, U(user), 10, [])
    assert len(recs) == 10 and len(set(recs)) == 10
    assert not consumed & set(recs)
    assert all(type(r) is (str if kind == "str" else int) for r in recs)
    # exclude: drop the first three, still exactly 10
    recs2 = commands.recommend(name, U(user), 10, {"exclude": recs[:3] + [I(99999)]})
    assert len(recs2) == 10 and not set(recs[:3]) & set(recs2) and not consumed & set(recs2)
    # without filtering consumed items may come back
    unfiltered = commands.recommend(name, U(user), 60, {"filter_consumed": False})
    assert len(unfiltered) == 60 and len(set(unfiltered)) == 60
    assert commands.recommend(name, U(user), 0, []) == []


def test_recommend_returns_all_candidates_when_n_is_large(model, rows):
    name, (_kind, U, I) = model
    user = rows[0][0]
    n_items = registry.get(name).n_items
    n_consumed = len(model_consumed(name, U(user)))
    recs = commands.recommend(name, U(user), n_items + 5, [])
    assert len(recs) == n_items - n_consumed == len(set(recs))


def test_unknown_user_gets_cold_start(model):
    name, (kind, U, I) = model
    ghost = "nobody" if kind == "str" else 10**30
    popular = commands.recommend(name, ghost, 15, [])
    assert len(popular) == 15 == len(set(popular))
    entry = registry.get(name)
    assert popular == [entry.item_ids[i] for i in entry.popular[:15]]
    avg = commands.recommend(name, ghost, 15, {Atom("cold_start"): Atom("average")})
    assert len(avg) == 15 == len(set(avg))
    excl = commands.recommend(name, ghost, 15, {"exclude": popular[:5]})
    assert len(excl) == 15 and not set(popular[:5]) & set(excl)


def test_scores(model, rows):
    name, (_kind, U, _I) = model
    scored = commands.recommend(name, U(rows[0][0]), 8, [Atom("scores")])
    assert len(scored) == 8
    assert all(isinstance(t, tuple) and isinstance(t[1], float) for t in scored)
    assert [i for i, _ in scored] == commands.recommend(name, U(rows[0][0]), 8, [])
    if registry.get(name).kind == "embed":
        s = [x for _, x in scored]
        assert s == sorted(s, reverse=True) and all(0.0 <= x <= 1.0 for x in s)


def test_recommend_many(model, rows):
    name, (_kind, U, _I) = model
    users = [U(rows[0][0]), U(rows[1][0]), U(123456)]
    out = commands.recommend_many(name, users, 5, [])
    assert list(out) == users and all(len(v) == 5 for v in out.values())
    assert out[users[0]] == commands.recommend(name, users[0], 5, [])


def test_predict(model, rows):
    name, (_kind, U, I) = model
    user, item = rows[0][0], rows[0][1]
    out = commands.predict(name, U(user), [I(item), I(999999), I(rows[5][1])])
    assert len(out) == 3 and all(isinstance(x, float) for x in out)
    assert commands.predict(name, U(user), []) == []
    assert len(commands.predict(name, U(424242), [I(item)])) == 1


def test_similar_items(model, rows):
    name, (_kind, _U, I) = model
    item = I(rows[0][1])
    sims = commands.similar_items(name, item, 5)
    assert 0 < len(sims) <= 5 and item not in [i for i, _ in sims]
    scores = [s for _, s in sims]
    assert scores == sorted(scores, reverse=True)
    if registry.get(name).kind == "embed":
        assert len(sims) == 5
    with pytest.raises(BadArg, match="unknown item"):
        commands.similar_items(name, I(999999), 5)
    assert commands.similar_items(name, item, 0) == []


def test_bignum_ids_come_back_exact(lightgcn, rows):
    recs = commands.recommend("lgcn_big", BIG + rows[0][0], 5, [])
    assert all(type(r) is int and r > 2**64 for r in recs)


def test_save_and_load_round_trip(model, rows, model_dir):
    name, (_kind, U, _I) = model
    users = [U(rows[0][0]), U(rows[7][0])]
    before = [commands.recommend(name, u, 10, [Atom("scores")]) for u in users]
    saved = commands.save(name)
    assert saved[Atom("version")] >= 2 and os.path.isdir(saved[Atom("path")])
    assert commands.unload(name) == "ok"
    with pytest.raises(Exception) as e:
        commands.recommend(name, users[0], 10, [])
    assert e.value.kind == "unknown_model"
    loaded = commands.load(name, [])
    assert loaded == {Atom("name"): name, Atom("version"): saved[Atom("version")],
                      Atom("algorithm"): registry.get(name).algorithm}
    after = [commands.recommend(name, u, 10, [Atom("scores")]) for u in users]
    assert [[i for i, _ in r] for r in after] == [[i for i, _ in r] for r in before]
    for b, a in zip(before, after):
        assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-5)
    # an explicit older version and an explicit path also load
    assert commands.load(name, {"version": 1})[Atom("version")] == 1
    assert commands.load(name, {"path": saved[Atom("path")]})[Atom("version")] == saved[Atom("version")]


def test_load_in_a_fresh_process_gives_same_recommendations(als, rows, model_dir):
    before = commands.recommend("als_str", f"u{rows[0][0]}", 10, [])
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from uro_rec import commands as C; C.configure(sys.argv[2]);"
        "C.load('als_str', []);"
        "sys.__stdout__.write('RESULT' + json.dumps(C.recommend('als_str', sys.argv[3], 10, [])))"
    )
    py_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code, py_dir, model_dir, f"u{rows[0][0]}"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out.split("RESULT", 1)[1]) == before


def test_models_listing_and_info(all_models):
    listed = {m[Atom("name")]: m for m in commands.models()}
    assert set(MODELS) <= set(listed)
    assert listed["als_str"][Atom("algorithm")] == "ALS"
    info = commands.python_info()
    assert info[Atom("librecommender")] == "1.5.2"
    assert set(MODELS) <= set(info[Atom("models")])
    term = {Atom("a"): [1, 2.5, "x", (None, True)]}
    assert commands.echo(term) == term


def test_evaluate_command(als, rows):
    res = commands.evaluate("als_str", ("rows", [(f"u{u}", f"i{i}", 1) for u, i, *_ in rows[:300]]),
                            {"metrics": ["roc_auc", "precision"], "k": 5})
    assert set(res) == {"metrics", "baseline", "lift"}
    for part in ("metrics", "baseline"):
        assert set(res[part]) == {"roc_auc", "precision"}
        assert all(isinstance(v, float) for v in res[part].values())
    with pytest.raises(BadArg, match="rmse"):
        commands.evaluate("als_str", ("rows", [("u1", "i1", 1)]), {"metrics": ["rmse"]})


def test_rust_cf_models_work_with_recfarm(model_dir, rows):
    for alg in ("RsItemCF", "RsUserCF", "Swing"):
        name = alg.lower()
        commands.train(name, {"algorithm": alg, "data": ("rows", rows), "save": False})
        recs = commands.recommend(name, rows[0][0], 10, [])
        assert len(recs) == 10 == len(set(recs))
        assert not consumed_of(rows, rows[0][0]) & set(recs)
        assert commands.similar_items(name, rows[0][1], 3)
        commands.unload(name)


def test_rating_task(model_dir, rows):
    data = [(u, i, float(1 + (u * i) % 5)) for u, i, *_ in rows[:800]]
    reply = commands.train("svd_rating", {"algorithm": "SVD", "task": "rating", "data": ("rows", data),
                                          "params": {"n_epochs": 1, "embed_size": 4},
                                          "eval": {"test_size": 0.2}, "save": False})
    assert set(reply[Atom("metrics")]) == {"rmse", "mae"}
    preds = commands.predict("svd_rating", data[0][0], [data[0][1]])
    assert 1.0 <= preds[0] <= 5.0
    commands.unload("svd_rating")


def test_sidecar_keeps_id_types(lightgcn, model_dir):
    meta = json.load(open(os.path.join(model_dir, "lgcn_big", "1", "uro_meta.json")))
    assert all(isinstance(u, int) and u > 2**64 for u in meta["user_ids"])


@pytest.mark.parametrize("alg, params", [
    ("BPR", {"use_tf": False, "n_epochs": 1}),      # Cython backend
    ("Item2Vec", {"n_epochs": 1, "embed_size": 8}),  # gensim
    ("RNN4Rec", {"n_epochs": 1, "embed_size": 8}),   # TF graph rebuilt on load
    ("NCF", {"n_epochs": 1, "embed_size": 8}),       # served via libreco's recommend_user
    ("YouTubeRetrieval", {"n_epochs": 1, "embed_size": 8}),
])
def test_more_algorithms_round_trip(model_dir, rows, alg, params):
    name = "extra_" + alg.lower()
    user = rows[0][0]
    commands.train(name, {"algorithm": alg, "data": ("rows", rows), "params": params})
    before = commands.recommend(name, user, 10, [])
    assert len(before) == 10 == len(set(before)) and not consumed_of(rows, user) & set(before)
    commands.unload(name)
    commands.load(name, [])
    assert commands.recommend(name, user, 10, []) == before
    assert commands.similar_items(name, rows[0][1], 3)
    commands.unload(name)


def _encodable(v):
    """Only what the C codec can encode (see the type mapping)."""
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_encodable(x) for x in v)
    if isinstance(v, dict):
        return all(_encodable(k) and _encodable(x) for k, x in v.items())
    return False


def test_replies_are_encodable_python_values(als, lightgcn, rows):
    replies = [
        als, commands.models(), commands.python_info(),
        commands.recommend("lgcn_big", BIG + rows[0][0], 5, [Atom("scores")]),
        commands.recommend_many("als_str", ["u1", "nobody"], 3, []),
        commands.predict("lgcn_big", BIG + rows[0][0], [BIG * 3 + rows[0][1]]),
        commands.similar_items("als_str", f"i{rows[0][1]}", 3),
    ]
    for r in replies:
        assert _encodable(r), r
    for k in als:
        assert type(k) is Atom
