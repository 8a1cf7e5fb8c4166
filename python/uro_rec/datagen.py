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
    n_interactions = min(int(n_interactions), n_users * n_items // 2 or 1)
    rng = np.random.default_rng(seed)
    tastes, item_taste, item_pop, user_tastes = _world(n_users, n_items, rng)
    by_taste = [np.flatnonzero(item_taste == t) for t in range(tastes)]
    taste_cdf = []
    for members in by_taste:
        w = item_pop[members]
        taste_cdf.append(np.cumsum(w) / w.sum() if len(members) else None)
    global_cdf = np.cumsum(item_pop) / item_pop.sum()
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


def _world(n_users, n_items, rng):
    """Tastes, each item's taste and popularity, each user's tastes (the draws' order is
    part of every seed's data: keep it)."""
    for v, f in ((n_users, "n_users"), (n_items, "n_items")):
        if int(v) <= 0:
            raise ValueError(f"{f} must be positive")
    tastes = min(N_TASTES, n_items)
    item_taste = rng.integers(0, tastes, n_items)
    item_pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(item_pop)
    user_tastes = [rng.choice(tastes, size=rng.integers(1, 4), replace=False)
                   for _ in range(n_users)]
    return tastes, item_taste, item_pop, user_tastes


def generate_features(n_users, n_items, seed=1):
    """Features of the users and items of ``generate(n_users, n_items, _, seed)``, as feature
    sources' rows ``[(id, {column: value})]``, carrying the same tastes the interactions
    follow, so a feature model has something to learn from them:

    - users: ``country`` (sparse text, one of 5), ``favourite`` (sparse: one of the user's
      tastes), ``friends`` (dense, more for more tastes), ``verified`` (sparse boolean);
    - items: ``kind`` (sparse: world, avatar or prop), ``uploader`` (sparse integer: mostly
      the taste's own uploaders), ``public`` (sparse boolean), ``tags`` (multi-sparse: the
      taste's name and zero to two other tags), ``age_days`` (dense).
    """
    _tastes, item_taste, item_pop, user_tastes = _world(n_users, n_items,
                                                        np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 7])
    countries = ["de", "jp", "us", "br", "fr"]
    users = [(u + 1, {"country": countries[int(rng.integers(0, 5))],
                      "favourite": f"t{int(ts[0])}",
                      "friends": float(len(ts) * 10 + rng.integers(0, 10)),
                      "verified": bool(rng.random() < 0.3)})
             for u, ts in enumerate(user_tastes)]
    items = []
    for i, t in enumerate(item_taste.tolist()):
        extra = [f"x{int(x)}" for x in rng.choice(20, size=int(rng.integers(0, 3)), replace=False)]
        items.append((i + 1, {
            "kind": ("world", "avatar", "prop")[i % 3],
            "uploader": int(t * 3 + rng.integers(0, 3)) if rng.random() < 0.8 else int(rng.integers(0, 100)),
            "public": bool(rng.random() < 0.9),
            "tags": [f"t{t}"] + extra,
            "age_days": float(round(1.0 / item_pop[i] ** 0.5, 3)),
        }))
    return users, items


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
