//! Chat templates: render a conversation into the prompt text the model was fine-tuned on, from the Jinja
//! template stored in the GGUF (`tokenizer.chat_template`; ChatML for SmolLM2).
//!
//! Rendering follows HF transformers' `apply_chat_template` (`utils/chat_template_utils.py`): a Jinja
//! environment with `trim_blocks` and `lstrip_blocks`, loop controls (`break`/`continue`), a
//! `raise_exception(msg)` function, and the variables `messages` (a list of `{role, content}`),
//! `add_generation_prompt`, `bos_token`, `eos_token`. The engine is the `minijinja` crate, with
//! `minijinja-contrib`'s Python-compatible string/dict methods (`.strip()`, `.startswith()`, `.items()`, ...),
//! and a `tojson` filter that writes what transformers' `tojson` (Python `json.dumps(ensure_ascii=False)`)
//! writes: `", "`/`": "` separators, or `indent=n`.
//! Not provided: `strftime_now`, tools and documents (templates that need them fail with an error).

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Errors of rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The model has no `tokenizer.chat_template`.
    #[error("the model has no chat template (GGUF key `tokenizer.chat_template`)")]
    NoTemplate,
    /// The template does not parse (Jinja syntax error); the message gives the line.
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    /// Rendering failed: `raise_exception` was called (e.g. roles not alternating), or an undefined
    /// function/method was used.
    #[error("chat template rendering failed: {0}")]
    Render(String),
}

/// Full description of a minijinja error, including its source chain.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// serde_json formatter with Python `json.dumps`'s default separators `", "` and `": "` (no indent).
struct PySeparators;

impl serde_json::ser::Formatter for PySeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// The `tojson` filter of transformers' chat templates: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut buf = Vec::new();
    let res = match indent {
        None => serde::Serialize::serialize(&value, &mut serde_json::Serializer::with_formatter(&mut buf, PySeparators)),
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            serde::Serialize::serialize(&value, &mut serde_json::Serializer::with_formatter(&mut buf, fmt))
        }
    };
    res.map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let s = String::from_utf8(buf).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from(s))
}

/// Instructions a chat template may execute (minijinja's fuel) before rendering stops with an error.
pub const CHAT_TEMPLATE_FUEL: u64 = 2_000_000;

/// Renders `template` for `messages` as HF `apply_chat_template(messages, add_generation_prompt=...,
/// tokenize=False)` does, with `bos_token`/`eos_token` as template variables.
///
/// Errors: [`ChatError::Syntax`] for a template that does not parse, [`ChatError::Render`] when rendering
/// fails (including `raise_exception`, and a template that runs out of [`CHAT_TEMPLATE_FUEL`]).
pub fn apply_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // A template is data from the model file: bound its work (a nested loop of 10^8 steps would render for
    // minutes and gigabytes). A long conversation with SmolLM2's template takes a few thousand steps.
    env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    env.add_template("chat_template", template).map_err(|e| ChatError::Syntax(describe(&e)))?;
    let tmpl = env.get_template("chat_template").map_err(|e| ChatError::Syntax(describe(&e)))?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| ChatError::Render(describe(&e)))
}

/// Renders the model's own chat template (`tokenizer.chat_template`) with its BOS/EOS token texts.
///
/// Errors: [`ChatError::NoTemplate`], and those of [`apply_chat_template`].
pub fn apply_model_chat_template(
    tok: &Tokenizer,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    let template = tok.chat_template().ok_or(ChatError::NoTemplate)?;
    let text = |id: Option<u32>| {
        id.and_then(|i| tok.token_to_piece(i).ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    };
    apply_chat_template(template, messages, add_generation_prompt, &text(tok.bos()), &text(tok.eos()))
}
