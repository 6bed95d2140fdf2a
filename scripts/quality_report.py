#!/usr/bin/env python3
"""Markdown table of scripts/quality.sh's results (to stdout).

Usage: quality_report.py RUN_DIR. Reads models/<name>.export.json, results/<config>-bench-r<round>.json (speed
depends on the configuration only: sliced and reconstructed files of one configuration share it) and
results/<name>-{ppl,arc,piqa,hs}.json.
Rows: the base model, then each operating point's sub-networks. Standard library only.
"""
import json
import math
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bench(rounds, prefix):
    """Median over the rounds of each round's median, and the smallest and largest single run."""
    meds, runs = [], []
    for b in rounds:
        for r in (b or {}).get("results", []):
            if r["test"].startswith(prefix):
                meds.append(r["median"])
                runs.extend(r["tokens_per_s"])
    if not meds:
        return None
    meds.sort()
    return meds[len(meds) // 2], min(runs), max(runs)


def config_of(name):
    for suffix in ("-obs-recon", "-recon", "-sliced"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def acc(ev):
    if not ev:
        return None
    t = ev["tasks"][0]
    return t["acc_norm"], t["acc_norm_stderr"], t["n"]


def main():
    run = sys.argv[1]
    names = sorted(n[: -len(".export.json")] for n in os.listdir(os.path.join(run, "models")) if n.endswith(".export.json"))
    rows = {}
    for n in names:
        r = os.path.join(run, "results", n)
        rounds = [load(os.path.join(run, "results", f)) for f in sorted(os.listdir(os.path.join(run, "results")))
                  if f.startswith(config_of(n) + "-bench-r")]
        rows[n] = {
            "export": load(os.path.join(run, "models", n + ".export.json")),
            "tg": bench(rounds, "tg"),
            "pp": bench(rounds, "pp"),
            "ppl": (load(r + "-ppl.json") or {}).get("ppl"),
            "arc": acc(load(r + "-arc.json")),
            "piqa": acc(load(r + "-piqa.json")),
            "hs": acc(load(r + "-hs.json")),
        }
    base = rows.get("base")
    btg = base["tg"][0] if base and base["tg"] else None
    bppl = base["ppl"] if base else None

    def point(n):
        try:
            return float(n.split("-")[1 if n.startswith(("shortgpt", "linas")) else 2])
        except (IndexError, ValueError):
            return 0.0

    order = ["base"] + sorted((n for n in names if n != "base"), key=lambda n: (point(n), n))
    print("| model | layers | params M | Q8_0 MiB | decode t/s (median, min-max) | speed-up | prefill t/s | PPL GPL-3 (x base) "
          "| ARC-Easy | PIQA | HellaSwag | mean acc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in order:
        r = rows[n]
        e = r["export"] or {}
        tg, pp = r["tg"], r["pp"]
        cells = [f"`{n}`", str(e.get("n_layers", "")), f"{e.get('params', 0) / 1e6:.1f}", f"{e.get('size_bytes', 0) / 2**20:.1f}"]
        cells.append(f"{tg[0]:.1f} ({tg[1]:.1f}-{tg[2]:.1f})" if tg else "-")
        cells.append(f"{tg[0] / btg:.2f}x" if tg and btg else "-")
        cells.append(f"{pp[0]:.0f}" if pp else "-")
        p = r["ppl"]
        cells.append(f"{p:.2f} ({p / bppl:.2f}x)" if p and bppl else "-")
        accs = []
        for k in ("arc", "piqa", "hs"):
            a = r[k]
            if a:
                accs.append(a[0])
                cells.append(f"{100 * a[0]:.1f} ± {100 * a[1]:.1f} ({a[2]})")
            else:
                cells.append("-")
        cells.append(f"{100 * sum(accs) / len(accs):.1f}" if len(accs) == 3 else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
