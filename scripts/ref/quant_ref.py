#!/usr/bin/env python3
"""Reference outputs of gguf-py's `gguf.quants` for the parity tests of device_runtime::quant.

Independent of the Rust code: only gguf-py (`gguf.quants.quantize` / `dequantize`, `gguf.GGUFReader`) and
numpy compute the values.

Usage:
  quant_ref.py jobs DIR
      DIR/jobs.json is a list of {"op": "dequantize"|"quantize", "type": "Q4_K", "input": "a.bin",
      "output": "a.out"} (paths relative to DIR). dequantize: input = packed blocks, output = f32 LE.
      quantize: input = f32 LE, output = packed blocks.
  quant_ref.py gguf FILE OUT.json
      For every tensor of the GGUF file: name, type, absolute data offset, byte size, element count and the
      sha256 of gguf.quants.dequantize(tensor data) as f32 LE bytes (row-major, as stored).
Fails (non-zero exit, message on stderr) when gguf or numpy are missing or an input is malformed.
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants


def run_jobs(d: str) -> None:
    with open(os.path.join(d, "jobs.json")) as f:
        jobs = json.load(f)
    for job in jobs:
        qtype = T[job["type"]]
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        src = os.path.join(d, job["input"])
        if job["op"] == "dequantize":
            data = np.fromfile(src, dtype=np.uint8)
            out = quants.dequantize(data.reshape(1, -1), qtype)
            assert out.dtype == np.float32 and out.size == data.size // block_bytes * block_elems
        elif job["op"] == "quantize":
            data = np.fromfile(src, dtype="<f4")
            out = quants.quantize(data.reshape(1, -1), qtype)
            if qtype in (T.F32, T.F16):
                out = out.view(np.uint8)
            assert out.dtype == np.uint8 and out.size == data.size // block_elems * block_bytes
        else:
            raise ValueError(f"unknown op {job['op']!r}")
        np.ascontiguousarray(out).tofile(os.path.join(d, job["output"]))


def run_gguf(path: str, out_json: str) -> None:
    reader = gguf.GGUFReader(path)
    rows = []
    for t in reader.tensors:
        deq = quants.dequantize(t.data, t.tensor_type)
        deq = np.ascontiguousarray(deq, dtype="<f4")
        rows.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "n_elements": int(t.n_elements),
            "sha256": hashlib.sha256(deq.tobytes()).hexdigest(),
        })
    with open(out_json, "w") as f:
        json.dump(rows, f)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "jobs":
        run_jobs(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "gguf":
        run_gguf(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
