"""Write a small seed corpus for the gguf_reader fuzz target with gguf-py (the reference writer).

Usage: python3 fuzz/make_seeds.py [DIR]   (default fuzz/corpus/gguf_reader)
"""
import os
import sys

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "gguf_reader")
os.makedirs(out, exist_ok=True)


def write(name, fill, arch="llama"):
    path = os.path.join(out, name)
    w = GGUFWriter(path, arch)
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama(w):
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_context_length(128)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((3, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((1, 34), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("h", np.ones(5, dtype=np.float16))


def all_types(w):
    w.add_uint8("u8", 1)
    w.add_int8("i8", -1)
    w.add_uint16("u16", 2)
    w.add_int16("i16", -2)
    w.add_uint32("u32", 3)
    w.add_int32("i32", -3)
    w.add_float32("f32", 0.5)
    w.add_bool("b", True)
    w.add_string("s", "x")
    w.add_uint64("u64", 4)
    w.add_int64("i64", -4)
    w.add_float64("f64", 0.25)
    w.add_array("arr", [[1, 2], [3]])
    w.add_array("strs", ["p", "q"])


def deci(w):
    w.add_block_count(3)
    w.add_embedding_length(32)
    w.add_context_length(16)
    w.add_array("deci.feed_forward_length", [64, 0, 32])
    w.add_array("deci.attention.head_count", [4, 0, 2])
    w.add_array("deci.attention.head_count_kv", [2, 0, 1])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_uint32("general.alignment", 64)
    w.add_tensor("token_embd.weight", np.zeros((2, 32), dtype=np.float32))


write("llama.gguf", llama)
write("all_types.gguf", all_types)
write("deci.gguf", deci, arch="deci")
print(out, sorted(os.listdir(out)))
