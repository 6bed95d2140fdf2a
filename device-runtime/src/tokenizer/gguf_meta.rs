//! Reading [`TokenizerMetadata`] from a GGUF file's metadata.
//!
//! Keys: ggml `docs/gguf.md` ("Tokenizer"), gguf-py `constants.py` (`Keys.Tokenizer`); defaults of the
//! `add_*` flags when a key is absent: llama.cpp `llama_vocab::impl::load`.

use super::{TokenizerError, TokenizerMetadata};
use crate::gguf::{GgufError, GgufFile, MetaValue};

/// Pre-tokenizer names for which llama.cpp adds BOS by default (LLaMA 3 family).
const ADD_BOS_PRES: &[&str] = &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"];

fn bad(f: &GgufFile, key: &'static str, expected: &'static str) -> TokenizerError {
    TokenizerError::BadArray { file: f.name().to_string(), key, expected }
}

fn opt_array<T>(
    f: &GgufFile,
    key: &'static str,
    expected: &'static str,
    conv: impl Fn(&MetaValue) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => {
            let arr = v.as_array().ok_or_else(|| bad(f, key, expected))?;
            arr.iter().map(|v| conv(&v)).collect::<Option<Vec<T>>>().map(Some).ok_or_else(|| bad(f, key, expected))
        }
    }
}

/// See [`TokenizerMetadata::from_gguf`].
pub(super) fn read(f: &GgufFile) -> Result<TokenizerMetadata, TokenizerError> {
    let model = f.get_str("tokenizer.ggml.model")?.to_string();
    let pre = f.opt_str("tokenizer.ggml.pre")?.map(str::to_string);
    let tokens = opt_array(f, "tokenizer.ggml.tokens", "strings", |v| v.as_str().map(str::to_string))?
        .ok_or_else(|| GgufError::MissingKey { file: f.name().to_string(), key: "tokenizer.ggml.tokens".into() })?;
    let token_types = opt_array(f, "tokenizer.ggml.token_type", "32-bit integers", MetaValue::as_i32)?.unwrap_or_default();
    let merges =
        opt_array(f, "tokenizer.ggml.merges", "strings", |v| v.as_str().map(str::to_string))?.unwrap_or_default();
    let scores = opt_array(f, "tokenizer.ggml.scores", "floats", MetaValue::as_f32)?;
    let spm = model == "llama";
    let llama3 = pre.as_deref().is_some_and(|p| ADD_BOS_PRES.contains(&p));
    Ok(TokenizerMetadata {
        pre,
        tokens,
        token_types,
        merges,
        scores,
        bos: f.opt_u32("tokenizer.ggml.bos_token_id")?,
        eos: f.opt_u32("tokenizer.ggml.eos_token_id")?,
        unk: f.opt_u32("tokenizer.ggml.unknown_token_id")?,
        pad: f.opt_u32("tokenizer.ggml.padding_token_id")?,
        eot: f.opt_u32("tokenizer.ggml.eot_token_id")?,
        eom: f.opt_u32("tokenizer.ggml.eom_token_id")?,
        add_bos: f.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm || llama3),
        add_eos: f.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        add_space_prefix: f.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(spm),
        chat_template: f.opt_str("tokenizer.chat_template")?.map(str::to_string),
        model,
    })
}
