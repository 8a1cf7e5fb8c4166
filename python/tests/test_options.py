import pytest

from uro_rec.errors import BadArg
from uro_rec.options import check_id, model_name, normalize_opts, plain
from uro_rec.port import Atom


def test_map_and_proplist_normalise_to_the_same_dict():
    as_map = normalize_opts({Atom("scores"): True, "exclude": [1, 2]})
    as_list = normalize_opts([Atom("scores"), (Atom("exclude"), [1, 2])])
    assert as_map == as_list == {"scores": True, "exclude": [1, 2]}
    assert all(type(k) is str for k in as_list)


def test_empty_and_nil_options():
    assert normalize_opts(None) == {}
    assert normalize_opts([]) == {}
    assert normalize_opts({}) == {}


def test_later_proplist_entries_win():
    assert normalize_opts([("k", 1), ("k", 2)]) == {"k": 2}


@pytest.mark.parametrize("bad", [42, "scores", [("a", 1, 2)], [3], {1: 2}, [(b"k", 1)]])
def test_bad_options_are_badarg(bad):
    with pytest.raises(BadArg) as e:
        normalize_opts(bad, "recommend: opts")
    assert "recommend: opts" in e.value.detail


def test_model_names():
    assert model_name(Atom("m1"), "x") == "m1" and type(model_name(Atom("m1"), "x")) is str
    for bad in ["", "../etc", ".hidden", "a/b", 12, b"m", None, "x" * 200]:
        with pytest.raises(BadArg):
            model_name(bad, "train")


def test_ids():
    assert check_id(2**70, "w", "user") == 2**70
    assert type(check_id(Atom("bob"), "w", "user")) is str
    assert check_id(b"\xff", "w", "user") == "\udcff"  # any bytes: uro_rec.ids (test_ids.py)
    for bad in [True, None, 1.5, (1,)]:
        with pytest.raises(BadArg) as e:
            check_id(bad, "recommend", "user")
        assert e.value.kind == "badarg" and "user" in e.value.detail


def test_plain_turns_atoms_into_str_recursively():
    v = plain({Atom("a"): [Atom("b"), (Atom("c"), 1)]})
    assert v == {"a": ["b", ("c", 1)]}
    assert type(list(v)[0]) is str and type(v["a"][0]) is str and type(v["a"][1][0]) is str
