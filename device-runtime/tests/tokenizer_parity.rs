//! Parity of the GGUF byte-level BPE tokenizer with the Python HF `tokenizers` package (0.23.3) on the real
//! SmolLM2-135M-Instruct vocabulary, over a few hundred benchmark texts and hand-written edge cases.
//!
//! The reference ids come from `scripts/ref/tokenizer_ref.py`, which reads the GGUF with gguf-py and builds an
//! HF tokenizer the way SmolLM2's tokenizer.json is written (BPE + Digits(individual) + ByteLevel). The test
//! fails (does not skip) when the asset or the Python packages are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use device_runtime::gguf::{GgufFile, GgufWriter, MetaValue};
use device_runtime::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerMetadata};
use serde::Deserialize;

fn assets_dir() -> PathBuf {
    match std::env::var_os("LLAMANAS_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    }
}

fn smollm2_path() -> PathBuf {
    let p = assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ref").join(name)
}

/// Runs a reference Python script; panics with its stderr if it fails (e.g. gguf/tokenizers not installed).
fn python(args: &[&std::ffi::OsStr]) {
    let out = Command::new("python3").args(args).output().expect("python3 must be installed for the parity tests");
    assert!(
        out.status.success(),
        "python3 {:?} failed (install the reference tools: pip install gguf==0.19.0 tokenizers==0.23.3):\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pre-tokenizers compared: `file` is the file's own (`smollm`).
const PRES: &[&str] = &["file", "gpt-2", "llama3", "qwen2", "default"];

/// Runs `scripts/ref/tokenizer_ref.py` once per test binary (gguf-py's reader takes seconds) and returns its
/// output folder: `meta.json` (the tokenizer metadata read by gguf-py, independent of this crate's GGUF
/// reader) and `ref-<pre>.json` for each of [`PRES`].
fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tokenizer_ref");
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            script("tokenizer_ref.py").into_os_string(),
            smollm2_path().into_os_string(),
            assets_dir().into_os_string(),
            dir.clone().into_os_string(),
        ];
        args.extend(PRES.iter().map(|p| p.into()));
        python(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
        dir
    })
}

/// The metadata as gguf-py reads it.
fn gguf_py_metadata() -> TokenizerMetadata {
    serde_json::from_slice(&std::fs::read(reference_dir().join("meta.json")).unwrap()).expect("metadata JSON")
}

/// The metadata as this crate reads it (GGUF reader + [`TokenizerMetadata::from_gguf`]).
fn smollm2_metadata() -> TokenizerMetadata {
    TokenizerMetadata::from_gguf(&GgufFile::open(smollm2_path()).unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    ids_plain: Vec<u32>,
    decoded: String,
    decoded_skip: String,
}

#[derive(Deserialize)]
struct Reference {
    pre: String,
    cases: Vec<Case>,
}

fn reference(pre: &str) -> Reference {
    serde_json::from_slice(&std::fs::read(reference_dir().join(format!("ref-{pre}.json"))).unwrap())
        .expect("reference JSON")
}

/// Compares every case; reports the first few mismatches with their text.
fn check_parity(tok: &Tokenizer, r: &Reference) {
    assert!(r.cases.len() >= 300, "only {} reference cases", r.cases.len());
    let mut failures = Vec::new();
    for c in &r.cases {
        let ids = tok.encode(&c.text, false, true).unwrap();
        if ids != c.ids {
            failures.push(format!("encode(parse_special) {:?}:\n  got  {:?}\n  want {:?}", c.text, ids, c.ids));
            continue;
        }
        let plain = tok.encode(&c.text, false, false).unwrap();
        if plain != c.ids_plain {
            failures.push(format!("encode(plain) {:?}:\n  got  {:?}\n  want {:?}", c.text, plain, c.ids_plain));
        }
        let dec = tok.decode(&ids, false).unwrap();
        if dec != c.decoded || dec != c.text {
            failures.push(format!("decode {:?}: got {:?}, reference {:?}", c.text, dec, c.decoded));
        }
        let skip = tok.decode(&ids, true).unwrap();
        if skip != c.decoded_skip {
            failures.push(format!("decode(skip) {:?}: got {:?}, reference {:?}", c.text, skip, c.decoded_skip));
        }
    }
    assert!(
        failures.is_empty(),
        "pre {}: {} of {} cases differ from HF tokenizers; first:\n{}",
        r.pre,
        failures.len(),
        r.cases.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn from_gguf_metadata_equals_gguf_py() {
    let meta = smollm2_metadata();
    assert_eq!(meta.model, "gpt2");
    assert_eq!(meta.pre.as_deref(), Some("smollm"));
    assert_eq!((meta.tokens.len(), meta.merges.len()), (49152, 48900));
    assert_eq!(meta, gguf_py_metadata());
}

#[test]
fn smollm2_matches_hf_tokenizers() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(smollm2_path()).unwrap()).unwrap();
    check_parity(&tok, &reference("file"));
}

#[test]
fn from_gguf_errors_name_the_key() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("llama".into()));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "no-tokenizer.gguf").unwrap();
    let err = Tokenizer::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("no-tokenizer.gguf") && err.contains("tokenizer.ggml.model"), "{err}");

    w.add_metadata("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "no-tokens.gguf").unwrap();
    let err = Tokenizer::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("no-tokens.gguf") && err.contains("tokenizer.ggml.tokens"), "{err}");

    w.add_metadata("tokenizer.ggml.tokens", MetaValue::u32_array(&[1, 2, 3]));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "bad-tokens.gguf").unwrap();
    let err = Tokenizer::from_gguf(&f).unwrap_err();
    assert!(matches!(err, TokenizerError::BadArray { key: "tokenizer.ggml.tokens", .. }), "{err}");
    assert!(err.to_string().contains("bad-tokens.gguf"), "{err}");

    w.add_metadata("tokenizer.ggml.model", MetaValue::String("wordpiece".into()));
    w.add_metadata("tokenizer.ggml.tokens", MetaValue::string_array(&["a", "b"]));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "wpm.gguf").unwrap();
    let err = Tokenizer::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("wordpiece") && err.contains("tokenizer.ggml.model"), "{err}");
}

/// The other pre-tokenizers (llama.cpp's regexes) against the HF forms of their original tokenizer.json,
/// run on SmolLM2's vocabulary: this checks the splitting, which is what differs between them. `default`
/// has no tokenizer.json; its reference is llama.cpp's regex list run by HF's Oniguruma engine.
#[test]
fn other_pre_tokenizers_match_hf_tokenizers() {
    let meta = smollm2_metadata();
    for pre in ["gpt-2", "llama3", "qwen2", "default"] {
        let mut m = meta.clone();
        m.pre = Some(pre.to_string());
        let tok = Tokenizer::from_metadata(m).unwrap();
        check_parity(&tok, &reference(pre));
    }
}

#[test]
fn smollm2_known_ids() {
    let tok = Tokenizer::from_metadata(smollm2_metadata()).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    // Measured with llama.cpp (llama-tokenize) on this GGUF.
    assert_eq!(tok.encode("Hello world, this is a test.", false, true).unwrap(), [19556, 905, 28, 451, 314, 253, 1028, 30]);
    // Digits split one by one ("smollm" pre-tokenizer): '1'..'5' are the byte tokens 33..37 of the vocab.
    for (d, id) in ["1", "2", "3", "4", "5"].iter().zip(33u32..) {
        assert_eq!(tok.token_text(id), Some(*d));
    }
    assert_eq!(tok.encode("12345", false, true).unwrap(), [33, 34, 35, 36, 37]);
    // ChatML tokens of SmolLM2's vocabulary (checked by gguf-py: tokens[1], tokens[2], CONTROL).
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.encode("<|im_start|>user\n<|im_end|>", false, true).unwrap(), [1, 4093, 198, 2]);
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1) && !tok.is_eog(19556));
    // add_bos_token = false in this file: add_special adds nothing.
    assert_eq!(tok.encode("Hello", true, true).unwrap(), [19556]);
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
    // Streaming pieces: 'Ġworld' is " world"; a special token is its text.
    assert_eq!(tok.token_to_piece(905).unwrap(), b" world");
    assert_eq!(tok.token_to_piece(1).unwrap(), b"<|im_start|>");
    assert!(tok.decode(&[49152], false).is_err());
    assert!(tok.token_to_piece(u32::MAX).is_err());
}

#[test]
fn unknown_pre_tokenizer_is_an_error() {
    let mut meta = smollm2_metadata();
    meta.pre = Some("made-up-pre".into());
    let err = Tokenizer::from_metadata(meta).unwrap_err().to_string();
    assert!(err.contains("made-up-pre") && err.contains("tokenizer.ggml.pre"), "{err}");
}

#[test]
fn stream_decoder_reassembles_split_characters() {
    let tok = Tokenizer::from_metadata(smollm2_metadata()).unwrap();
    let r = reference("file");
    let mut n_split = 0;
    for c in &r.cases {
        let mut dec = StreamDecoder::new(&tok, false);
        let mut text = String::new();
        for &id in &c.ids {
            let piece = tok.token_to_piece(id).unwrap();
            n_split += usize::from(std::str::from_utf8(&piece).is_err());
            text.push_str(&dec.push(id).unwrap());
        }
        text.push_str(&dec.finish());
        assert_eq!(text, c.text);
    }
    // The emoji/CJK cases do split characters over tokens, so the holding logic is exercised.
    assert!(n_split > 0);
    let mut dec = StreamDecoder::new(&tok, true);
    let s: String = [1u32, 19556, 2].iter().map(|&id| dec.push(id).unwrap()).collect();
    assert_eq!(s, "Hello");
}

/// `edgerun tokenize --json` against HF `tokenizers` on llama.cpp's tokenizer-test strings (issue 24): ids,
/// vocabulary strings (`Encoding.tokens`) and count, with special tokens parsed (the default) and as plain text
/// (`--no-parse-special`); SmolLM2 adds no BOS. Pieces of ASCII texts concatenate back to the text.
#[test]
fn tokenize_command_matches_hf_tokenizers() {
    let r = reference("file");
    let model = smollm2_path();
    let texts = ["What is 3333+777?", "2024", "This is \u{1f999}.cpp", "caf\u{e9}", "  leading spaces", "\n\n\t tabs", "", "<|im_start|>user"];
    for text in texts {
        let c = r.cases.iter().find(|c| c.text == text).unwrap_or_else(|| panic!("no reference case for {text:?}"));
        for plain in [false, true] {
            let mut args = vec!["tokenize".as_ref(), model.as_os_str(), "--json".as_ref(), "--prompt".as_ref(), text.as_ref()];
            if plain {
                args.push("--no-parse-special".as_ref());
            }
            let o = Command::new(env!("CARGO_BIN_EXE_edgerun")).args(&args).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
            let want = if plain { &c.ids_plain } else { &c.ids };
            assert_eq!(&ids, want, "{text:?} (plain: {plain})");
            assert_eq!(v["count"].as_u64().unwrap() as usize, want.len());
            if !plain {
                let tokens: Vec<String> = serde_json::from_value(v["tokens"].clone()).unwrap();
                assert_eq!(tokens, c.tokens, "{text:?}");
            }
            if text.is_ascii() {
                let pieces: Vec<String> = serde_json::from_value(v["pieces"].clone()).unwrap();
                assert_eq!(pieces.concat(), text);
            }
        }
    }
    // The figure: "<|im_start|>user" is [1, 4093] parsed, 8 tokens as plain text.
    let c = r.cases.iter().find(|c| c.text == "<|im_start|>user").unwrap();
    assert_eq!((c.ids.clone(), c.ids_plain.len()), (vec![1, 4093], 8));
}
