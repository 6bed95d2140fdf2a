//! Bad input to `edgerun generate | perplexity | bench | inspect` (issue 24): each case is a copy of the real
//! SmolLM2 file with one fact broken, made here (nothing committed), and must end in a clear error naming the
//! problem with exit status 1: never an abort on a huge allocation, a wrapped integer, a silent acceptance or
//! a NaN result.

mod engine_common;

use device_runtime::gguf::{GgufFile, GgufWriter, MetaValue};
use engine_common::smollm2_path;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgerun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun")).args(args).env_remove("RUST_BACKTRACE").output().unwrap()
}

/// Runs `edgerun args`, expects exit status 1 and every needle in stderr; returns stderr.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = edgerun(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "edgerun {args:?} should fail cleanly (exit 1), stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "edgerun {args:?}: stderr lacks {n:?}:\n{err}");
    }
    err
}

fn succeeds(args: &[&str]) -> Output {
    let o = edgerun(args);
    assert!(o.status.success(), "edgerun {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// A copy of SmolLM2 in `dir` named `name` with metadata `meta` set and the tensor data of `replace` swapped
/// in (same size).
fn variant(dir: &Path, name: &str, meta: &[(&str, MetaValue)], replace: Option<(&str, Vec<u8>)>) -> PathBuf {
    let f = GgufFile::open(smollm2_path()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    for (k, v) in meta {
        w.add_metadata(k, v.clone());
    }
    for t in f.tensors() {
        match &replace {
            Some((n, data)) if *n == t.name => w.add_tensor(&t.name, &t.dims, t.ty, data.clone()).unwrap(),
            _ => w.add_tensor(&t.name, &t.dims, t.ty, f.tensor_data(t)).unwrap(),
        }
    }
    let p = dir.join(name);
    w.write_atomic(&p).unwrap();
    p
}

fn text_file(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(&p, "The quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
    p
}

/// Item 1 and 2: the KV cache is sized from what the run uses and checked against the memory available.
#[test]
fn huge_contexts_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let m = variant(dir.path(), "ctx-max.gguf", &[("llama.context_length", MetaValue::U32(u32::MAX))], None);
    let m = m.to_str().unwrap();
    // 4e9 tokens of KV cache: an error naming the figure, not an abort (exit 134).
    fails(&["generate", m, "-p", "Hello", "-n", "4000000000", "-t", "1"], &[
        "the KV cache for a context of 4000000001 tokens needs",
        "GiB",
        "more than the memory available",
    ]);
    // -n u64::MAX does not wrap: the context is the training context, too large for memory.
    fails(&["generate", m, "-p", "Hello", "-n", "18446744073709551615", "-t", "1"], &[
        "context of 4294967295 tokens",
        "more than the memory available",
    ]);
    // A large --ctx costs nothing when the run needs a few tokens.
    let o = succeeds(&["generate", m, "-p", "Hello", "--ctx", "50000000", "-n", "2", "-t", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Hello"));
    // A chunk larger than the text is refused before a session exists.
    let text = text_file(dir.path());
    fails(&["perplexity", m, "-f", text.to_str().unwrap(), "--ctx", "200000000", "-t", "1"], &[
        "is less than one chunk of 200000000",
    ]);
}

#[test]
fn generate_past_the_context_stops_at_the_context() {
    let m = smollm2_path();
    let o = succeeds(&["generate", m.to_str().unwrap(), "-p", "Hello", "-n", "18446744073709551615", "--ctx", "8", "-t", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[context of 8 tokens is full]"), "{err}");
}

#[test]
fn a_zero_training_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = variant(dir.path(), "ctx0.gguf", &[("llama.context_length", MetaValue::U32(0))], None);
    let text = text_file(dir.path());
    let need = ["ctx0.gguf: ", "llama.context_length is 0"];
    fails(&["generate", m.to_str().unwrap(), "-p", "Hello", "-n", "2"], &need);
    fails(&["perplexity", m.to_str().unwrap(), "-f", text.to_str().unwrap(), "--ctx", "64"], &need);
}

/// NaN weights stop a run with an error naming the block and the tensor.
#[test]
fn nan_weights_are_reported_with_the_tensor() {
    let f = GgufFile::open(smollm2_path()).unwrap();
    let t = f.tensor("blk.3.ffn_down.weight").unwrap();
    let mut data = f.tensor_data(t).to_vec();
    // Q4_1 block: f16 scale d, f16 minimum m, 16 bytes of nibbles (ggml-common.h block_q4_1); d = f16 NaN.
    data[0..2].copy_from_slice(&0x7e00u16.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let m = variant(dir.path(), "nan.gguf", &[], Some(("blk.3.ffn_down.weight", data)));
    let text = text_file(dir.path());
    let need = ["non-finite values (NaN or infinity) in the output of block 3", "tensor blk.3.ffn_down.weight holds non-finite weights"];
    fails(&["perplexity", m.to_str().unwrap(), "-f", text.to_str().unwrap(), "--ctx", "64", "-t", "1"], &need);
    fails(&["generate", m.to_str().unwrap(), "-p", "Hello", "-n", "2", "-t", "1"], &need);
}

/// `inspect` runs the engine's shape checks on llama/deci files.
#[test]
fn inspect_refuses_shapes_that_contradict_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let m = variant(dir.path(), "shape.gguf", &[("llama.feed_forward_length", MetaValue::U32(1024))], None);
    let m = m.to_str().unwrap();
    fails(&["generate", m, "-p", "Hello", "-n", "1"], &["blk.0.ffn_gate.weight: shape [576, 1536], expected [576, 1024]"]);
    fails(&["inspect", m], &["the engine cannot run this file", "blk.0.ffn_gate.weight: shape [576, 1536], expected [576, 1024]"]);
    let o = edgerun(&["inspect", m, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["problem"].as_str().unwrap().contains("ffn_gate"), "{v}");
    // The good file: no problem, exit 0.
    let o = succeeds(&["inspect", smollm2_path().to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["problem"].is_null());
}

#[test]
fn bad_sampling_and_bench_options_are_refused() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    fails(&["generate", m, "-p", "Hi", "--temp", "nan"], &["--temp NaN is out of range"]);
    fails(&["generate", m, "-p", "Hi", "--temp=-1"], &["--temp -1 is out of range"]);
    fails(&["generate", m, "-p", "Hi", "--top-p", "nan"], &["--top-p NaN is out of range"]);
    fails(&["generate", m, "-p", "Hi", "--top-p", "0"], &["--top-p 0 is out of range"]);
    fails(&["bench", m, "-p", "0", "-n", "0"], &["nothing to measure"]);
    // Found by trying to break the fixes: sizes and counts checked before anything is allocated or started.
    fails(&["bench", m, "-p", "18446744073709551615", "-n", "0", "-r", "1"], &["more tokens than the model's training context 8192"]);
    fails(&["bench", m, "-p", "4294967296", "-n", "0", "-r", "1"], &["more tokens than the model's training context 8192"]);
    fails(&["generate", m, "-p", "Hi", "-n", "2", "-t", "18446744073709551615"], &["threads is more than 1024"]);
    fails(&["profile", m, "--budget", "inf"], &["--budget inf must be a positive number of seconds"]);
    fails(&["profile", m, "--flush-mib", "100000000"], &["more than 64 GiB"]);
    fails(&["profile", m, "--contexts", "0,18446744073709551615"], &["above the model's training context"]);
    fails(&["profile", m, "--min-runs", "0"], &["need 1 <= min-runs <= max-runs"]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.gguf");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    fails(&["inspect", fifo.to_str().unwrap()], &["not a regular file"]);
    // Text larger than the limit (here a device without end) is refused, not read until memory runs out.
    fails(&["tokenize", m, "--file", "/dev/zero"], &["/dev/zero: more than 64 MiB of text"]);
}

/// `-n` beyond the context: the warning gives the number of tokens the run will generate.
#[test]
fn generate_warns_with_the_tokens_it_will_generate() {
    let m = smollm2_path();
    let o = succeeds(&["generate", m.to_str().unwrap(), "-p", "Hello", "-n", "10", "--ctx", "4", "-t", "1", "--temp", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    // "Hello" is 1 token: a context of 4 holds the prompt and 3 decoded tokens, the 4th is sampled last.
    assert!(err.contains("at most 4 tokens]") && err.contains("generated 4 tokens"), "{err}");
}

/// Control tokens in a prompt are parsed by default (llama.cpp's behaviour): `<|im_start|>user` is 2 tokens
/// ([1, 4093], HF `tokenizers`), 8 as plain text.
#[test]
fn special_tokens_in_prompts_are_parsed_by_default() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    let o = succeeds(&["generate", m, "-p", "<|im_start|>user", "-n", "1", "-t", "1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("prompt 2 tokens"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = succeeds(&["generate", m, "-p", "<|im_start|>user", "-n", "1", "-t", "1", "--no-parse-special"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("prompt 8 tokens"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Messages name the file once, say what a directory is, and print a bad magic on one line.
#[test]
fn messages_name_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("elf.gguf");
    std::fs::write(&bad, b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").unwrap();
    let b = bad.to_str().unwrap();
    let text = text_file(dir.path());
    for args in [
        vec!["generate", b, "-p", "Hi"],
        vec!["perplexity", b, "-f", text.to_str().unwrap()],
        vec!["inspect", b],
        vec!["bench", b],
        vec!["tokenize", b, "-p", "Hi"],
    ] {
        let err = fails(&args, &["bad magic 7f 45 4c 46 (\"\\u{7f}ELF\") at offset 0"]);
        assert_eq!(err.matches("elf.gguf").count(), 1, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    fails(&["inspect", dir.path().to_str().unwrap()], &["is a directory"]);
}
