"""{train, Name, #{from_version => V, data => New}}: LibRecommender's own retraining path
(merge_trainset, rebuild_model, fit), equal to the same steps taken directly; which
algorithms cannot, and why; ids kept; state carried across a load."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import in_fresh_process, train_capturing
from uro_rec import commands, registry
from uro_rec.datagen import generate, generate_features
from uro_rec.errors import Unsupported

PARITY = {  # algorithm -> params (one thread where the backend has a choice)
    "ALS": {"n_epochs": 2, "embed_size": 8, "reg": 1.0},
    "SVD": {"n_epochs": 1, "embed_size": 8},
    "LightGCN": {"n_epochs": 1, "embed_size": 8},
    "RNN4Rec": {"n_epochs": 1, "embed_size": 8},
    "DeepFM": {"n_epochs": 1, "embed_size": 8},
    "Item2Vec": {"n_epochs": 1, "embed_size": 8, "n_threads": 1},
    "RsItemCF": {},
    "Swing": {},
}
NEW_USER, NEW_ITEM = 10_001, 20_001
CHECK_USERS = [1, 2, 5, 40, 77, NEW_USER]
SINGLE = {"intra_op_parallelism_threads": 1, "inter_op_parallelism_threads": 1}


def split_rows():
    rows = [r[:3] for r in generate(150, 90, 3000, seed=3)]
    return rows[:2700], rows[2700:] + [(NEW_USER, rows[0][1], 1), (NEW_USER, NEW_ITEM, 1),
                                        (3, NEW_ITEM, 1)]


def params_for(alg):
    p = dict(PARITY[alg])
    if alg in ("SVD", "RNN4Rec", "DeepFM"):
        p["tf_sess_config"] = SINGLE
    return p


def direct_retrain(alg, old, new, directory):
    """The steps LibRecommender's documentation gives, called directly."""
    import random

    import torch
    import libreco.algorithms as algos
    from libreco.data import DataInfo, DatasetPure
    from libreco.tfops import tf

    def seeded_fit(model, data):
        random.seed(42)
        np.random.seed(42)
        torch.manual_seed(42)
        model.fit(data, neg_sampling=True, verbose=0)

    kw = params_for(alg)
    if alg == "LightGCN":
        kw["device"] = "cpu"
    cls = getattr(algos, alg)
    frame = lambda rows: pd.DataFrame(rows, columns=["user", "item", "label"]).astype({"label": np.float32})
    trainset, info = DatasetPure.build_trainset(frame(old))
    with tf.Graph().as_default():
        model = cls("ranking", info, **kw)
        seeded_fit(model, trainset)
        info.save(directory, "m")
        model.save(directory, "m", inference_only=False)
    info = DataInfo.load(directory, "m")
    trainset, info = DatasetPure.merge_trainset(frame(new), info, merge_behavior=True)
    graph = tf.Graph()
    with graph.as_default():
        model = cls("ranking", info, **kw)
        model.rebuild_model(directory, "m")
        seeded_fit(model, trainset)
        return {str(u): model.recommend_user(u, 10)[u].tolist() for u in CHECK_USERS}


def parity_report(model_dir, scratch):
    """Run in a fresh process (see test_features.parity_report for why)."""
    commands.configure(model_dir)
    old, new = split_rows()
    out = {}
    for alg in PARITY:
        name = "rt_" + alg.lower()
        commands.train(name, {"algorithm": alg, "data": ("rows", old), "params": params_for(alg)})
        reply = commands.train(name, {"from_version": "latest", "data": ("rows", new)})
        d = os.path.join(scratch, alg)
        os.makedirs(d)
        out[alg] = {"version": reply["version"],
                    "port": {str(u): commands.recommend(name, u, 10, None) for u in CHECK_USERS},
                    "direct": direct_retrain(alg, old, new, d)}
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return in_fresh_process("test_retrain", tmp_path_factory.mktemp("rt_models"),
                            tmp_path_factory.mktemp("rt_direct"))


@pytest.mark.parametrize("alg", list(PARITY))
def test_retrain_equals_libreco_own_retrain(report, alg):
    r = report[alg]
    assert r["version"] == 2
    assert r["port"] == r["direct"]


def test_ids_are_kept_and_new_ones_added(model_dir):
    old = [(f"u{u}", f"i{i}", 1) for u, i, *_ in generate(100, 60, 1500, seed=8)]
    new = [("u1", "brand-new-item", 1), ("brand-new-user", "i3", 1), ("brand-new-user", "i4", 1)]
    train_capturing("rt_ids", {"algorithm": "ALS", "data": ("rows", old), "params": {"n_epochs": 1}})
    before = registry.get("rt_ids")
    old_users, old_items = list(before.user_ids), list(before.item_ids)
    reply = commands.train("rt_ids", {"from_version": 1, "data": ("rows", new), "params": {"n_epochs": 1}})
    after = registry.get("rt_ids")
    assert reply["version"] == 2 and reply["n_users"] == len(old_users) + 1
    assert after.user_ids[:len(old_users)] == old_users and after.user_ids[-1] == "brand-new-user"
    assert after.item_ids[:len(old_items)] == old_items and after.item_ids[-1] == "brand-new-item"
    # consumed items are the old and the new: neither comes back to u1
    recs = commands.recommend("rt_ids", "u1", 60, None)
    assert "brand-new-item" not in recs and not {i for u, i, _ in old if u == "u1"} & set(recs)
    assert len(commands.recommend("rt_ids", "brand-new-user", 5, None)) == 5


def test_what_cannot_be_retrained_says_why(model_dir, rows):
    for alg, params, match in (("ItemCF", {}, "rebuild_model raises NotImplementedError"),
                               ("UserCF", {}, "RsUserCF"),
                               ("BPR", {"use_tf": False, "n_epochs": 1}, "Cython backend")):
        train_capturing("rt_no", {"algorithm": alg, "data": ("rows", rows), "params": params})
        with pytest.raises(Unsupported, match=match):
            commands.train("rt_no", {"from_version": "latest", "data": ("rows", rows[:50])})
    # a version without training state (saved before retraining existed)
    train_capturing("rt_old", {"algorithm": "SVD", "data": ("rows", rows), "params": {"n_epochs": 1}})
    shutil.rmtree(os.path.join(model_dir, "rt_old", "1", "retrain"))
    with pytest.raises(Unsupported, match="no training state"):
        commands.train("rt_old", {"from_version": 1, "data": ("rows", rows[:50])})


def test_state_carries_over_a_load_and_features_are_kept(model_dir):
    """A model loaded (not trained) in this process and saved again keeps the training
    state of the version it came from; a feature model retrains on new rows whose users
    and items carry the same feature columns, and a new user is served by them."""
    rows = generate(120, 80, 2000, seed=3)
    users, items = generate_features(130, 80, seed=3)
    spec = {"user": {"country": "sparse", "friends": "dense"},
            "item": {"tags": "multi_sparse"}, "users": ("rows", users), "items": ("rows", items)}
    train_capturing("rt_feat", {"algorithm": "FM", "data": ("rows", rows[:1800]), "features": spec,
                                "params": {"n_epochs": 1, "embed_size": 8}})
    commands.load("rt_feat")
    assert not registry.get("rt_feat").trained_here
    saved = commands.save("rt_feat")
    assert os.path.isdir(os.path.join(saved["path"], "retrain"))
    new = [r[:3] for r in rows[1800:]] + [(125, rows[0][1], 1)]
    reply = commands.train("rt_feat", {"from_version": "latest", "data": ("rows", new),
                                       "features": {"users": ("rows", users), "items": ("rows", items)}})
    assert reply["version"] == saved["version"] + 1
    entry = registry.get("rt_feat")
    assert entry.features["item"]["multi_sparse"] == {"tags": 3}
    assert 125 in entry.user_index
    meta = json.load(open(os.path.join(entry.path, "uro_meta.json")))
    assert meta["features"] == entry.features
