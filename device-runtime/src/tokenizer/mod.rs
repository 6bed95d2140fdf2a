//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`).
//!
//! Two models, as in llama.cpp (`src/llama-vocab.cpp`):
//! - `gpt2`: byte-level BPE. The text is split by the regexes of the pre-tokenizer named by
//!   `tokenizer.ggml.pre` (see [`bpe::PreTokenizerSpec`]; an unknown name is an error), each piece is mapped
//!   to GPT-2's printable byte chars and merged by rank (`tokenizer.ggml.merges`). The BPE itself is the HF
//!   `tokenizers` crate's model, built from the GGUF vocabulary and merges (no network, no tokenizer.json).
//! - `llama`: SentencePiece-style score-based merges with `<0xXX>` byte fallback ([`spm`]), spaces written as
//!   U+2581, an optional space prefix (`tokenizer.ggml.add_space_prefix`).
//!
//! Special tokens (token types CONTROL and UNKNOWN) are recognized in the text only when asked
//! (`parse_special`); USER_DEFINED tokens always are (llama.cpp's `tokenizer_st_partition`, and the HF
//! convention: non-special added tokens are always split off). Matching is leftmost-longest, as the HF
//! added-vocabulary matcher.
//!
//! Token types (`tokenizer.ggml.token_type`, gguf-py `TokenType`): 1 NORMAL, 2 UNKNOWN, 3 CONTROL,
//! 4 USER_DEFINED, 5 UNUSED, 6 BYTE.

pub mod bpe;
pub mod spm;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::gguf::{GgufError, GgufFile};

/// Token type NORMAL (`tokenizer.ggml.token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// Token type UNKNOWN (e.g. `<unk>`).
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// Token type CONTROL (e.g. `<s>`, `<|im_start|>`).
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// Token type USER_DEFINED (added tokens that are not special).
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// Token type UNUSED.
pub const TOKEN_TYPE_UNUSED: i32 = 5;
/// Token type BYTE (SentencePiece byte fallback `<0xXX>`).
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// Token texts that end generation when the vocabulary has them (llama.cpp `special_eog_ids`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
];

/// Errors of building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Reading the GGUF metadata failed (missing key, wrong value type); the error names file and key.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A `tokenizer.*` array key holds elements of the wrong type.
    #[error("{file}: GGUF metadata key `{key}` must be an array of {expected}")]
    BadArray {
        /// The GGUF file.
        file: String,
        /// The key.
        key: &'static str,
        /// The element type expected, e.g. "strings".
        expected: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("unknown tokenizer model `{0}` (tokenizer.ggml.model); supported: gpt2, llama")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unknown pre-tokenizer `{0}` (tokenizer.ggml.pre); supported: {list}", list = bpe::SUPPORTED_PRE.join(", "))]
    UnknownPre(String),
    /// The metadata is inconsistent (lengths, ids out of range, malformed merges, ...).
    #[error("invalid tokenizer metadata: {0}")]
    Invalid(String),
    /// A token id passed to decode is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary of {n_vocab} tokens)")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// A byte has no `<0xXX>` token and the vocabulary has no unknown token (SentencePiece model).
    #[error("byte 0x{0:02X} has no <0x{0:02X}> token and the vocabulary has no unknown token")]
    NoByteToken(u8),
    /// The HF `tokenizers` BPE failed on a piece of text.
    #[error("BPE tokenization failed: {0}")]
    Bpe(String),
}

/// Everything the tokenizer needs from the GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
///
/// Source of the keys: ggml `docs/gguf.md` ("Tokenizer") and gguf-py `constants.py` (`Keys.Tokenizer`).
/// Serializable so that tests can feed a JSON dump written by an independent reader (gguf-py).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerMetadata {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece-style).
    pub model: String,
    /// `tokenizer.ggml.pre`: the BPE pre-tokenizer (e.g. `smollm`); `None` means llama.cpp's `default`.
    #[serde(default)]
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: one type per token (see `TOKEN_TYPE_*`); empty means all NORMAL.
    #[serde(default)]
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: BPE merges `"left right"`, highest priority first (BPE only).
    #[serde(default)]
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores`: one score per token (SentencePiece; absent means all 0).
    #[serde(default)]
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.bos_token_id`.
    #[serde(default)]
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    #[serde(default)]
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    #[serde(default)]
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    #[serde(default)]
    pub pad: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (end of turn; ends generation).
    #[serde(default)]
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id` (end of message; ends generation).
    #[serde(default)]
    pub eom: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; when absent, llama.cpp's default (SPM and LLaMA-3 BPE: true).
    #[serde(default)]
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`; when absent, false.
    #[serde(default)]
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix`; when absent, true for SPM (ignored by BPE, as llama.cpp does).
    #[serde(default)]
    pub add_space_prefix: bool,
    /// `tokenizer.chat_template`: the Jinja chat template, if the file has one.
    #[serde(default)]
    pub chat_template: Option<String>,
}


impl TokenizerMetadata {
    /// Reads the tokenizer metadata of a GGUF file.
    ///
    /// Required keys: `tokenizer.ggml.model`, `tokenizer.ggml.tokens`; the others are optional. When the
    /// `add_*` flags are absent they take llama.cpp's defaults: `add_bos` for `llama` (SPM) and LLaMA-3
    /// pre-tokenizers, `add_space_prefix` for `llama`, `add_eos` never.
    ///
    /// Errors: [`TokenizerError::Gguf`] (missing key / wrong type, naming file and key),
    /// [`TokenizerError::BadArray`] for an array with elements of the wrong type.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, TokenizerError> {
        gguf_meta::read(f)
    }
}

mod gguf_meta;

/// A piece of the input: plain text, or a special token recognized in it.
#[derive(Debug, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// Leftmost-longest matcher of special-token texts.
#[derive(Debug, Default)]
struct SpecialMatcher {
    /// Candidates by first byte: (text, id, matched even without `parse_special`), longest first.
    by_first: HashMap<u8, Vec<(String, u32, bool)>>,
}

impl SpecialMatcher {
    fn new(tokens: &[String], types: &[i32]) -> Self {
        let mut by_first: HashMap<u8, Vec<(String, u32, bool)>> = HashMap::new();
        for (id, (text, &ty)) in tokens.iter().zip(types).enumerate() {
            let always = ty == TOKEN_TYPE_USER_DEFINED;
            if !(always || ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN) || text.is_empty() {
                continue;
            }
            by_first.entry(text.as_bytes()[0]).or_default().push((text.clone(), id as u32, always));
        }
        for v in by_first.values_mut() {
            // Longest first; among equal texts (duplicates), the lowest id.
            v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        Self { by_first }
    }

    /// Splits `text` into plain-text fragments and special tokens.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut out = Vec::new();
        if self.by_first.is_empty() {
            if !text.is_empty() {
                out.push(Fragment::Text(text));
            }
            return out;
        }
        let bytes = text.as_bytes();
        let (mut start, mut i) = (0usize, 0usize);
        while i < bytes.len() {
            let found = self.by_first.get(&bytes[i]).and_then(|cands| {
                cands.iter().find(|(t, _, always)| (*always || parse_special) && bytes[i..].starts_with(t.as_bytes()))
            });
            match found {
                Some((t, id, _)) => {
                    if start < i {
                        out.push(Fragment::Text(&text[start..i]));
                    }
                    out.push(Fragment::Token(*id));
                    i += t.len();
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < bytes.len() {
            out.push(Fragment::Text(&text[start..]));
        }
        out
    }
}

/// The model-specific part of a tokenizer.
enum Model {
    /// Byte-level BPE: the HF tokenizer for plain text.
    Bpe(Box<tokenizers::Tokenizer>),
    /// SentencePiece-style: vocabulary, scores and byte-fallback tokens.
    Spm { vocab: HashMap<String, u32>, scores: Vec<f32>, byte_tokens: Box<[Option<u32>; 256]> },
}

/// A tokenizer built from GGUF metadata: text -> token ids and back, with the model's special tokens.
///
/// Thread-safe (`Send + Sync`); encoding takes `&self`.
pub struct Tokenizer {
    model: Model,
    meta: TokenizerMetadata,
    specials: SpecialMatcher,
    eog: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.meta.model)
            .field("pre", &self.meta.pre)
            .field("n_vocab", &self.meta.tokens.len())
            .field("bos", &self.meta.bos)
            .field("eos", &self.meta.eos)
            .finish_non_exhaustive()
    }
}

fn check_id(what: &str, id: Option<u32>, n: usize) -> Result<(), TokenizerError> {
    match id {
        Some(id) if id as usize >= n => Err(TokenizerError::Invalid(format!(
            "{what} = {id} is out of range (vocabulary of {n} tokens)"
        ))),
        _ => Ok(()),
    }
}

impl Tokenizer {
    /// Builds a tokenizer from its metadata.
    ///
    /// Errors: [`TokenizerError::UnknownModel`] / [`TokenizerError::UnknownPre`] for a model or
    /// pre-tokenizer this crate does not implement; [`TokenizerError::Invalid`] when the arrays have
    /// different lengths, a special-token id is out of range, `add_bos`/`add_eos` is set without a BOS/EOS
    /// id, or a merge is malformed.
    pub fn from_metadata(mut m: TokenizerMetadata) -> Result<Tokenizer, TokenizerError> {
        let n = m.tokens.len();
        if n == 0 {
            return Err(TokenizerError::Invalid("tokenizer.ggml.tokens is empty".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::Invalid(format!("{n} tokens do not fit u32 ids")));
        }
        if m.token_types.is_empty() {
            m.token_types = vec![TOKEN_TYPE_NORMAL; n];
        } else if m.token_types.len() != n {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens",
                m.token_types.len()
            )));
        }
        if let Some(s) = &m.scores
            && s.len() != n
        {
            return Err(TokenizerError::Invalid(format!("tokenizer.ggml.scores has {} entries for {n} tokens", s.len())));
        }
        check_id("tokenizer.ggml.bos_token_id", m.bos, n)?;
        check_id("tokenizer.ggml.eos_token_id", m.eos, n)?;
        check_id("tokenizer.ggml.unknown_token_id", m.unk, n)?;
        check_id("tokenizer.ggml.padding_token_id", m.pad, n)?;
        check_id("tokenizer.ggml.eot_token_id", m.eot, n)?;
        check_id("tokenizer.ggml.eom_token_id", m.eom, n)?;
        if m.add_bos && m.bos.is_none() {
            return Err(TokenizerError::Invalid("tokenizer.ggml.add_bos_token is set but there is no BOS id".into()));
        }
        if m.add_eos && m.eos.is_none() {
            return Err(TokenizerError::Invalid("tokenizer.ggml.add_eos_token is set but there is no EOS id".into()));
        }

        // As llama.cpp's token_to_id: a duplicated text maps to its last id.
        let vocab: HashMap<String, u32> = m.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let model = match m.model.as_str() {
            "gpt2" => {
                let spec = bpe::PreTokenizerSpec::from_name(m.pre.as_deref())?;
                Model::Bpe(Box::new(bpe::build_hf(&vocab, &m.merges, &spec)?))
            }
            "llama" => {
                let scores = m.scores.clone().unwrap_or_else(|| vec![0.0; n]);
                let mut byte_tokens = Box::new([None; 256]);
                for (id, (t, &ty)) in m.tokens.iter().zip(&m.token_types).enumerate() {
                    if ty == TOKEN_TYPE_BYTE
                        && let Some(b) = spm::parse_byte_token(t)
                    {
                        byte_tokens[b as usize].get_or_insert(id as u32);
                    }
                }
                // llama.cpp's byte_to_token falls back to the token whose text is the byte itself.
                for b in 0..128u8 {
                    if byte_tokens[b as usize].is_none()
                        && let Some(&id) = vocab.get(&char::from(b).to_string())
                    {
                        byte_tokens[b as usize] = Some(id);
                    }
                }
                Model::Spm { vocab, scores, byte_tokens }
            }
            other => return Err(TokenizerError::UnknownModel(other.to_string())),
        };

        let specials = SpecialMatcher::new(&m.tokens, &m.token_types);
        let mut eog: HashSet<u32> = [m.eos, m.eot, m.eom].into_iter().flatten().collect();
        for (id, t) in m.tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.insert(id as u32);
            }
        }
        Ok(Tokenizer { model, meta: m, specials, eog })
    }

    /// Builds the tokenizer of a GGUF file ([`TokenizerMetadata::from_gguf`] + [`Tokenizer::from_metadata`]).
    ///
    /// Errors: those of both steps.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Self::from_metadata(TokenizerMetadata::from_gguf(f)?)
    }

    /// The metadata the tokenizer was built from.
    pub fn metadata(&self) -> &TokenizerMetadata {
        &self.meta
    }

    /// Encodes `text` to token ids.
    ///
    /// - `add_special`: add BOS in front / EOS at the end when the model asks for it (`add_bos`, `add_eos`).
    /// - `parse_special`: recognize CONTROL/UNKNOWN token texts such as `<|im_start|>` in `text` as those
    ///   tokens; otherwise they are tokenized as plain text. USER_DEFINED tokens are always recognized.
    ///
    /// SPM: a space is put in front of the text and after every special token when `add_space_prefix`, and
    /// spaces become U+2581 (llama.cpp `llm_tokenizer_spm`).
    ///
    /// Errors: [`TokenizerError::Bpe`] if the BPE model fails; [`TokenizerError::NoByteToken`] (SPM).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.meta.add_bos {
            out.extend(self.meta.bos);
        }
        let fragments = self.specials.partition(text, parse_special);
        match &self.model {
            Model::Bpe(hf) => {
                for f in fragments {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            let enc = hf.encode_fast(t, false).map_err(|e| TokenizerError::Bpe(e.to_string()))?;
                            out.extend_from_slice(enc.get_ids());
                        }
                    }
                }
            }
            Model::Spm { vocab, scores, byte_tokens } => {
                let mut prev_special = true;
                for f in fragments {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if self.meta.add_space_prefix && prev_special {
                                s.push(spm::SPACE_MARKER);
                            }
                            s.extend(t.chars().map(|c| if c == ' ' { spm::SPACE_MARKER } else { c }));
                            spm::tokenize(&s, vocab, scores, byte_tokens, self.meta.unk, &mut out)?;
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.meta.add_eos {
            out.extend(self.meta.eos);
        }
        Ok(out)
    }

    fn token_type(&self, id: u32) -> Result<i32, TokenizerError> {
        self.meta
            .token_types
            .get(id as usize)
            .copied()
            .ok_or(TokenizerError::IdOutOfRange { id, n_vocab: self.meta.tokens.len() })
    }

    /// Appends the bytes of token `id` to `out` (special tokens as their text).
    fn piece_into(&self, id: u32, out: &mut Vec<u8>) -> Result<(), TokenizerError> {
        let ty = self.token_type(id)?;
        let text = &self.meta.tokens[id as usize];
        match ty {
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED => out.extend_from_slice(text.as_bytes()),
            TOKEN_TYPE_UNUSED => {}
            _ => match &self.model {
                Model::Bpe(_) => bpe::decode_byte_level(text, out),
                Model::Spm { .. } => match (ty, spm::parse_byte_token(text)) {
                    (TOKEN_TYPE_BYTE, Some(b)) => out.push(b),
                    _ => {
                        for c in text.chars() {
                            let c = if c == spm::SPACE_MARKER { ' ' } else { c };
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                },
            },
        }
        Ok(())
    }

    /// The bytes token `id` stands for, for streaming output: special tokens as their text, SPM spaces as
    /// spaces, byte tokens as their single byte (so a piece may be part of a UTF-8 sequence).
    ///
    /// Errors: [`TokenizerError::IdOutOfRange`].
    pub fn token_to_piece(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        self.piece_into(id, &mut out)?;
        Ok(out)
    }

    /// Decodes token ids to text; `skip_special` drops CONTROL/UNKNOWN tokens (USER_DEFINED are kept).
    ///
    /// SPM with `add_space_prefix`: the space that encoding put in front of the text (and after each special
    /// token) is removed again, so that `decode(encode(t)) == t`. Invalid UTF-8 (e.g. a sequence cut in the
    /// middle of a character) becomes U+FFFD, as in HF `tokenizers`.
    ///
    /// Errors: [`TokenizerError::IdOutOfRange`].
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let strip_prefix = matches!(self.model, Model::Spm { .. }) && self.meta.add_space_prefix;
        let mut out = Vec::with_capacity(ids.len() * 4);
        let mut strip_next = strip_prefix;
        for &id in ids {
            let ty = self.token_type(id)?;
            match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => {
                    if !skip_special {
                        self.piece_into(id, &mut out)?;
                    }
                    strip_next = strip_prefix;
                }
                TOKEN_TYPE_USER_DEFINED => {
                    self.piece_into(id, &mut out)?;
                    strip_next = strip_prefix;
                }
                TOKEN_TYPE_UNUSED => {}
                _ => {
                    let start = out.len();
                    self.piece_into(id, &mut out)?;
                    if strip_next && out.get(start) == Some(&b' ') {
                        out.remove(start);
                    }
                    strip_next = false;
                }
            }
        }
        Ok(match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.meta.tokens.len()
    }

    /// The BOS token id (`tokenizer.ggml.bos_token_id`).
    pub fn bos(&self) -> Option<u32> {
        self.meta.bos
    }

    /// The EOS token id (`tokenizer.ggml.eos_token_id`).
    pub fn eos(&self) -> Option<u32> {
        self.meta.eos
    }

    /// Whether `id` ends generation: EOS, EOT, EOM, or a token such as `<|im_end|>` / `<|endoftext|>` /
    /// `<|eot_id|>` (llama.cpp's end-of-generation set).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The text of token `id` as stored in the vocabulary (byte-level / U+2581 form), if in range.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.meta.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the token whose vocabulary text is exactly `text` (e.g. `"<|im_start|>"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        // Lowest id wins for duplicates: linear scan is fine for the rare callers (chat setup, tests).
        self.meta.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }

    /// The chat template of the model (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.meta.chat_template.as_deref()
    }
}

/// Incremental detokenizer for streaming generation output: feed ids one at a time, get back the text that
/// is complete so far. Bytes of a UTF-8 character split over several tokens (byte-level BPE, `<0xXX>`
/// tokens) are held until the character is complete; invalid bytes become U+FFFD.
///
/// Unlike [`Tokenizer::decode`], no SPM space prefix is removed: generated text continues a prompt.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder over `tok`; `skip_special` drops CONTROL/UNKNOWN tokens (e.g. `<|im_end|>`).
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        Self { tok, skip_special, pending: Vec::new() }
    }

    /// Adds token `id`; returns the text completed by it (possibly empty).
    ///
    /// Errors: [`TokenizerError::IdOutOfRange`].
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let ty = self.tok.token_type(id)?;
        if self.skip_special && (ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN) {
            return Ok(String::new());
        }
        self.tok.piece_into(id, &mut self.pending)?;
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"));
                    match e.error_len() {
                        // Incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ends the stream: the bytes still held (an incomplete character) as U+FFFD, or an empty string.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_leftmost_longest() {
        let tokens: Vec<String> = ["<a>", "<ab>", "x", "<u>"].iter().map(|s| s.to_string()).collect();
        let types = vec![TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED];
        let m = SpecialMatcher::new(&tokens, &types);
        assert_eq!(
            m.partition("1<ab>2<a><u>3", true),
            vec![
                Fragment::Text("1"),
                Fragment::Token(1),
                Fragment::Text("2"),
                Fragment::Token(0),
                Fragment::Token(3),
                Fragment::Text("3")
            ]
        );
        // Without parse_special only the USER_DEFINED token is split off.
        assert_eq!(
            m.partition("1<ab>2<a><u>3", false),
            vec![Fragment::Text("1<ab>2<a>"), Fragment::Token(3), Fragment::Text("3")]
        );
        assert_eq!(m.partition("", true), vec![]);
    }

    /// A tiny byte-level BPE vocabulary: the 256 byte chars, then "ab" (merge "a b"), then one CONTROL token.
    fn tiny_bpe() -> TokenizerMetadata {
        let mut tokens: Vec<String> = bpe::byte_to_char().iter().map(|c| c.to_string()).collect();
        tokens.push("ab".into());
        tokens.push("<|end|>".into());
        let mut token_types = vec![TOKEN_TYPE_NORMAL; 257];
        token_types.push(TOKEN_TYPE_CONTROL);
        TokenizerMetadata {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens,
            token_types,
            merges: vec!["a b".into()],
            scores: None,
            bos: None,
            eos: Some(257),
            unk: None,
            pad: None,
            eot: None,
            eom: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
            chat_template: None,
        }
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn tiny_bpe_encodes_and_decodes() {
        let tok = Tokenizer::from_metadata(tiny_bpe()).unwrap();
        // "ab" merges; " " is byte 0x20 -> its byte char; "c" stays a single byte token.
        assert_eq!(tok.encode("ab c<|end|>", false, true).unwrap(), [256, 32, 99, 257]);
        assert_eq!(tok.decode(&[256, 32, 99, 257], true).unwrap(), "ab c");
        assert!(tok.is_eog(257));
    }

    #[test]
    fn invalid_metadata_is_rejected() {
        let err = |m: TokenizerMetadata| Tokenizer::from_metadata(m).unwrap_err().to_string();
        let mut m = tiny_bpe();
        m.token_types.pop();
        assert!(err(m).contains("token_type has 257 entries for 258 tokens"));
        let mut m = tiny_bpe();
        m.eos = Some(258);
        assert!(err(m).contains("eos_token_id = 258 is out of range"));
        let mut m = tiny_bpe();
        m.add_bos = true;
        assert!(err(m).contains("no BOS id"));
        let mut m = tiny_bpe();
        m.merges.push("x zz".into());
        assert!(err(m).contains("\"zz\" is not in the vocabulary"));
        let mut m = tiny_bpe();
        m.merges.push("nospace".into());
        assert!(err(m).contains("no space separator"));
        let mut m = tiny_bpe();
        m.model = "bert".into();
        assert!(err(m).contains("unknown tokenizer model `bert`"));
        let mut m = tiny_bpe();
        m.scores = Some(vec![0.0; 3]);
        assert!(err(m).contains("scores has 3 entries"));
        let mut m = tiny_bpe();
        m.tokens.clear();
        m.token_types.clear();
        assert!(err(m).contains("empty"));
    }
}
