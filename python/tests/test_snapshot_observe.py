"""Serving snapshots (embedding models load without libreco) and observe."""
import subprocess
import sys
import textwrap

from conftest import consumed_of, train_capturing

from uro_rec import commands


def test_embedding_model_loads_in_a_fresh_process_without_tensorflow(model_dir, rows):
    train_capturing("snap_als", {"algorithm": "ALS", "data": ("rows", rows),
                                 "params": {"n_epochs": 2}})
    users = sorted({r[0] for r in rows})[:8] + [10**9]  # and one unknown user
    before = [commands.recommend("snap_als", u, 5, {"scores": True}) for u in users]
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {sys.path[0]!r})
        from uro_rec import commands
        commands.configure({model_dir!r})
        commands.load("snap_als")
        print(repr([commands.recommend("snap_als", u, 5, {{"scores": True}}) for u in {users!r}]))
        print("tensorflow" in sys.modules, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    lines = out.stdout.splitlines()
    assert lines, out.stderr[-3000:]
    assert lines[0] == repr(before)
    assert lines[1] == "False False"


def test_observe_filters_what_a_user_just_consumed(model_dir, rows):
    train_capturing("obs_als", {"algorithm": "ALS", "data": ("rows", rows),
                                "params": {"n_epochs": 1}})
    user = rows[0][0]
    top = commands.recommend("obs_als", user, 3, None)
    reply = commands.observe("obs_als", [(user, top[0], 1.0, 1700000000.0)])
    assert reply["applied"] == 1 and reply["stored"] == 0
    after = commands.recommend("obs_als", user, 3, None)
    assert top[0] not in after and len(after) == 3
    assert not consumed_of(rows, user) & set(after)

    # an unknown user's observations filter their cold-start list too
    stranger = 10**12
    cold = commands.recommend("obs_als", stranger, 4, None)
    commands.observe("obs_als", [(stranger, cold[1], 1.0)])
    again = commands.recommend("obs_als", stranger, 4, None)
    assert cold[1] not in again and len(again) == 4

    # unknown items are counted, not an error
    reply = commands.observe("obs_als", [(user, "no-such-item", 1.0, 0)])
    assert reply["unknown_items"] == 1 and reply["applied"] == 0


def test_recommend_many_matches_recommend_one_by_one(model_dir, rows):
    from uro_rec import recommend as rec, registry

    train_capturing("many_als", {"algorithm": "ALS", "data": ("rows", rows),
                                 "params": {"n_epochs": 1}})
    entry = registry.get("many_als")
    users = entry.user_ids + [10**13, "stranger"]
    for opts in ({}, {"scores": True}, {"exclude": entry.item_ids[:7], "scores": True},
                 {"filter_consumed": False}):
        ro = rec.parse_opts(entry, opts, "t")
        batch = dict(rec.recommend_many(entry, users, 6, ro, block=17))
        for u in users:
            one = rec.recommend(entry, u, 6, ro)
            got = batch[u]
            if opts.get("scores"):
                assert [i for i, _ in got] == [i for i, _ in one]
                # gemm and gemv sum in different orders: equal to float32 rounding
                assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(got, one))
            else:
                assert got == one
    # a user with fewer candidates than N is topped up exactly as one by one
    ro = rec.parse_opts(entry, {}, "t")
    big = entry.n_items
    heavy = max(entry.user_ids, key=lambda u: len(entry.consumed[entry.user_inner(u)]))
    assert dict(rec.recommend_many(entry, [heavy], big, ro))[heavy] == rec.recommend(entry, heavy, big, ro)


def test_observations_are_not_saved_into_the_snapshot(model_dir, rows):
    """observe lives in memory until the next train or load, on both load paths alike."""
    import os
    import shutil

    train_capturing("obs_save", {"algorithm": "ALS", "data": ("rows", rows),
                                 "params": {"n_epochs": 1}})
    user = rows[0][0]
    top = commands.recommend("obs_save", user, 5, None)
    commands.observe("obs_save", [(user, i, 1.0) for i in top])
    saved = commands.save("obs_save")
    commands.load("obs_save", {"version": saved["version"]})
    from_snapshot = commands.recommend("obs_save", user, 5, None)
    assert from_snapshot == top  # the observations are gone with the reload
    plain = os.path.join(model_dir, "obs_save_plain")
    shutil.copytree(saved["path"], plain)
    os.remove(os.path.join(plain, "serving", "info.json"))  # force the libreco load
    commands.load("obs_save", {"path": plain})
    assert commands.recommend("obs_save", user, 5, None) == from_snapshot


def test_bad_values_are_badarg_not_python_errors(model_dir, rows):
    import pytest
    from uro_rec.errors import BadArg

    train_capturing("bad_vals", {"algorithm": "ALS", "data": ("rows", rows),
                                 "params": {"n_epochs": 1}})
    with pytest.raises(BadArg, match="too large"):
        commands.observe("bad_vals", [(rows[0][0], rows[0][1], 10**400)])
    with pytest.raises(BadArg, match="store"):
        commands.observe("bad_vals", [(rows[0][0], rows[0][1], 1.0)], {"store": "yes"})
    with pytest.raises(BadArg, match="table"):
        commands.observe("bad_vals", [(rows[0][0], rows[0][1], 1.0)], {"table": "x; drop"})
    with pytest.raises(BadArg, match="too large"):
        commands.train("bad_vals2", {"algorithm": "ALS", "data": ("rows", [(1, 2, 10**400)])})
    with pytest.raises(BadArg, match="model name"):
        commands.recommend("bad_vals\n", 1, 3, None)
