//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): pre-tokenizers chosen by `tokenizer.ggml.pre`, the BPE
//! model of the HF `tokenizers` crate built from the GGUF vocabulary and merges, and GPT-2's byte <-> char map.
//!
//! Source: llama.cpp `src/llama-vocab.cpp` (`llm_tokenizer_bpe`: the regex list of each pre-tokenizer type
//! and the `tokenizer.ggml.pre` names that select it; `ignore_merges`), OpenAI GPT-2 `encoder.py`
//! (`bytes_to_unicode`).

use std::collections::HashMap;
use std::sync::OnceLock;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use super::TokenizerError;

/// GPT-2 regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_GPT2`).
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// LLaMA 3 regex as adapted by llama.cpp (case-insensitive contractions spelled out).
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 regex as adapted by llama.cpp (like LLaMA 3 but single digits).
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values this crate supports, for error messages.
pub const SUPPORTED_PRE: &[&str] = &[
    "default", "gpt-2", "phi-2", "mpt", "olmo", "smollm", "starcoder", "refact", "command-r", "codeshell",
    "exaone", "minerva-7b", "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe",
    "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2",
];

/// A byte-level BPE pre-tokenizer: the list of regexes llama.cpp applies one after the other (each splits
/// every piece into matches and the text between them), and whether a piece that is a whole vocabulary
/// token skips the merges (`ignore_merges`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreTokenizerSpec {
    /// The regexes, in the order they are applied.
    pub regexes: Vec<&'static str>,
    /// A pre-token that is itself in the vocabulary becomes that token without merging (LLaMA 3).
    pub ignore_merges: bool,
}

impl PreTokenizerSpec {
    /// The pre-tokenizer that llama.cpp selects for `tokenizer.ggml.pre = name`; `None` (key absent) is
    /// llama.cpp's `default`.
    ///
    /// Errors: [`TokenizerError::UnknownPre`] for a name this crate does not define exactly (llama.cpp
    /// knows more, e.g. `deepseek-llm`, whose hand-made character classes are not reproduced here).
    pub fn from_name(name: Option<&str>) -> Result<Self, TokenizerError> {
        let (regexes, ignore_merges): (Vec<&'static str>, bool) = match name.unwrap_or("default") {
            "default" => (
                vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"],
                false,
            ),
            "gpt-2" | "phi-2" | "mpt" | "olmo" => (vec![GPT2_RE], false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                (vec![r"\p{N}", GPT2_RE], false)
            }
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (vec![LLAMA3_RE], true),
            "dbrx" | "smaug-bpe" => (vec![LLAMA3_RE], false),
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => (vec![QWEN2_RE], false),
            other => return Err(TokenizerError::UnknownPre(other.to_string())),
        };
        Ok(Self { regexes, ignore_merges })
    }
}

/// Builds the HF tokenizer that encodes plain text (no special tokens) to ids: the BPE model over the
/// byte-level vocabulary, the regex splits of `spec`, then the byte-level mapping (no regex of its own, no
/// prefix space). No normalizer, no post-processor, no added tokens: special tokens are split off before.
///
/// `vocab` maps token text to id; `merges` are GGUF merge strings `"left right"` in rank order.
///
/// Errors: [`TokenizerError::Invalid`] for a malformed merge or a merge whose parts are not in the vocab.
pub(crate) fn build_hf(
    vocab: &HashMap<String, u32>,
    merges: &[String],
    spec: &PreTokenizerSpec,
) -> Result<HfTokenizer, TokenizerError> {
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        // As llama.cpp: split at the first space after the first byte (a part may itself be a space).
        let first = m.chars().next().map_or(0, char::len_utf8);
        let pos = m[first..].find(' ').map(|p| p + first).ok_or_else(|| {
            TokenizerError::Invalid(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space separator"))
        })?;
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(TokenizerError::Invalid(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?}: {part:?} is not in the vocabulary"
                )));
            }
        }
        pairs.push((a.to_string(), b.to_string()));
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab.iter().map(|(k, v)| (k.clone(), *v)).collect::<tokenizers::models::bpe::Vocab>(), pairs)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Invalid(format!("building the BPE model: {e}")))?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(spec.regexes.len() + 1);
    for re in &spec.regexes {
        let split = Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tok = HfTokenizer::new(model);
    tok.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(tok)
}

/// GPT-2's `bytes_to_unicode`: byte -> the printable char that stands for it in byte-level vocabularies
/// (`!`..`~`, `¡`..`¬`, `®`..`ÿ` map to themselves; the other 68 bytes to U+0100.. in byte order).
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..=255u8 {
            let keep = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
            t[b as usize] = if keep {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(255 + n).expect("U+0100..U+0143 are chars")
            };
        }
        t
    })
}

/// The inverse of [`byte_to_char`]: char -> byte, `None` for a char that stands for no byte.
pub fn char_to_byte(c: char) -> Option<u8> {
    static INV: OnceLock<HashMap<char, u8>> = OnceLock::new();
    INV.get_or_init(|| byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect())
        .get(&c)
        .copied()
}

/// Decodes a byte-level token text to its bytes; a text with a char outside the byte map is returned as its
/// own UTF-8 bytes (as the HF ByteLevel decoder does).
pub(crate) fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        // Hand-checked against GPT-2's encoder.py: space -> 'Ġ' (U+0120), '\n' -> 'Ċ' (U+010A),
        // 0x00 -> U+0100, 0xAD -> U+0143 (the last remapped byte), 'a' -> 'a'.
        let t = byte_to_char();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[0xAD], '\u{143}');
        assert_eq!(t[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
    }

    #[test]
    fn unknown_pre_is_an_error() {
        let e = PreTokenizerSpec::from_name(Some("no-such-pre")).unwrap_err();
        assert!(e.to_string().contains("no-such-pre"), "{e}");
        assert!(PreTokenizerSpec::from_name(Some("smollm")).is_ok());
        assert_eq!(PreTokenizerSpec::from_name(None).unwrap().regexes.len(), 4);
    }
}
