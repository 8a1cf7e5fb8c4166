"""Incremental retraining against full training: time and metrics, as ratios.

    python bench/retrain_bench.py [--users 3000 --items 2000 --interactions 60000 --rounds 3]
                                  [--algorithms ALS,SVD,DeepFM,RsItemCF] [--out FILE.md]

Run with the port's virtualenv python and ``python/`` on PYTHONPATH (``make bench-retrain``).
It drives uro_rec's commands in-process, the functions the port calls.

Data: ``uro_rec.datagen`` (time-ordered). The last 5 % of the rows are the held-out set every
model is scored on; the rest is the training data, whose last 10 % are "the new data".

Per algorithm and round:

- full: ``train`` from scratch on all the training data (old + new);
- retrain: ``train`` on the old 90 % (not timed: that is the version already serving), then
  ``{train, Name, #{from_version => latest, data => New}}`` on the new 10 % (timed);

the two timed calls interleaved, which one goes first alternating by round, both with the same
params (so the same number of epochs, over 100 % of the data for full, 10 % for retrain), both
saving the version they make (with its training state), as a serving deployment would.
Both models are scored with ``evaluate`` on the held-out set (precision, recall, ndcg at 10,
roc_auc). Reported: the median over rounds of time(retrain) / time(full) and of
metric(retrain) / metric(full), with the medians' absolute values beside them, and the
machine's load average at the start and the end.
"""
import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from uro_rec import commands  # noqa: E402
from uro_rec.datagen import generate  # noqa: E402

PARAMS = {
    "ALS": {"n_epochs": 10, "embed_size": 32, "reg": 1.0},
    "SVD": {"n_epochs": 5, "embed_size": 32},
    "DeepFM": {"n_epochs": 3, "embed_size": 16},
    "RsItemCF": {},
}
METRICS = ["precision", "recall", "ndcg", "roc_auc"]


def timed_train(name, spec):
    started = time.perf_counter()
    reply = commands.train(name, spec)
    return time.perf_counter() - started, reply


def one_round(alg, old, new, held, first):
    params = PARAMS[alg]
    full = lambda: timed_train(f"full_{alg}", {"algorithm": alg, "data": ("rows", old + new),
                                               "params": params})  # saved, as the retrain is

    def incremental():
        commands.train(f"inc_{alg}", {"algorithm": alg, "data": ("rows", old), "params": params})
        return timed_train(f"inc_{alg}", {"from_version": "latest", "data": ("rows", new)})

    runs = {}
    for which in ((("full", full), ("retrain", incremental)) if first == "full"
                  else (("retrain", incremental), ("full", full))):
        seconds, _ = which[1]()
        name = f"full_{alg}" if which[0] == "full" else f"inc_{alg}"
        scores = commands.evaluate(name, ("rows", held), {"metrics": METRICS, "k": 10})
        runs[which[0]] = (seconds, scores["metrics"])
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--interactions", type=int, default=60000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--algorithms", default=",".join(PARAMS))
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    commands.configure(tempfile.mkdtemp(prefix="uro_retrain_bench_"))
    rows = generate(a.users, a.items, a.interactions, seed=1)
    cut = int(len(rows) * 0.95)
    train, held = rows[:cut], [r[:3] for r in rows[cut:]]
    split = int(len(train) * 0.9)
    old, new = train[:split], train[split:]
    with contextlib.redirect_stdout(io.StringIO()):  # imports (TensorFlow, torch) not timed
        commands.train("warm_up", {"algorithm": "ALS", "data": ("rows", old[:500]), "save": False})
    load0 = os.getloadavg()
    lines = [f"data: {a.users} users x {a.items} items, {len(old)} old + {len(new)} new rows, "
             f"{len(held)} held out; {a.rounds} rounds, order alternating",
             "",
             "| algorithm | time retrain / full | retrain s | full s | "
             + " | ".join(f"{m} retrain / full" for m in METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(METRICS)]
    for alg in a.algorithms.split(","):
        with contextlib.redirect_stdout(io.StringIO()):  # LibRecommender's progress prints
            rounds = [one_round(alg, old, new, held, "full" if k % 2 == 0 else "retrain")
                      for k in range(a.rounds)]
        t_ret = statistics.median(r["retrain"][0] for r in rounds)
        t_full = statistics.median(r["full"][0] for r in rounds)
        ratio = statistics.median(r["retrain"][0] / r["full"][0] for r in rounds)
        cells = []
        for m in METRICS:
            rr = [r["retrain"][1][m] / r["full"][1][m] for r in rounds if r["full"][1][m]]
            cells.append(f"{statistics.median(rr):.2f} ({statistics.median(r['retrain'][1][m] for r in rounds):.3f}"
                         f" vs {statistics.median(r['full'][1][m] for r in rounds):.3f})" if rr else "-")
        lines.append(f"| {alg} | {ratio:.2f} | {t_ret:.2f} | {t_full:.2f} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr)
    load1 = os.getloadavg()
    lines += ["", f"load average (1, 5, 15 min): {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the "
              f"start, {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at the end; {os.cpu_count()} cores"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
