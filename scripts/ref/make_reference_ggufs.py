#!/usr/bin/env python3
"""Make the derived reference GGUF files of the engine tests from the shipped SmolLM2 Q4_1 file, with gguf-py
(an independent implementation: GGUFReader, GGUFWriter, gguf.quants).

Usage: make_reference_ggufs.py OUTDIR [--model PATH] [--only q8_0,q4_0,f32,deci]

Writes into OUTDIR (each file through a temporary name in OUTDIR, renamed when complete):
  smollm2-q8_0.gguf  every quantized tensor except token_embd.weight (kept Q8_0) dequantized and quantized
                     again to Q8_0; the F32 norm vectors stay F32
  smollm2-q4_0.gguf  the same, to Q4_0
  smollm2-f32.gguf   the same, dequantized to F32
  smollm2-deci.gguf  general.architecture=deci, llama.* keys renamed deci.*, FFN of odd layers cut to its first
                     1024 neurons (ffn_gate/ffn_up keep rows 0..1023, ffn_down keeps columns 0..1023; Q4_1 blocks
                     sliced as they are), deci.feed_forward_length a uint32 array with one value per layer.
The model defaults to $LLAMANAS_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf. llama.cpp's perplexities of these files on
the GPL-3 text (-c 512 -b 512) are quoted in docs/PERFORMANCE.md and checked by device-runtime/tests/engine_*.rs.
"""
import argparse
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

KEEP = "token_embd.weight"
DECI_FFN_CUT = 1024


def copy_metadata(reader, writer, rename_arch=None, overrides=None):
    overrides = dict(overrides or {})
    for field in reader.fields.values():
        name = field.name
        if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == V.ARRAY else None
        if rename_arch and name.startswith("llama."):
            name = rename_arch + name[len("llama."):]
        if name in overrides:
            val, vtype, sub = overrides.pop(name)
            writer.add_key_value(name, val, vtype, sub_type=sub)
            continue
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for name, (val, vtype, sub) in overrides.items():
        writer.add_key_value(name, val, vtype, sub_type=sub)


def write(reader, path, arch, tensors, rename_arch=None, overrides=None):
    tmp = path + ".tmp"
    writer = gguf.GGUFWriter(tmp, arch)
    copy_metadata(reader, writer, rename_arch, overrides)
    for name, data, qtype in tensors:
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)


def requantized(reader, target):
    for t in reader.tensors:
        if t.name == KEEP or t.tensor_type in (Q.F32,):
            yield t.name, np.asarray(t.data), Q(t.tensor_type)
            continue
        f = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        if target == Q.F32:
            yield t.name, f, Q.F32
        else:
            yield t.name, gguf.quants.quantize(f, target), target


def deci_tensors(reader):
    for t in reader.tensors:
        data = np.asarray(t.data)
        parts = t.name.split(".")
        if parts[0] == "blk" and int(parts[1]) % 2 == 1:
            kind = parts[2]
            if kind in ("ffn_gate", "ffn_up"):
                data = data[:DECI_FFN_CUT]
            elif kind == "ffn_down":
                be, bb = gguf.GGML_QUANT_SIZES[t.tensor_type]
                data = np.ascontiguousarray(data[:, : DECI_FFN_CUT // be * bb])
        yield t.name, data, Q(t.tensor_type)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--model", default=os.path.join(os.environ.get("LLAMANAS_ASSETS", "assets"), "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--only", default="q8_0,q4_0,f32,deci")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    reader = gguf.GGUFReader(args.model)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    if arch != "llama":
        sys.exit(f"{args.model}: architecture {arch!r}, expected 'llama'")
    n_layers = reader.fields["llama.block_count"].contents()
    n_ff = reader.fields["llama.feed_forward_length"].contents()
    for what in args.only.split(","):
        out = os.path.join(args.outdir, f"smollm2-{what}.gguf")
        if what in ("q8_0", "q4_0", "f32"):
            target = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "f32": Q.F32}[what]
            write(reader, out, "llama", list(requantized(reader, target)))
        elif what == "deci":
            ffn = [DECI_FFN_CUT if i % 2 == 1 else n_ff for i in range(n_layers)]
            over = {"deci.feed_forward_length": (ffn, V.ARRAY, V.UINT32)}
            write(reader, out, "deci", list(deci_tensors(reader)), rename_arch="deci.", overrides=over)
        else:
            sys.exit(f"unknown variant {what!r} (q8_0, q4_0, f32, deci)")
        print(out)


if __name__ == "__main__":
    main()
