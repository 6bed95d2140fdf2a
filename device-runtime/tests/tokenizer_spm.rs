//! The SentencePiece-style (`tokenizer.ggml.model = llama`) tokenizer on a tiny vocabulary written as a GGUF,
//! with expected ids worked out by hand from llama.cpp's algorithm (`llm_tokenizer_spm`: merge the adjacent
//! pair whose text is the highest-scoring token, leftmost first on ties; unknown pieces as `<0xXX>` bytes).

use device_runtime::gguf::{GgufFile, GgufWriter, MetaValue};
use device_runtime::tokenizer::Tokenizer;

/// Byte token `<0xXX>` has id 3 + XX.
fn byte(b: u8) -> u32 {
    3 + b as u32
}

/// 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..=258 `<0x00>`..`<0xFF>`, then pieces with scores.
fn tiny_gguf() -> GgufFile {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces: &[(&str, f32)] = &[
        ("▁", -10.0),     // 259
        ("h", -5.0),      // 260
        ("e", -5.0),      // 261
        ("l", -5.0),      // 262
        ("o", -5.0),      // 263
        ("▁h", -3.0),     // 264
        ("ll", -2.0),     // 265
        ("he", -4.0),     // 266
        ("▁he", -1.0),    // 267
        ("llo", -1.5),    // 268
        ("▁hello", 0.0),  // 269
        ("w", -5.0),      // 270
        ("▁w", -3.0),     // 271
    ];
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(*s);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", MetaValue::String("llama".into()));
    w.add_metadata("tokenizer.ggml.tokens", MetaValue::string_array(&tokens));
    w.add_metadata("tokenizer.ggml.token_type", MetaValue::i32_array(&types));
    w.add_metadata("tokenizer.ggml.scores", MetaValue::f32_array(&scores));
    w.add_metadata("tokenizer.ggml.bos_token_id", MetaValue::U32(1));
    w.add_metadata("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    w.add_metadata("tokenizer.ggml.unknown_token_id", MetaValue::U32(0));
    // add_bos_token / add_space_prefix absent: llama.cpp's SPM defaults (both true) apply.
    GgufFile::from_bytes(w.to_bytes().unwrap(), "tiny-spm.gguf").unwrap()
}

#[test]
fn spm_defaults_from_gguf() {
    let tok = Tokenizer::from_gguf(&tiny_gguf()).unwrap();
    let m = tok.metadata();
    assert!(m.add_bos && m.add_space_prefix && !m.add_eos);
    assert_eq!(tok.vocab_size(), 272);
    assert!(tok.is_eog(2) && !tok.is_eog(1));
}

#[test]
fn spm_merges_by_score() {
    let tok = Tokenizer::from_gguf(&tiny_gguf()).unwrap();
    // "▁hello": ll(-2) first, then llo(-1.5), ▁h(-3) (he(-4) loses), ▁he(-1), ▁hello(0).
    assert_eq!(tok.encode("hello", false, false).unwrap(), [269]);
    assert_eq!(tok.encode("hello", true, false).unwrap(), [1, 269]);
    // "▁hello▁world": ▁h and ▁w tie at -3, the left one merges first; "r", "d" fall back to bytes.
    assert_eq!(tok.encode("hello world", false, false).unwrap(), [269, 271, 263, byte(b'r'), 262, byte(b'd')]);
    // A character outside the vocabulary: its UTF-8 bytes (é = C3 A9).
    assert_eq!(tok.encode("é", false, false).unwrap(), [259, byte(0xC3), byte(0xA9)]);
    assert_eq!(tok.encode("", false, false).unwrap(), Vec::<u32>::new());
    assert_eq!(tok.encode("", true, false).unwrap(), [1]);
}

#[test]
fn spm_special_tokens_and_space_prefix() {
    let tok = Tokenizer::from_gguf(&tiny_gguf()).unwrap();
    // Parsed: <s> is the token, and the text after it gets a space prefix again.
    assert_eq!(tok.encode("<s>hello", false, true).unwrap(), [1, 269]);
    // Not parsed: "▁<s>hello" -> ▁ < s > he llo ("hello" without ▁ is no token).
    assert_eq!(
        tok.encode("<s>hello", false, false).unwrap(),
        [259, byte(b'<'), byte(b's'), byte(b'>'), 266, 268]
    );
}

#[test]
fn spm_decode_round_trips() {
    let tok = Tokenizer::from_gguf(&tiny_gguf()).unwrap();
    for text in ["hello", "hello world", "é and ü, 12 €", "  two leading spaces", "x\ny\tz"] {
        let ids = tok.encode(text, true, false).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), text, "ids {ids:?}");
    }
    assert_eq!(tok.decode(&[1, 269, 2], false).unwrap(), "<s>hello</s>");
    assert_eq!(tok.decode(&[1, 269, 2], true).unwrap(), "hello");
    assert_eq!(tok.token_to_piece(269).unwrap(), b" hello");
    assert_eq!(tok.token_to_piece(byte(0xC3)).unwrap(), [0xC3]);
    // A lone continuation byte is invalid UTF-8: U+FFFD, as HF tokenizers.
    assert_eq!(tok.decode(&[byte(0xA9)], false).unwrap(), "\u{FFFD}");
}
