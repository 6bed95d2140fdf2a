#!/usr/bin/env python3
"""Dump the `tokenizer.*` metadata of a GGUF file as JSON, read with gguf-py's GGUFReader.

Usage: dump_tokenizer_metadata.py MODEL.gguf OUT.json

The JSON object has the fields of `device_runtime::tokenizer::TokenizerMetadata` (model, pre, tokens,
token_types, merges, scores, bos, eos, unk, pad, eot, eom, add_bos, add_eos, add_space_prefix,
chat_template). Values missing from the file are null; the add_* flags fall back to llama.cpp's defaults
(llama-vocab.cpp: SPM adds BOS and a space prefix; BPE adds neither, except the llama3 pre-tokenizer adds BOS).
It is an independent reader used by the parity tests of the Rust tokenizer.
"""
import json
import sys

from gguf import GGUFReader


def tokenizer_metadata(reader: GGUFReader, path: str) -> dict:
    """The tokenizer metadata of an open GGUF file as a dict (see the module docstring)."""
    fields = reader.fields

    def get(key):
        f = fields.get(key)
        return None if f is None else f.contents()

    model = get("tokenizer.ggml.model")
    if model is None:
        sys.exit(f"{path}: no tokenizer.ggml.model")
    pre = get("tokenizer.ggml.pre")
    llama3 = pre in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")
    add_bos = get("tokenizer.ggml.add_bos_token")
    add_eos = get("tokenizer.ggml.add_eos_token")
    add_space_prefix = get("tokenizer.ggml.add_space_prefix")
    return {
        "model": model,
        "pre": pre,
        "tokens": get("tokenizer.ggml.tokens"),
        "token_types": get("tokenizer.ggml.token_type") or [],
        "merges": get("tokenizer.ggml.merges") or [],
        "scores": get("tokenizer.ggml.scores"),
        "bos": get("tokenizer.ggml.bos_token_id"),
        "eos": get("tokenizer.ggml.eos_token_id"),
        "unk": get("tokenizer.ggml.unknown_token_id"),
        "pad": get("tokenizer.ggml.padding_token_id"),
        "eot": get("tokenizer.ggml.eot_token_id"),
        "eom": get("tokenizer.ggml.eom_token_id"),
        "add_bos": bool(add_bos) if add_bos is not None else (model == "llama" or llama3),
        "add_eos": bool(add_eos) if add_eos is not None else False,
        "add_space_prefix": bool(add_space_prefix) if add_space_prefix is not None else model == "llama",
        "chat_template": get("tokenizer.chat_template"),
    }


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out = tokenizer_metadata(GGUFReader(sys.argv[1]), sys.argv[1])
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False)


if __name__ == "__main__":
    main()
