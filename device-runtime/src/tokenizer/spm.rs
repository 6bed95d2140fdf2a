//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`), as llama.cpp's `llm_tokenizer_spm`:
//! start from UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary
//! token of highest score (`tokenizer.ggml.scores`; ties: leftmost pair first), and emit every final piece
//! that is not a token as its bytes through the `<0xXX>` byte-fallback tokens.
//!
//! Source: llama.cpp `src/llama-vocab.cpp` (`llm_tokenizer_spm_session::tokenize`, `try_add_bigram`,
//! `resegment`, `byte_to_token`, `llama_escape_whitespace`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::TokenizerError;

/// The SentencePiece whitespace marker U+2581 ("▁") that stands for a space in the vocabulary.
pub const SPACE_MARKER: char = '\u{2581}';

/// One candidate merge of the adjacent symbols `left` and `right` (indices into the symbol list).
#[derive(Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the merged text, to detect a stale candidate (a side already merged elsewhere).
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the smaller left index (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// A symbol: a byte range of the text, linked to its neighbours; `len == 0` once merged into its left.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Tokenizes `text`, which must already have its spaces replaced by U+2581 (and the space prefix added),
/// appending ids to `out`.
///
/// `vocab` maps token text to id, `scores[id]` is the token's score. A piece that is no token is emitted
/// byte by byte through `byte_tokens[b]` (the `<0xXX>` tokens); a byte without one gives `unk` if the
/// vocabulary has an unknown token.
///
/// Errors: [`TokenizerError::NoByteToken`] when a byte has neither a byte token nor an unknown token.
pub(crate) fn tokenize(
    text: &str,
    vocab: &HashMap<String, u32>,
    scores: &[f32],
    byte_tokens: &[Option<u32>; 256],
    unk: Option<u32>,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: (start + len < text.len()).then_some(i + 1),
        });
    }
    if symbols.is_empty() {
        return Ok(());
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else { return };
        let (sl, sr) = (symbols[l], symbols[r]);
        let merged = &text[sl.start..sr.start + sr.len];
        if let Some(&id) = vocab.get(merged) {
            let score = scores.get(id as usize).copied().unwrap_or(0.0);
            queue.push(Bigram { left: l, right: r, score, size: merged.len() });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(b.left);
        }
        let left = symbols[b.left];
        try_add(&mut queue, &symbols, left.prev, Some(b.left));
        try_add(&mut queue, &symbols, Some(b.left), left.next);
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &text[s.start..s.start + s.len];
        match vocab.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    match byte_tokens[byte as usize].or(unk) {
                        Some(id) => out.push(id),
                        None => return Err(TokenizerError::NoByteToken(byte)),
                    }
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

/// The byte of a byte-fallback token text `<0xXX>` (two upper- or lower-case hex digits), else `None`.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
