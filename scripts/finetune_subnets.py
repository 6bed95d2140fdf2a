#!/usr/bin/env python3
"""Writes the sub-network configs of the fine-tuning evidence (docs/FINETUNE.md) for SmolLM2-135M's default
search space (llamanas::space::SearchSpace::default_for: any subset of >= 15 of the 30 layers, FFN widths
512..1536 in steps of 256, 1..3 KV heads): full.json, smallest.json and rand1..rand5.json (Python's
random.Random(seed), uniform like llamanas::finetune::sample::random_subnet)."""
import json, random, sys, os

out = sys.argv[1] if len(sys.argv) > 1 else "docs/finetune/subnets"
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 2024
n, ffn_choices, kv_choices, min_layers = 30, [512, 768, 1024, 1280, 1536], [1, 2, 3], 15
os.makedirs(out, exist_ok=True)
def dump(name, layers, ffn, kv):
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"layers": layers, "ffn": ffn, "kv_heads": kv}, f, separators=(",", ":"))
        f.write("\n")
dump("full", list(range(n)), [1536] * n, [3] * n)
dump("smallest", list(range(min_layers)), [512] * min_layers, [1] * min_layers)
rng = random.Random(seed)
for i in range(1, 6):
    k = rng.randint(min_layers, n)
    layers = sorted(rng.sample(range(n), k))
    dump(f"rand{i}", layers, [rng.choice(ffn_choices) for _ in layers], [rng.choice(kv_choices) for _ in layers])
