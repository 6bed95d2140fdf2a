"""Dump a GGUF file's metadata and tensor infos with gguf-py (the reference reader) as JSON on stdout.

Used by gguf_real_model.rs to check our reader against gguf.GGUFReader. Usage: python3 gguf_py_dump.py FILE
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType


def main():
    r = GGUFReader(sys.argv[1])
    meta = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):  # gguf-py's pseudo-fields for the header
            continue
        types = [GGUFValueType(t).name for t in field.types]
        value = field.contents()
        # floats as exact doubles tagged so they are not confused with integers
        def tag(x, t):
            if t in ("FLOAT32", "FLOAT64"):
                return {"float": float(x)}
            if isinstance(x, list):
                return [tag(e, t) for e in x]
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, (bool, np.bool_)):
                return bool(x)
            return x
        meta.append({"key": key, "types": types, "value": tag(value, types[-1])})
    tensors = []
    for t in r.tensors:
        tensors.append({
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": int(t.tensor_type),
            "data_offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "n_elements": int(t.n_elements),
            "sha256": hashlib.sha256(np.ascontiguousarray(t.data).tobytes()).hexdigest(),
        })
    version = int(r.fields["GGUF.version"].contents())
    alignment = int(r.alignment)
    json.dump({"version": version, "alignment": alignment, "data_offset": int(r.data_offset),
               "metadata": meta, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main()
