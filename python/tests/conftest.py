"""Shared fixtures. Real libreco, no mocks; models are tiny and trained once per
session (TensorFlow and torch imports dominate the run time)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
# c_src/rank.c as the extension module _uro_rank (make build, make test-python build it)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_build", "py"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from uro_rec import commands, port, registry  # noqa: E402
from uro_rec.datagen import generate  # noqa: E402
from uro_rec.port import Atom  # noqa: E402
from uro_rec.streams import PortStream  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    commands.configure(str(d))
    return str(d)


@pytest.fixture(scope="session")
def rows():
    """(user, item, label, time) with int ids 1..120 / 1..80."""
    return generate(120, 80, 2000, seed=3)


def consumed_of(rows, user):
    return {r[1] for r in rows if r[0] == user}


def train_capturing(name, spec):
    """Train with stdout/stderr as PortStreams (as in the port); return
    (reply, events sent during training)."""
    out, err = sys.stdout, sys.stderr
    start = len(port.EVENTS)
    sys.stdout, sys.stderr = PortStream("info"), PortStream("warning")
    try:
        reply = commands.train(name, spec)
    finally:
        sys.stdout, sys.stderr = out, err
    return reply, port.EVENTS[start:]


def str_rows(rows):
    return [(f"u{u}", f"i{i}", lab, t) for u, i, lab, t in rows]


BIG = 2**64 + 7  # beyond int64 and uint64


def big_rows(rows):
    return [(BIG + u, BIG * 3 + i, lab) for u, i, lab, _t in rows]


@pytest.fixture(scope="session")
def als(model_dir, rows):
    """ALS on string ids (cython, no TF graph)."""
    reply, _ = train_capturing("als_str", {
        "algorithm": "ALS",
        "data": (Atom("rows"), str_rows(rows)),
        "params": [("embed_size", 8), ("n_epochs", 3)],
        "eval": {"test_size": 0.2, "k": 5},
    })
    return reply


@pytest.fixture(scope="session")
def bpr(model_dir, rows):
    """BPR with the TensorFlow backend, int ids; events captured."""
    reply, events = train_capturing("bpr_tf", {
        Atom("algorithm"): Atom("BPR"),
        Atom("data"): ("rows", rows),
        Atom("params"): {Atom("embed_size"): 8, Atom("n_epochs"): 2, Atom("batch_size"): 512},
    })
    return reply, events


@pytest.fixture(scope="session")
def lightgcn(model_dir, rows):
    """LightGCN (torch) on ids beyond 64 bits."""
    reply, _ = train_capturing("lgcn_big", {
        "algorithm": "LightGCN",
        "data": ("rows", big_rows(rows)),
        "params": {"embed_size": 8, "n_epochs": 1, "batch_size": 512},
    })
    return reply


@pytest.fixture(scope="session")
def itemcf(model_dir, rows):
    reply, _ = train_capturing("itemcf_int", {
        "algorithm": "ItemCF",
        "data": ("rows", rows),
        "params": {"k_sim": 10},
    })
    return reply


@pytest.fixture(scope="session")
def all_models(als, bpr, lightgcn, itemcf):
    return {
        "als_str": ("str", lambda u: f"u{u}", lambda i: f"i{i}"),
        "bpr_tf": ("int", lambda u: u, lambda i: i),
        "lgcn_big": ("int", lambda u: BIG + u, lambda i: BIG * 3 + i),
        "itemcf_int": ("int", lambda u: u, lambda i: i),
    }


def in_fresh_process(module, *args, timeout=1800):
    """``module.parity_report(*args)`` run in a fresh Python process, its JSON result.
    Parity with LibRecommender is measured there: after other work in a process,
    TensorFlow's numbers can move in the last float bits (see test_features)."""
    import json
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    code = ("import sys, json, importlib; sys.path[:0] = [sys.argv[1], sys.argv[2]];"
            "T = importlib.import_module(sys.argv[3]);"
            "sys.__stdout__.write('RESULT' + json.dumps(T.parity_report(*sys.argv[4:])))")
    out = subprocess.run([sys.executable, "-c", code, here, os.path.dirname(here), module,
                          *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert "RESULT" in out.stdout, out.stderr[-4000:]
    return json.loads(out.stdout.split("RESULT", 1)[1])


__all__ = ["commands", "registry", "Atom", "consumed_of", "BIG", "in_fresh_process"]
