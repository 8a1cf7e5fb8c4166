"""compare: the candidate and a saved version scored on the same held-out rows, each exactly as
evaluate scores it; observe_source: a source's rows observed, never stored."""
import pytest

from conftest import train_capturing
from uro_rec import commands, registry
from uro_rec.datagen import generate
from uro_rec.errors import BadArg


@pytest.fixture(scope="module")
def two_versions(model_dir):
    """Version 1 on the first users and items; version 2 (loaded) on more of both."""
    rows = generate(160, 100, 4000, seed=5)
    old = [r for r in rows if r[0] <= 100 and r[1] <= 70]
    new, held = rows[:3400], rows[3400:]
    spec = {"algorithm": "ALS", "params": {"embed_size": 8, "n_epochs": 4, "seed": 1}}
    train_capturing("ho", dict(spec, data=("rows", old)))
    train_capturing("ho", dict(spec, data=("rows", new)))
    return registry.get("ho"), held


def test_both_versions_on_the_rows_both_know(two_versions):
    candidate, held = two_versions
    current = registry.load("ho", 1)
    both = [r[:3] for r in held if r[0] in current.user_index and r[1] in current.item_index
            and r[0] in candidate.user_index and r[1] in candidate.item_index]
    assert 0 < len(both) < len(held)  # version 1 does not know every held-out user or item
    opts = {"metrics": ["ndcg", "precision", "roc_auc"], "k": 10, "from": "disk"}
    report = commands.compare("ho", 1, ("rows", held), opts)
    assert report["rows"] == len(both)
    assert report["users"] == len({r[0] for r in both})
    # Each side is exactly what evaluate answers on those rows for that version.
    assert report["candidate"] == commands.evaluate("ho", ("rows", both), opts_of(opts))
    registry.put(current)  # version 1 under the name, to evaluate it the same way
    try:
        assert report["current"] == commands.evaluate("ho", ("rows", both), opts_of(opts))
    finally:
        registry.put(registry.load("ho", 2))
    assert registry.get("ho").version == 2


def opts_of(opts):
    return {k: v for k, v in opts.items() if k != "from"}


def test_no_common_row_compares_with_the_baseline_alone(two_versions):
    candidate, _held = two_versions
    newcomer = next(u for u in candidate.user_ids if u > 100)
    item = next(i for i in candidate.item_ids if i > 70)
    report = commands.compare("ho", 1, ("rows", [(newcomer, item, 1.0)]), {"from": "disk"})
    assert report["current"] is None and report["rows"] == 1
    with pytest.raises(BadArg, match="no held-out row"):
        commands.compare("ho", None, ("rows", [(10**6, 10**6, 1.0)]))


def test_observe_source_filters_and_does_not_store(two_versions):
    candidate, _ = two_versions
    user = candidate.user_ids[0]
    top = commands.recommend("ho", user, 3)[0]
    reply = commands.observe_source("ho", ("rows", [(user, top, 1.0)]))
    assert reply["stored"] == 0 and reply["applied"] == 1
    assert top not in commands.recommend("ho", user, 10)
