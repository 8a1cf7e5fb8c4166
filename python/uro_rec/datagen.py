"""Seeded synthetic interactions that recommenders can learn something from.

Items belong to one of a few "tastes" (topics) and have power-law popularity;
each user likes one to three tastes. An interaction picks, with probability
0.85, one of the user's tastes and an item of that taste (by popularity), else
any item by popularity. User activity is power-law too. Pairs are unique.
Labels are 1 (implicit feedback); times increase with the row number.

CLI::

    python -m uro_rec.datagen --users 3000 --items 2000 --interactions 60000 \
        --seed 1 --out file.csv
"""
import argparse
import csv
import sys

import numpy as np

N_TASTES = 12


def generate(n_users, n_items, n_interactions, seed=1):
    """-> list of ``(user, item, label, time)`` with int ids starting at 1."""
    for v, f in ((n_users, "n_users"), (n_items, "n_items")):
        if int(v) <= 0:
            raise ValueError(f"{f} must be positive")
    n_interactions = min(int(n_interactions), n_users * n_items // 2 or 1)
    rng = np.random.default_rng(seed)
    tastes = min(N_TASTES, n_items)
    item_taste = rng.integers(0, tastes, n_items)
    item_pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(item_pop)
    by_taste = [np.flatnonzero(item_taste == t) for t in range(tastes)]
    taste_cdf = []
    for members in by_taste:
        w = item_pop[members]
        taste_cdf.append(np.cumsum(w) / w.sum() if len(members) else None)
    global_cdf = np.cumsum(item_pop) / item_pop.sum()
    user_tastes = [rng.choice(tastes, size=rng.integers(1, 4), replace=False)
                   for _ in range(n_users)]
    activity = 1.0 / np.arange(1, n_users + 1) ** 0.6
    rng.shuffle(activity)
    activity /= activity.sum()

    seen = set()
    rows = []
    while len(rows) < n_interactions:
        batch = max(1024, int((n_interactions - len(rows)) * 1.3))
        users = rng.choice(n_users, size=batch, p=activity)
        focused = rng.random(batch) < 0.85
        r = rng.random(batch)
        for u, foc, x in zip(users.tolist(), focused.tolist(), r.tolist()):
            if foc:
                t = user_tastes[u][int(x * 1e6) % len(user_tastes[u])]
                cdf = taste_cdf[t]
                if cdf is None:
                    continue
                item = by_taste[t][min(int(np.searchsorted(cdf, rng.random())), len(cdf) - 1)]
            else:
                item = min(int(np.searchsorted(global_cdf, x)), n_items - 1)
            key = (u, int(item))
            if key in seen:
                continue
            seen.add(key)
            rows.append(key)
            if len(rows) == n_interactions:
                break
    base = 1_600_000_000
    return [(u + 1, i + 1, 1, base + 60 * n) for n, (u, i) in enumerate(rows)]


def write_csv(rows, out):
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["user", "item", "label", "time"])
    w.writerows(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--interactions", type=int, default=60000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="-", help="CSV file ('-' for stdout)")
    a = p.parse_args(argv)
    rows = generate(a.users, a.items, a.interactions, a.seed)
    if a.out == "-":
        write_csv(rows, sys.stdout)
    else:
        with open(a.out, "w", newline="") as f:
            write_csv(rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
