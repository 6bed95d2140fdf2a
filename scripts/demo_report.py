#!/usr/bin/env python3
"""Write the demo's report.md (Markdown, to stdout) from the JSON files scripts/demo.sh left in RUN_DIR.

Usage: demo_report.py RUN_DIR PROMPT. Reads {base,example}-{ppl,bench}.json, {base,example}-generate.txt,
example-subnet.json and base-inspect.json. Standard library only.
"""
import datetime
import json
import os
import platform
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def bench_row(b, test):
    for r in b["results"]:
        if r["test"].startswith(test):
            return r
    return None


def main():
    run, prompt = sys.argv[1], sys.argv[2]
    cfg = load(os.path.join(run, "example-subnet.json"))
    rows = []
    for m in ("base", "example"):
        ppl = load(os.path.join(run, f"{m}-ppl.json"))
        b = load(os.path.join(run, f"{m}-bench.json"))
        pp, tg = bench_row(b, "pp"), bench_row(b, "tg")
        with open(os.path.join(run, f"{m}-generate.txt")) as f:
            gen = f.read().strip()
        rows.append((m, ppl, b, pp, tg, gen))
    base = rows[0]
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = []
    w = out.append
    w(f"# Demo report ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)")
    w("")
    w(f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}. "
      "Runtime: `edgerun` CPU engine, 2 threads, Q8_0.")
    w("")
    w("Pending stages (not built yet): import with importance ordering, InstaTune fine-tuning, LINAS search, "
      "device profile. Until they land, the demo exports one fixed example sub-network of the un-tuned base "
      f"model: {len(cfg['layers'])} of 30 blocks, FFN widths {sorted(set(cfg['ffn']))}, "
      f"KV heads {sorted(set(cfg['kv_heads']))}. Without fine-tuning such a sub-network's perplexity is poor; "
      "that is what the super-network training fixes.")
    w("")
    w("| model | blocks | GGUF size | PPL (GPL-3, ctx 512) | prefill t/s (pp128) | decode t/s | decode speed-up | size reduction |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bsize, btg = base[2]["file_size"], base[4]["median"] if base[4] else None
    for m, ppl, b, pp, tg, _ in rows:
        blocks = 30 if m == "base" else len(cfg["layers"])
        size = b["file_size"]
        ppt = f"{pp['median']:.1f}" if pp else "-"
        tgt = f"{tg['median']:.1f}" if tg else "-"
        sp = f"{tg['median'] / btg:.2f}x" if tg and btg else "-"
        red = f"{bsize / size:.2f}x"
        w(f"| {m} | {blocks} | {size / 2**20:.1f} MiB | {ppl['ppl']:.2f} ({ppl['chunks']} chunks) | {ppt} | {tgt} | {sp} | {red} |")
    w("")
    w("Speeds are medians of the repeated `edgerun bench` runs (see the `*-bench.json` files for every run).")
    w("")
    w(f"Chat prompt: \"{prompt}\"")
    w("")
    for m, *_, gen in rows:
        w(f"- {m}: {gen!r}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
