"""The pandas baseline for bench/db_bench.escript: one query read into a DataFrame, timed.

    python bench/db_bench.py --url postgresql://postgres@127.0.0.1:5432/test \
        --query 'SELECT user_id, item_id, label FROM t' [--method psycopg|sqlalchemy]

    python bench/db_bench.py --url URL --export-table T [--users 20000 --n 10 --batch-size 5000]

Run it in a fresh process per measurement (the escript does): it prints one JSON object with
the row count, the seconds pandas.read_sql took (connecting is excluded, the query, fetch and
DataFrame construction are included), and ru_maxrss before and after, in KiB.

psycopg: ``pandas.read_sql(query, psycopg.connect(url))``, pandas' DBAPI2 fallback (cursor,
fetchall, DataFrame.from_records); pandas warns that only SQLAlchemy connectables are
supported, and the warning is silenced here. sqlalchemy: the same through
``create_engine("postgresql+psycopg://...")``, which is the path pandas documents.

--export-table: the export's database side without the port: random top-n lists for
``--users`` users written with the statements ``uro_rec.export.write_lists`` sends for
``method => insert`` (the first version's; DELETE the batch's users, INSERT ... SELECT FROM
unnest(...) ON CONFLICT DO UPDATE, one transaction per batch, the same array literals), from
psycopg. It separates what the database
costs from what the port adds (computing the lists, its C transaction loop).

--insert-variants: what the INSERT's parts cost: ``--users`` x ``--n`` rows in ONE statement
into a fresh scratch table shaped like uro_rec_recommendations, from unnest of text array
literals (as the port sends them) with and without the ON CONFLICT clause, and from
generate_series (no parameters at all); then the DELETE of all of them by user.
"""
import argparse
import json
import resource
import sys
import time
import warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--query")
    ap.add_argument("--method", choices=("psycopg", "sqlalchemy"), default="psycopg")
    ap.add_argument("--export-table")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--insert-variants", action="store_true")
    a = ap.parse_args()
    if a.export_table:
        return export(a)
    if a.insert_variants:
        return insert_variants(a)
    if not a.query:
        ap.error("--query or --export-table")

    import pandas as pd
    import psycopg

    if a.method == "psycopg":
        conn = psycopg.connect(a.url)
        conn.execute("SELECT 1").fetchall()
        close = conn.close
    else:
        import sqlalchemy

        url = a.url.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = sqlalchemy.create_engine(url)
        conn = engine.connect()
        conn.exec_driver_sql("SELECT 1").fetchall()
        close = conn.close
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warnings.simplefilter("ignore", UserWarning)
    t0 = time.perf_counter()
    if a.method == "psycopg":
        df = pd.read_sql(a.query, conn)
    else:
        df = pd.read_sql(sqlalchemy.text(a.query), conn)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    close()
    json.dump({"method": a.method, "rows": int(len(df)), "seconds": seconds,
               "maxrss_before_kib": before, "maxrss_kib": after,
               "dtypes": [str(t) for t in df.dtypes]}, sys.stdout)
    sys.stdout.write("\n")


def export(a):
    import os
    import random

    import psycopg

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from uro_rec.export import array_literal, number_literal

    table = a.export_table
    # write_lists' statements for method => insert, with psycopg's placeholders
    delete = f"DELETE FROM {table} WHERE model = %s AND user_id = ANY(%s::TEXT[])"
    upsert = (f"INSERT INTO {table} (model, user_id, rank, item_id, score, model_version) "
              f"SELECT %s, u, r, i, s, %s FROM unnest(%s::TEXT[], %s::INT8[], %s::TEXT[], "
              f"%s::FLOAT8[]) AS x(u, r, i, s) "
              f"ON CONFLICT (model, user_id, rank) DO UPDATE SET item_id = excluded.item_id, "
              f"score = excluded.score, model_version = excluded.model_version, "
              f"created_at = now()")
    rnd = random.Random(42)
    lists = [(u, [(rnd.randrange(5000), rnd.random()) for _ in range(a.n)])
             for u in range(1, a.users + 1)]
    conn = psycopg.connect(a.url, autocommit=True)
    model = "psycopg_export"
    rows = batches = 0
    t_lit = t_sql = 0.0
    started = time.perf_counter()
    bu, us, rs, its, ss = [], [], [], [], []

    def flush():
        nonlocal rows, batches, t_lit, t_sql
        if not bu:
            return
        t0 = time.perf_counter()
        p1 = [model, array_literal(bu)]
        p2 = [model, 1, array_literal(us), number_literal(rs), array_literal(its),
              number_literal(ss)]
        t1 = time.perf_counter()
        with conn.transaction():
            conn.execute(delete, p1, prepare=False)
            conn.execute(upsert, p2, prepare=False)
        t_sql += time.perf_counter() - t1
        t_lit += t1 - t0
        rows += len(us)
        batches += 1
        for l in (bu, us, rs, its, ss):
            l.clear()

    for u, scored in lists:
        bu.append(u)
        for r, (i, s) in enumerate(scored, 1):
            us.append(u)
            rs.append(r)
            its.append(i)
            ss.append(s)
        if len(us) >= a.batch_size:
            flush()
    flush()
    seconds = time.perf_counter() - started
    conn.execute(f"DELETE FROM {table} WHERE model = %s", [model])
    conn.close()
    json.dump({"method": "psycopg_export", "rows": rows, "batches": batches, "seconds": seconds,
               "literal_seconds": t_lit, "sql_seconds": t_sql}, sys.stdout)
    sys.stdout.write("\n")


def insert_variants(a):
    import os
    import random

    import psycopg

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from uro_rec.export import array_literal, number_literal

    table = f"uro_bench_variants_{os.getpid()}"
    rows = a.users * a.n
    rnd = random.Random(42)
    us = [str(k // a.n) for k in range(rows)]
    rs = [k % a.n + 1 for k in range(rows)]
    its = [str(rnd.randrange(5000)) for _ in range(rows)]
    ss = [rnd.random() for _ in range(rows)]
    lits = ["m", 1, array_literal(us), number_literal(rs), array_literal(its), number_literal(ss)]
    ins = (f"INSERT INTO {table} (model, user_id, rank, item_id, score, model_version) "
           f"SELECT %s, u, r, i, s, %s FROM unnest(%s::TEXT[], %s::INT8[], %s::TEXT[], "
           f"%s::FLOAT8[]) AS x(u, r, i, s)")
    conflict = (" ON CONFLICT (model, user_id, rank) DO UPDATE SET item_id = excluded.item_id, "
                "score = excluded.score, model_version = excluded.model_version, created_at = now()")
    series = (f"INSERT INTO {table} (model, user_id, rank, item_id, score, model_version) "
              f"SELECT 'm', (g / {a.n})::TEXT, g % {a.n} + 1, (g * 7 % 5000)::TEXT, 0.5, 1 "
              f"FROM generate_series(0, {rows - 1}) g")
    conn = psycopg.connect(a.url, autocommit=True)
    out = {"rows": rows}
    try:
        for key, q, params in (("unnest_on_conflict", ins + conflict, lits),
                               ("unnest_plain", ins, lits),
                               ("generate_series", series, None)):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (model TEXT NOT NULL, user_id TEXT NOT NULL, "
                         f"rank INT8 NOT NULL, item_id TEXT NOT NULL, score FLOAT8 NOT NULL, "
                         f"model_version INT8 NOT NULL, created_at TIMESTAMPTZ NOT NULL "
                         f"DEFAULT now(), PRIMARY KEY (model, user_id, rank))")
            t0 = time.perf_counter()
            conn.execute(q, params, prepare=False)
            out[key] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute(f"DELETE FROM {table} WHERE model = 'm' AND user_id = ANY(%s::TEXT[])",
                     [array_literal([str(u) for u in range(a.users)])], prepare=False)
        out["delete"] = time.perf_counter() - t0
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
