import subprocess
import sys

import numpy as np
import pytest

from uro_rec import datagen, sources
from uro_rec.errors import BadArg
from uro_rec.port import Atom


def test_rows_with_and_without_time():
    df = sources.load((Atom("rows"), [(1, 10, 1.0), (2, 11, 0)]))
    assert list(df.columns) == ["user", "item", "label"]
    assert df["user"].dtype == np.int64
    df = sources.load(("rows", [("a", "x", 1, 5), ("b", "y", 1, 3)]))
    assert list(df.columns) == ["user", "item", "label", "time"]
    assert df["user"].tolist() == ["a", "b"]
    ordered = sources.training_frame(df)
    assert ordered["user"].tolist() == ["b", "a"] and list(ordered.columns) == ["user", "item", "label"]


def test_bignum_ids_stay_exact_python_ints():
    big = 2**64 + 1
    df = sources.load(("rows", [(big, 1, 1), (big + 1, 2, 1)]))
    assert df["user"].dtype == object
    assert df["user"].tolist() == [big, big + 1]
    assert all(type(u) is int for u in df["user"].tolist())


def test_atom_ids_become_plain_str():
    df = sources.load(("rows", [(Atom("alice"), Atom("book"), 1)]))
    assert type(df["user"][0]) is str and df["item"][0] == "book"


@pytest.mark.parametrize("source, needle", [
    (("rows", []), "empty"),
    (("rows", [(1, 2)]), "row 0"),
    (("rows", [(1, 2, "x")]), "label"),
    (("rows", [(1, 2, 1), (1, 2, 1, 5)]), "row 1"),
    (("rows", [(1, "a", 1), ("b", "a", 1)]), "mix"),
    (("rows", [(1.5, 2, 1)]), "user"),
    (("parquet", "x"), "unknown data source"),
    ("rows", "data source"),
    (("csv", "/nonexistent.csv"), "does not exist"),
])
def test_bad_sources(source, needle):
    with pytest.raises(BadArg) as e:
        sources.load(source, "train: data")
    assert needle in e.value.detail and e.value.detail.startswith("train: data")


def test_csv(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user,item,label,time\n1,a,1,3\n18446744073709551617,b,0,2\n\n")
    df = sources.load(("csv", str(p)))
    assert df["user"].tolist() == [1, 18446744073709551617]
    assert df["item"].tolist() == ["a", "b"]
    assert df["label"].tolist() == [1.0, 0.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i,l\n1,2,3\n")
    with pytest.raises(BadArg, match="header"):
        sources.load(("csv", str(bad)))


def test_datagen_is_seeded_and_unique(tmp_path):
    a = datagen.generate(50, 40, 500, seed=7)
    assert a == datagen.generate(50, 40, 500, seed=7)
    assert a != datagen.generate(50, 40, 500, seed=8)
    assert len(a) == 500 and len({(u, i) for u, i, _l, _t in a}) == 500
    out = tmp_path / "g.csv"
    subprocess.run([sys.executable, "-m", "uro_rec.datagen", "--users", "30", "--items", "20",
                    "--interactions", "100", "--seed", "1", "--out", str(out)],
                   check=True, cwd=str(__import__("pathlib").Path(sources.__file__).parents[1]))
    lines = out.read_text().splitlines()
    assert lines[0] == "user,item,label,time" and len(lines) == 101
    assert len(sources.load(("csv", str(out)))) == 100
