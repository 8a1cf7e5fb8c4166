"""Recommend latency against catalogue size: the port, the C floor and LibRecommender, with
list equality against an exact float64 reference, the memory of a pool, and load time.

    python bench/catalogue_bench.py PORT_EXE FLOOR_EXE [--sizes 10000,100000,1000000]
        [--dims 32,64] [--plot bench/catalogue.png]

(``make bench-catalogue``; bench/README.md says what each figure means.) Per catalogue size
and width, one ALS-shaped model: random float32 factors (N(0, 0.1), 10,000 users, each having
consumed 20 random items plus every item whose id is their own modulo 10,000, so every item
was seen), written as a saved version with uro_rec.snapshot, no training. Then, in three
interleaved rounds on one CPU (taskset): the port's ``recommend`` round trip from a BEAM
client (bench/catalogue_client.escript), the floor (bench/rank_floor.c: float32 dot products
and a bounded heap, -O3 -march=native, on the version's own items32.npy), and
LibRecommender's ``ALS.recommend_user`` on a real libreco ALS model (DatasetPure over the same
interactions, ``user_embeds_np``/``item_embeds_np`` set to the same matrices), in this
process, with one BLAS thread (one CPU each). Prints each target with its ratio and PASS/FAIL; exit status 1 when one fails.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# One BLAS thread: every implementation gets one CPU (the port's kernel uses one), and
# LibRecommender's numpy product would otherwise fight the port for the other core.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "_build", "py"))

from uro_rec import signing, snapshot  # noqa: E402
from uro_rec.entry import Entry  # noqa: E402

N_USERS = 10_000
CONSUMED = 20
SAMPLE = 100            # users whose lists are checked against the reference
ROUNDS = 3              # port, floor, LibRecommender interleaved this many times
CPU = 0                 # everything timed runs on this CPU
CALLS = {10_000: 900, 100_000: 240, 1_000_000: 60}  # per implementation, over all rounds
TARGET_FLOOR = {10_000: 2.0}  # port p50 / floor p50 at most; 1.5 elsewhere
TARGET_LIBRECO = 1.5    # LibRecommender p50 / port p50 at least
TARGET_PSS = 1.3        # 4 ports / 1 port at 1M x 64
TARGET_LOAD_MS = 100


def log(*a):
    print(*a, flush=True)


# ---- the model -----------------------------------------------------------------------------

def consumed_sets(rng, n_items):
    extra = [np.arange(u, n_items, N_USERS) for u in range(N_USERS)]
    return [np.union1d(rng.integers(0, n_items, CONSUMED), e).astype(np.int64) for e in extra]


def build(model_dir, name, n_items, d, seed):
    """Writes version 1 of ``name``; returns (users, items, consumed)."""
    rng = np.random.default_rng(seed)
    users = (rng.standard_normal((N_USERS + 1, d)) * 0.1).astype(np.float32)
    items = (rng.standard_normal((n_items + 1, d)) * 0.1).astype(np.float32)
    consumed = consumed_sets(np.random.default_rng(n_items), n_items)
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in consumed])]).astype(np.int64)
    snap = {"user_vecs": users, "item_vecs": items[:n_items], "item_oov": items[n_items],
            "consumed_indptr": indptr, "consumed_indices": np.concatenate(consumed),
            "bounds": np.empty(0), "embed_width": d, "n_interactions": int(indptr[-1])}
    entry = Entry.from_snapshot(name, "ALS", "ranking", list(range(N_USERS)),
                                list(range(n_items)), snap, loader=None)
    base = os.path.join(model_dir, name)
    tmp = os.path.join(base, ".building")
    os.makedirs(tmp)
    held = snapshot.save(entry.snapshot_arrays(), tmp, entry.user_ids, entry.item_ids)
    meta = {"format": 1, "algorithm": "ALS", "task": "ranking", "libreco": "1.5.2",
            "version": 1, "metrics": {}, "features": None}
    assert held == ["user_ids", "item_ids"]
    with open(os.path.join(tmp, "uro_meta.json"), "w") as f:
        json.dump(meta, f)
    os.rename(tmp, os.path.join(base, "1"))
    return users, items, consumed


def reference(items, users, consumed, sample, n=10):
    """Exact float64 ranking of every item (products summed in dimension order, ties to the
    lower index), consumed items left out: the lists the port must give."""
    cols = np.ascontiguousarray(items[:-1].T)  # d x n float32: one contiguous column a pass
    out = {}
    for start in range(0, len(sample), 10):
        block = sample[start:start + 10]
        u = users[block].astype(np.float64)
        acc = np.zeros((len(block), cols.shape[1]))
        for i in range(cols.shape[0]):
            acc += u[:, i:i + 1] * cols[i].astype(np.float64)[None, :]
        for row, user in zip(acc, block):
            row[consumed[user]] = -np.inf
            out[user] = np.lexsort((np.arange(row.size), -row))[:n].tolist()
    return out


# ---- LibRecommender ------------------------------------------------------------------------

def libreco_model(n_items, users, items, consumed):
    import pandas as pd
    from libreco.algorithms import ALS
    from libreco.data import DatasetPure

    u = np.repeat(np.arange(N_USERS), [len(c) for c in consumed])
    df = pd.DataFrame({"user": u, "item": np.concatenate(consumed), "label": 1.0})
    _train, info = DatasetPure.build_trainset(df)
    assert info.n_items == n_items and info.n_users == N_USERS
    # inner ids are the sorted ids: 0..n-1 map to themselves, so these are the same rows
    assert (info.item_unique_vals == np.arange(n_items)).all()
    model = ALS("ranking", info, embed_size=items.shape[1], reg=0.01)
    model.user_embeds_np, model.item_embeds_np = users, items
    return model


def libreco_times(model, count, rng):
    times = []
    for _ in range(count):
        user = int(rng.integers(0, N_USERS))
        t = time.perf_counter()
        model.recommend_user(user, 10)
        times.append((time.perf_counter() - t) * 1e6)
    return times


# ---- the port (through the BEAM client) and the floor --------------------------------------

class Client:
    def __init__(self, port_exe, model_dir, env=None):
        self.p = subprocess.Popen(
            ["taskset", "-c", str(CPU), "escript",
             os.path.join(ROOT, "bench", "catalogue_client.escript"), port_exe, model_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.os_pid = int(self.expect("READY")[0])

    def expect(self, tag):
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("the client stopped")
            parts = line.split()
            if parts and parts[0] == "ERROR":
                raise RuntimeError(line)
            if parts and parts[0] == tag:
                return parts[1:]

    def ask(self, line, tag):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.expect(tag)

    def lines_until_end(self, line, tag):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            parts = self.p.stdout.readline().split()
            if parts[0] == "END":
                return out
            if parts[0] == tag:
                out.append(parts[1:])

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(timeout=60)


def floor_times(floor_exe, items_npy, users, count, rng, tmpdir):
    path = os.path.join(tmpdir, "floor_users.f32")
    users[rng.integers(0, N_USERS, count)].astype(np.float32).tofile(path)
    out = subprocess.run(["taskset", "-c", str(CPU), floor_exe, items_npy, path, "10", "1"],
                         capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.split()]


def cpu_ns(pid):
    """Time the process has run on a CPU (ns; /proc/PID/schedstat): a call's own cost,
    without the waits for a CPU that a loaded machine adds to its round trip."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def placement(pid):
    got = subprocess.run(["taskset", "-pc", str(pid)], capture_output=True, text=True).stdout
    return got.strip().split(":")[-1].strip()


# ---- the run -------------------------------------------------------------------------------

def p50(xs):
    return float(np.percentile(xs, 50))


def run_size(args, client, model_dir, tmpdir, n_items, d, results):
    name = f"cat_{n_items}_{d}"
    log(f"\n== {n_items:,} items x {d}: building the version ...")
    users, items, consumed = build(model_dir, name, n_items, d, seed=n_items + d)
    # the first load right after the files were written (their write-back may still be
    # running), then again as a further port of a pool would: the target is on the second
    first_load_us = int(client.ask(f"load {name}", "LOAD")[0])
    client.ask(f"unload {name}", "UNLOADED")
    load_us = int(client.ask(f"load {name}", "LOAD")[0])
    rng = np.random.default_rng(1)
    sample = sorted(rng.choice(N_USERS, SAMPLE, replace=False).tolist())
    got = {int(p[0]): [int(x) for x in p[1:]]
           for p in client.lines_until_end(f"lists {name} {','.join(map(str, sample))}", "LIST")}
    want = reference(items, users, consumed, sample)
    equal = sum(got[u] == want[u] for u in sample)
    log(f"lists equal to the exact float64 reference: {equal}/{len(sample)}; "
        f"load {load_us / 1000:.1f} ms (the first, just after writing: "
        f"{first_load_us / 1000:.1f} ms)")
    log("building the LibRecommender model ...")
    model = libreco_model(n_items, users, items, consumed)
    items_npy = os.path.join(model_dir, name, "1", "serving", "items32.npy")
    calls = max(ROUNDS, CALLS.get(n_items, 60) // ROUNDS)
    port, floor, libreco, port_cpu = [], [], [], []
    ping = [int(t) for t in client.ask("ping 300", "TIMES")]
    os.sched_setaffinity(0, {CPU})
    try:
        for _ in range(ROUNDS):
            before = cpu_ns(client.os_pid)
            port += [int(t) for t in client.ask(f"rec {name} {N_USERS} {calls}", "TIMES")]
            port_cpu.append((cpu_ns(client.os_pid) - before) / 1e3 / calls)
            floor += floor_times(args.floor, items_npy, users, calls, rng, tmpdir)
            libreco += libreco_times(model, calls, rng)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
    del model
    r = {"items": n_items, "d": d, "port": p50(port), "floor": p50(floor),
         "libreco": p50(libreco), "equal": equal, "sample": len(sample), "load_ms": load_us / 1e3,
         "first_load_ms": first_load_us / 1e3,
         "port_p99": float(np.percentile(port, 99)), "ping": p50(ping),
         "port_cpu": float(np.mean(port_cpu))}
    log(f"p50 us: port {r['port']:.0f} (p99 {r['port_p99']:.0f}; a ping's round trip "
        f"{r['ping']:.0f}; the port's own CPU time a call {r['port_cpu']:.0f}), floor {r['floor']:.0f}, LibRecommender {r['libreco']:.0f}  "
        f"({len(port)} calls each)")
    if n_items == max(args.sizes) and d == max(args.dims):
        r.update(pss(client, name))
        r["verify_s"] = verify_time(os.path.join(model_dir, name, "1"), name)
    results.append(r)
    client.ask(f"unload {name}", "UNLOADED")  # its maps go with it


def pss(client, name):
    one = sum(int(p[1]) for p in client.lines_until_end(f"pss {name} 1 {N_USERS}", "PSS"))
    four = client.lines_until_end(f"pss {name} 4 {N_USERS}", "PSS")
    total = sum(int(p[1]) for p in four)
    log(f"PSS: one port {one / 1024:.0f} MiB; four ports {total / 1024:.0f} MiB "
        f"({', '.join(f'{int(p[1]) / 1024:.0f}' for p in four)})")
    return {"pss_one_mib": one / 1024, "pss_four_mib": total / 1024}


def verify_time(directory, name):
    """What verifying a signed version of this size costs (uro_rec.signing hashes every
    file): signed with a throwaway key, checked once."""
    os.environ["URO_REC_MODEL_KEY"] = os.urandom(32).hex()
    try:
        signing.sign(directory, name, 1)
        t = time.perf_counter()
        signing.check(directory, "bench", name, 1)
        took = time.perf_counter() - t
    finally:
        del os.environ["URO_REC_MODEL_KEY"]
        os.remove(os.path.join(directory, signing.SIG_FILE))
    size = sum(os.path.getsize(f) for _, f in signing.files_of(directory))
    log(f"signature check of the version ({size / 2**20:.0f} MiB of files): {took:.2f} s")
    return took


def targets(results):
    ok = True
    log("\ntargets")

    def check(what, value, passed):
        nonlocal ok
        ok &= passed
        log(f"  {'PASS' if passed else 'FAIL'}  {what}: {value}")

    for r in results:
        size = f"{r['items']:,} x {r['d']}"
        limit = TARGET_FLOOR.get(r["items"], 1.5)
        ratio = r["port"] / r["floor"]
        check(f"{size}: port p50 <= {limit}x the C floor", f"{ratio:.2f}x", ratio <= limit)
        speed = r["libreco"] / r["port"]
        check(f"{size}: port >= {TARGET_LIBRECO}x faster than LibRecommender",
              f"{speed:.2f}x", speed >= TARGET_LIBRECO)
        check(f"{size}: lists equal the exact float64 reference", f"{r['equal']}/{r['sample']}",
              r["equal"] == r["sample"])
        check(f"{size}: load <= {TARGET_LOAD_MS} ms", f"{r['load_ms']:.1f} ms",
              r["load_ms"] <= TARGET_LOAD_MS)
        if "pss_one_mib" in r:
            ratio = r["pss_four_mib"] / r["pss_one_mib"]
            check(f"{size}: PSS of a pool of 4 <= {TARGET_PSS}x one port", f"{ratio:.2f}x",
                  ratio <= TARGET_PSS)
    return ok


def table(results):
    log("\n| items x dims | port p50 us | ping p50 us | port CPU a call us | C floor p50 us | "
        "LibRecommender p50 us | port / floor | LibRecommender / port | lists equal | "
        "load ms (first) |")
    log("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        log(f"| {r['items']:,} x {r['d']} | {r['port']:,.0f} | {r['ping']:,.0f} | "
            f"{r['port_cpu']:,.0f} | {r['floor']:,.0f} | "
            f"{r['libreco']:,.0f} | {r['port'] / r['floor']:.2f}x | "
            f"{r['libreco'] / r['port']:.2f}x | {r['equal']}/{r['sample']} | "
            f"{r['load_ms']:.1f} ({r['first_load_ms']:.0f}) |")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"port": ("uro_recommender (round trip)", "tab:blue"),
              "libreco": ("LibRecommender recommend_user", "tab:orange"),
              "floor": ("C floor (float32, -march=native)", "tab:gray")}
    for d, dash in zip(sorted({r["d"] for r in results}), ("-", "--", ":")):
        rows = sorted((r for r in results if r["d"] == d), key=lambda r: r["items"])
        for key, (label, color) in styles.items():
            ax.plot([r["items"] for r in rows], [r[key] for r in rows], dash, color=color,
                    marker="o", label=f"{label}, d={d}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items in the catalogue")
    ax.set_ylabel("recommend p50 (microseconds, top 10)")
    ax.set_title("Recommend latency against catalogue size (ALS-shaped factors)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"\nplot: {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("floor")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dims", default="32,64")
    ap.add_argument("--plot", default=os.path.join(ROOT, "bench", "catalogue.png"))
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.dims = [int(x) for x in args.dims.split(",")]
    started = time.time()
    log(f"machine: {os.cpu_count()} CPUs; {subprocess.getoutput('uptime').strip()}")
    tmpdir = tempfile.mkdtemp(prefix="uro_catalogue_")
    model_dir = os.path.join(tmpdir, "models")
    os.makedirs(model_dir)
    env = {k: v for k, v in os.environ.items()
           if k not in ("URO_REC_MODEL_KEY", "URO_REC_MODEL_KEY_FILE")}
    client = Client(os.path.abspath(args.port), model_dir, env=env)
    log(f"placement: port (pid {client.os_pid}) on CPU {placement(client.os_pid)}, its BEAM "
        f"client on CPU {placement(client.p.pid)}, the floor and LibRecommender on CPU {CPU}")
    results = []
    try:
        for n_items in args.sizes:
            for d in args.dims:
                run_size(args, client, model_dir, tmpdir, n_items, d, results)
                shutil.rmtree(os.path.join(model_dir, f"cat_{n_items}_{d}"))
    finally:
        client.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    table(results)
    for r in results:
        if "pss_one_mib" in r:
            log(f"\nPSS at {r['items']:,} x {r['d']}: one port {r['pss_one_mib']:.0f} MiB, "
                f"a pool of four {r['pss_four_mib']:.0f} MiB; signature check "
                f"{r['verify_s']:.2f} s")
    plot(results, args.plot)
    ok = targets(results)
    log(f"\nload at the end: {subprocess.getoutput('uptime').strip()}; "
        f"{time.time() - started:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
