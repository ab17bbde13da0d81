#!/usr/bin/env python3
"""Summarize an Nsight Compute CSV (--csv --print-units base) per kernel: count, total and
mean time, DRAM bytes and the bandwidth they imply, occupancy and registers; then the kernels
of the last LAST launches in order (one decoding step, say)."""
import csv
import sys
from collections import OrderedDict, defaultdict


def main():
    path = sys.argv[1]
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rows = OrderedDict()
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        k = rows.setdefault(r["ID"], {"name": r["Kernel Name"].split("(")[0][:60]})
        try:
            k[r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
        except ValueError:
            pass
    ks = list(rows.values())
    agg = defaultdict(lambda: [0, 0.0, 0.0])
    for k in ks:
        a = agg[k["name"]]
        a[0] += 1
        a[1] += k.get("gpu__time_duration.sum", 0)
        a[2] += k.get("dram__bytes_read.sum", 0) + k.get("dram__bytes_write.sum", 0)
    tot = sum(a[1] for a in agg.values())
    print(f"{len(ks)} kernels, {tot / 1e3:.1f} us in all")
    print(f"{'kernel':60s} {'n':>5s} {'total us':>9s} {'mean us':>8s} {'GB/s':>7s}")
    for name, (n, t, b) in sorted(agg.items(), key=lambda x: -x[1][1]):
        print(f"{name:60s} {n:5d} {t / 1e3:9.1f} {t / n / 1e3:8.2f} {b / t if t else 0:7.0f}")
    if last:
        print(f"\nthe last {last} launches:")
        step = ks[-last:]
        for k in step:
            t = k.get("gpu__time_duration.sum", 0)
            b = k.get("dram__bytes_read.sum", 0) + k.get("dram__bytes_write.sum", 0)
            print(f"{k['name']:60s} {t / 1e3:7.2f} us {b / 1e6:8.2f} MB {b / t if t else 0:6.0f} GB/s "
                  f"occ {k.get('sm__warps_active.avg.pct_of_peak_sustained_active', 0):5.1f}% "
                  f"regs {k.get('launch__registers_per_thread', 0):.0f}")
        print(f"sum of the last {last}: {sum(k.get('gpu__time_duration.sum', 0) for k in step) / 1e3:.1f} us")


if __name__ == "__main__":
    main()
