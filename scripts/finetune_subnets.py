#!/usr/bin/env python3
"""Writes the sub-network configs of the fine-tuning evidence (docs/FINETUNE.md): full.json, smallest.json and
rand1..rand5.json, drawn with Python's random.Random(seed) uniformly like llamanas::finetune::sample::random_subnet
(number of kept layers uniform in min_layers..=n_layers, a uniform subset of that size, then per kept layer an FFN
width and a KV-head count uniform over its choices).

Usage: scripts/finetune_subnets.py OUT_DIR [SEED] [SPACE.json]
SPACE.json is a search space file (docs/SEARCH.md); default: SmolLM2-135M's default space
(llamanas::space::SearchSpace::default_for: any subset of >= 15 of the 30 layers, FFN 512..1536 in steps of
256, 1..3 KV heads)."""
import json, random, sys, os

out = sys.argv[1] if len(sys.argv) > 1 else "docs/finetune/subnets"
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 2024
if len(sys.argv) > 3:
    space = json.load(open(sys.argv[3]))
else:
    space = {"n_layers": 30, "layer_mode": "any_subset", "min_layers": 15,
             "ffn_choices": [[512, 768, 1024, 1280, 1536]] * 30, "kv_choices": [[1, 2, 3]] * 30}
if space.get("layer_mode", "any_subset") != "any_subset":
    sys.exit(f"{sys.argv[3]}: only any_subset spaces are supported here")
n, min_layers = space["n_layers"], space["min_layers"]
ffn_choices, kv_choices = space["ffn_choices"], space["kv_choices"]
os.makedirs(out, exist_ok=True)
def dump(name, layers, ffn, kv):
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"layers": layers, "ffn": ffn, "kv_heads": kv}, f, separators=(",", ":"))
        f.write("\n")
dump("full", list(range(n)), [c[-1] for c in ffn_choices], [c[-1] for c in kv_choices])
small = list(range(min_layers))
dump("smallest", small, [ffn_choices[l][0] for l in small], [kv_choices[l][0] for l in small])
rng = random.Random(seed)
for i in range(1, 6):
    k = rng.randint(min_layers, n)
    layers = sorted(rng.sample(range(n), k))
    dump(f"rand{i}", layers, [rng.choice(ffn_choices[l]) for l in layers], [rng.choice(kv_choices[l]) for l in layers])
