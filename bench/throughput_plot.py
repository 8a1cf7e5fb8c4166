"""The plot of bench/throughput_bench.exs: calls/s against concurrent clients, one line per
pool size, batching off (dashed) and on (solid).

    python bench/throughput_plot.py RESULTS.csv OUT.png

RESULTS.csv: pool_size,batching,clients,calls_per_s,p50_us,p99_us (the bench writes it).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def main(src, out):
    with open(src) as f:
        rows = list(csv.DictReader(f))
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = sorted({int(r["pool_size"]) for r in rows})
    colors = dict(zip(sizes, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    for size in sizes:
        for mode, style in (("off", "--"), ("on", "-")):
            pts = sorted((int(r["clients"]), float(r["calls_per_s"]), float(r["p99_us"]))
                         for r in rows if int(r["pool_size"]) == size and r["batching"] == mode)
            if not pts:
                continue
            label = f"{size} port{'s' if size > 1 else ''}, batching {mode}"
            xs = [p[0] for p in pts]
            marker = "o" if mode == "on" else "x"
            ax.plot(xs, [p[1] for p in pts], style, marker=marker, color=colors[size],
                    label=label)
            lat.plot(xs, [p[2] / 1000 for p in pts], style, marker=marker, color=colors[size],
                     label=label)
    clients = sorted({int(r["clients"]) for r in rows})
    for a in (ax, lat):
        a.set_xscale("log", base=2)
        a.set_xticks(clients, [str(c) for c in clients])
        a.set_xlabel("concurrent clients")
        a.grid(True, alpha=0.3)
    ax.set_ylabel("recommend calls/s (N = 10, 10k-item ALS)")
    ax.set_ylim(bottom=0)
    ax.set_title("throughput")
    lat.set_ylabel("p99 latency (ms)")
    lat.set_yscale("log")
    lat.set_title("p99 latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
