#!/usr/bin/env python3
"""Summarize a LINAS / NSGA-II / random comparison made by scripts/search-compare.sh.

Usage: search_compare.py OUT_DIR. Reads OUT_DIR/<algo>-<seed>/hypervolume.csv (batch,evals,hypervolume, written
by `llamanas search`) and evaluations.jsonl; writes OUT_DIR/summary.md (hypervolume vs. real evaluations per
algorithm: mean and min-max over seeds; final fronts; the evaluations LINAS needed to reach each other
algorithm's final hypervolume) and OUT_DIR/hypervolume.svg (mean curves). Standard library only.
"""
import csv
import json
import os
import statistics
import sys

ALGOS = ["linas", "nsga2", "random"]
COLORS = {"linas": "#1f77b4", "nsga2": "#d62728", "random": "#7f7f7f"}


def runs(out):
    found = {}
    for name in sorted(os.listdir(out)):
        algo, _, seed = name.rpartition("-")
        path = os.path.join(out, name, "hypervolume.csv")
        if algo in ALGOS and seed.isdigit() and os.path.exists(path):
            with open(path) as f:
                curve = {int(r["evals"]): float(r["hypervolume"]) for r in csv.DictReader(f)}
            with open(os.path.join(out, name, "evaluations.jsonl")) as f:
                evals = [json.loads(line) for line in f if line.strip()]
            found.setdefault(algo, {})[int(seed)] = (curve, evals)
    return found


def svg(out, table, xs):
    w, h, ml, mb, mt, mr = 640, 400, 70, 50, 20, 120
    ymax = max(v for a in table for v in table[a].values()) * 1.05
    ymin = min(v for a in table for v in table[a].values()) * 0.9
    X = lambda x: ml + (x - xs[0]) / max(1, xs[-1] - xs[0]) * (w - ml - mr)
    Y = lambda y: h - mb - (y - ymin) / (ymax - ymin) * (h - mb - mt)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<line x1="{ml}" y1="{h-mb}" x2="{w-mr}" y2="{h-mb}" stroke="black"/>',
         f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h-mb}" stroke="black"/>',
         f'<text x="{(ml+w-mr)/2}" y="{h-12}" text-anchor="middle">real evaluations</text>',
         f'<text x="16" y="{(mt+h-mb)/2}" transform="rotate(-90 16 {(mt+h-mb)/2})" text-anchor="middle">hypervolume (mean over seeds)</text>']
    for x in xs:
        s.append(f'<text x="{X(x):.1f}" y="{h-mb+16}" text-anchor="middle">{x}</text>')
    for i in range(5):
        y = ymin + (ymax - ymin) * i / 4
        s.append(f'<text x="{ml-6}" y="{Y(y)+4:.1f}" text-anchor="end">{y:.3f}</text>')
    for k, a in enumerate(a for a in ALGOS if a in table):
        pts = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in sorted(table[a].items()))
        s.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[a]}" stroke-width="2"/>')
        s.append(f'<text x="{w-mr+10}" y="{mt+20+18*k}" fill="{COLORS[a]}">{a}</text>')
    s.append("</svg>")
    with open(os.path.join(out, "hypervolume.svg"), "w") as f:
        f.write("\n".join(s) + "\n")


def main():
    out = sys.argv[1]
    found = runs(out)
    if not found:
        sys.exit(f"{out}: no <algo>-<seed>/hypervolume.csv found")
    lines = ["# LINAS vs. NSGA-II vs. random search", ""]
    xs = sorted({x for a in found for c, _ in found[a].values() for x in c})
    means = {}
    lines += ["Hypervolume after each batch of real evaluations: mean over seeds (min-max).", "",
              "| evaluations | " + " | ".join(f"{a} ({len(found[a])} seeds)" for a in ALGOS if a in found) + " |",
              "|---|" + "---|" * len([a for a in ALGOS if a in found])]
    for x in xs:
        row = [str(x)]
        for a in ALGOS:
            if a not in found:
                continue
            vals = [c[x] for c, _ in found[a].values() if x in c]
            if len(vals) == len(found[a]):
                means.setdefault(a, {})[x] = statistics.mean(vals)
                row.append(f"{statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f})")
            else:
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "linas" in means:
        for other in ("nsga2", "random"):
            if other not in means:
                continue
            last = max(means[other])
            target = means[other][last]
            reach = [x for x in sorted(means["linas"]) if means["linas"][x] >= target]
            if reach:
                lines.append(f"- LINAS reaches {other}'s mean final hypervolume ({target:.4f} after {last} "
                             f"evaluations) after {reach[0]} evaluations: {last / reach[0]:.1f}x fewer.")
            else:
                lines.append(f"- LINAS does not reach {other}'s mean final hypervolume ({target:.4f}) within "
                             f"{max(means['linas'])} evaluations.")
    lines += ["", "Best accuracy found per run (acc_norm on the search's ARC-Easy subset) and evaluations on the "
              "final front are in each run's report.md.", ""]
    lines += ["| run | evaluations | best accuracy | fastest latency ms/token with accuracy >= 0.40 |", "|---|---|---|---|"]
    for a in ALGOS:
        for seed, (_, ev) in sorted(found.get(a, {}).items()):
            good = [e["latency_ms"] for e in ev if e.get("accuracy", 0) >= 0.40]
            lines.append(f"| {a}-{seed} | {len(ev)} | {max(e.get('accuracy', 0) for e in ev):.2f} | "
                         f"{min(good):.2f} |" if good else f"| {a}-{seed} | {len(ev)} | "
                         f"{max(e.get('accuracy', 0) for e in ev):.2f} | - |")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if means:
        svg(out, means, xs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
