//! Chat templates rendered with minijinja against the same templates rendered by Python jinja2 in HF
//! transformers' environment (`scripts/ref/chat_template_ref.py`), on SmolLM2's template from the real GGUF
//! and on hand-written templates that use trim_blocks/lstrip_blocks, `raise_exception`, `.strip()`, loop
//! controls and filters. Fails (does not skip) when jinja2 or the asset is missing.

use std::path::PathBuf;
use std::process::Command;

use device_runtime::chat::{ChatError, ChatMessage, apply_chat_template, apply_model_chat_template};
use device_runtime::gguf::GgufFile;
use device_runtime::tokenizer::Tokenizer;
use serde::Deserialize;

/// JSON text of a serializable value (struct fields in declaration order).
fn js<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn smollm2_path() -> PathBuf {
    let dir = match std::env::var_os("LLAMANAS_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    };
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

fn smollm2() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(smollm2_path()).unwrap()).unwrap()
}

const LLAMA3_STYLE: &str = "{{- bos_token }}{% for message in messages %}{% if loop.index0 == 0 and message['role'] == 'system' %}{% set content = message['content'] | trim %}{% else %}{% set content = message['content'] %}{% endif %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const MISTRAL_STYLE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{% continue %}{% endif %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + eos_token }}{% endif %}{% endfor %}";

const BLOCKS_STYLE: &str = "{% for message in messages %}\n    {% if message.role == 'system' %}\nSystem: {{ message.content }}\n    {% else %}\n{{ message.role | capitalize }}: {{ message.content | replace('\\n', ' ') }}\n    {% endif %}\n    {% if loop.last and add_generation_prompt %}\nAssistant:\n    {% endif %}\n{% endfor %}\n";

const BREAK_STYLE: &str = "{% for m in messages %}{% if m.role == 'assistant' %}{% break %}{% endif %}{{ loop.index }}:{{ m.content | upper }}|{% endfor %}{{ messages | length }}";

const TOJSON_STYLE: &str = "{{ messages | tojson }}\n{{ messages[-1] | tojson(indent=2) }}{% if add_generation_prompt %}\n{{ {'n': messages | length, 'x': [1, 'a', none, true]} | tojson }}{% endif %}";

fn conversations() -> Vec<Vec<ChatMessage>> {
    let m = ChatMessage::new;
    vec![
        vec![m("user", "Hello!")],
        vec![m("system", "You are terse."), m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")],
        vec![m("user", "  spaced  \n"), m("assistant", "Ünïcödé 😀 {{ not a template }} {% raw %}\nline 2")],
        vec![m("assistant", "I speak first")],
    ]
}

#[derive(Deserialize)]
struct Rendered {
    ok: Option<String>,
    error: Option<String>,
}

#[test]
fn templates_match_jinja2() {
    let tok = smollm2();
    let smollm_template = tok.chat_template().expect("SmolLM2 GGUF has a chat template").to_string();
    let templates = [smollm_template.as_str(), LLAMA3_STYLE, MISTRAL_STYLE, BLOCKS_STYLE, BREAK_STYLE, TOJSON_STYLE];
    let (bos, eos) = ("<|im_start|>", "<|im_end|>");
    let mut cases = Vec::new();
    for t in templates {
        for conv in conversations() {
            for agp in [false, true] {
                cases.push((t, conv.clone(), agp));
            }
        }
    }
    // Written by hand so that message keys keep the order role, content (serde_json's Value would sort them,
    // and `tojson` output depends on the order, as Python dicts keep it).
    let input = format!(
        "[{}]",
        cases
            .iter()
            .map(|(t, conv, agp)| format!(
                r#"{{"template": {}, "messages": {}, "add_generation_prompt": {agp}, "bos_token": {}, "eos_token": {}}}"#,
                js(t),
                js(conv),
                js(bos),
                js(eos)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&inp, input).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ref/chat_template_ref.py");
    let out = Command::new("python3").arg(&script).arg(&inp).arg(&outp).output().expect("python3 must be installed");
    assert!(
        out.status.success(),
        "chat_template_ref.py failed (pip install jinja2==3.1.6):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<Rendered> = serde_json::from_slice(&std::fs::read(&outp).unwrap()).unwrap();
    assert_eq!(reference.len(), cases.len());
    let mut n_errors = 0;
    for ((t, conv, agp), r) in cases.iter().zip(&reference) {
        let got = apply_chat_template(t, conv, *agp, bos, eos);
        match (&r.ok, &r.error, got) {
            (Some(want), _, Ok(got)) => assert_eq!(&got, want, "template {t:?}\nmessages {conv:?} agp {agp}"),
            (None, Some(_), Err(ChatError::Render(msg))) => {
                n_errors += 1;
                assert!(msg.contains("roles must alternate"), "{msg}");
            }
            (_, _, got) => panic!("template {t:?} messages {conv:?}: jinja2 {:?}/{:?}, minijinja {got:?}", r.ok, r.error),
        }
    }
    // The mistral-style template rejects, in both renderers, the conversation that starts with the assistant
    // and the one with a system message (loop.index0 counts the skipped system turn): 2 x 2 cases.
    assert_eq!(n_errors, 4);
}

#[test]
fn smollm2_chatml_by_hand() {
    let tok = smollm2();
    let got = apply_model_chat_template(&tok, &[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let msgs = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    let got = apply_model_chat_template(&tok, &msgs, false).unwrap();
    assert_eq!(got, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    // The rendered prompt tokenizes with the ChatML tokens as single tokens.
    let ids = tok.encode(&got, false, true).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
}

#[test]
fn template_errors() {
    let e = apply_chat_template("{% for m in messages %}", &[], false, "", "").unwrap_err();
    assert!(matches!(e, ChatError::Syntax(_)), "{e}");
    let e = apply_chat_template("{{ no_such_function() }}", &[], false, "", "").unwrap_err();
    assert!(matches!(e, ChatError::Render(_)), "{e}");
    // A template is data from the file: a nested loop of 10^8 steps stops on its fuel, not after gigabytes.
    let t = "{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}";
    let e = apply_chat_template(t, &[], false, "", "").unwrap_err();
    assert!(matches!(e, ChatError::Render(_)) && e.to_string().contains("fuel"), "{e}");
}
