import pytest

from uro_rec import commands
from uro_rec.errors import BadArg, PortError, UnknownModel, Unsupported
from uro_rec.port import Atom


def test_error_classes():
    e = BadArg("recommend: N must be a non-negative integer, got -1")
    assert isinstance(e, PortError) and e.kind == "badarg" and "N" in e.detail
    assert UnknownModel("m").kind == "unknown_model" and UnknownModel("m").detail == "m"
    assert Unsupported("x").kind == "unsupported"


def test_unknown_model_everywhere(model_dir):
    calls = [
        lambda: commands.recommend("ghost", 1, 5, []),
        lambda: commands.recommend_many("ghost", [1], 5, []),
        lambda: commands.predict("ghost", 1, [1]),
        lambda: commands.similar_items("ghost", 1, 5),
        lambda: commands.save("ghost"),
        lambda: commands.unload("ghost"),
        lambda: commands.load("ghost", []),
        lambda: commands.evaluate("ghost", ("rows", [(1, 1, 1)]), []),
    ]
    for call in calls:
        with pytest.raises(UnknownModel) as e:
            call()
        assert e.value.detail == "ghost"


def test_bad_recommend_args(als):
    with pytest.raises(BadArg) as e:
        commands.recommend("als_str", "u1", -1, [])
    assert e.value.detail == "recommend: N must be a non-negative integer, got -1"
    for opts, needle in [
        ({"cold_start": "random"}, "cold_start"),
        ({"filter_consumed": 1}, "filter_consumed"),
        ({"exclude": "i1"}, "exclude"),
        ({"bogus": 1}, "bogus"),
        (5, "opts"),
    ]:
        with pytest.raises(BadArg) as e:
            commands.recommend("als_str", "u1", 3, opts)
        assert needle in e.value.detail
    with pytest.raises(BadArg, match="user"):
        commands.recommend("als_str", 1.5, 3, [])
    with pytest.raises(BadArg, match="users"):
        commands.recommend_many("als_str", "u1", 3, [])
    with pytest.raises(BadArg, match="items"):
        commands.predict("als_str", "u1", "i1")
    with pytest.raises(BadArg, match="version"):
        commands.load("als_str", {"version": 99})
    with pytest.raises(BadArg, match="version"):
        commands.load("als_str", {"version": "first"})


def test_bad_train_specs(model_dir):
    rows = ("rows", [(1, 1, 1), (2, 2, 1)])
    cases = [
        ({"data": rows}, "algorithm"),
        ({"algorithm": "ALS"}, "data"),
        ({"algorithm": "NoSuchModel", "data": rows}, "unknown algorithm"),
        ({"algorithm": "ALS", "data": rows, "task": "clustering"}, "task"),
        ({"algorithm": "ALS", "data": rows, "params": {"nope": 1}}, "nope"),
        ({"algorithm": "ALS", "data": rows, "params": {"reg": -1}}, "reg"),
        ({"algorithm": "ALS", "data": rows, "params": {"embed_size": "16"}}, "embed_size must be an integer"),
        ({"algorithm": "BPR", "data": rows, "params": {"n_epochs": 1.5}}, "n_epochs must be an integer"),
        ({"algorithm": "BPR", "data": rows, "params": {"use_tf": 1}}, "use_tf must be true or false"),
        ({"algorithm": "NCF", "data": rows, "params": {"hidden_units": "x"}}, "hidden_units"),
        ({"algorithm": "ALS", "data": rows, "fit": {"nope": 1}}, "nope"),
        ({"algorithm": "ALS", "data": rows, "eval": {"test_size": 2}}, "test_size"),
        ({"algorithm": "ALS", "data": rows, "eval": {"metrics": ["rmse"]}}, "rmse"),
        ({"algorithm": "ALS", "data": rows, "save": "yes"}, "save"),
        ({"algorithm": "ALS", "data": rows, "colour": 1}, "colour"),
        ({"algorithm": "BPR", "data": rows, "task": "rating"}, "BPR"),
    ]
    for spec, needle in cases:
        with pytest.raises(BadArg) as e:
            commands.train("bad", spec)
        assert needle in e.value.detail, (spec, e.value.detail)
    with pytest.raises(BadArg, match="model name"):
        commands.train("../x", {"algorithm": "ALS", "data": rows})


def test_unsupported_algorithms(model_dir):
    for alg in ("PinSageDGL", "GraphSageDGL"):
        with pytest.raises(Unsupported) as e:
            commands.train("dgl", {"algorithm": Atom(alg), "data": ("rows", [(1, 1, 1)])})
        assert e.value.kind == "unsupported" and "DGL" in e.value.detail
