//! The runtime loads an exported sub-network and computes perplexity: the full-network F32 export of
//! SmolLM2-135M-Instruct reproduces llama.cpp's figure on /usr/share/common-licenses/GPL-3
//! (`llama-perplexity -c 512 -b 512` on the gguf-py-dequantized F32 file: 18.2994, docs/PERFORMANCE.md) within 0.5%.

use device_runtime::arch::ModelConfig;
use device_runtime::engine::{Model, Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{self, ExportQuant, Provenance};
use device_runtime::tokenizer::Tokenizer;

const GPL3: &str = "/usr/share/common-licenses/GPL-3";
const LLAMA_CPP_F32_PPL: f64 = 18.2994;

#[test]
fn full_f32_export_reproduces_llama_cpp_perplexity() {
    let base = GgufFile::open(llamanas_tests::smollm2_path()).unwrap();
    let full = ModelConfig::from_gguf(&base).unwrap().full_subnet();
    let out = std::env::temp_dir().join(format!("llamanas-export-ppl-{}.gguf", std::process::id()));
    let rep = subnet::export_subnet(&base, &full, ExportQuant::F32, &Provenance::for_base(&base), &out).unwrap();
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    drop(base);
    let m = Model::load(&out).unwrap();
    std::fs::remove_file(&out).unwrap(); // the map stays valid
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    let tokens = tok.encode(&text, true, false).unwrap();
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    let mut s = Session::new(&m, SessionOptions { n_ctx: 512, threads: 2, ..Default::default() }).unwrap();
    let p = perplexity(&mut s, &tokens, 512, bos, 0, |_, _| {}).unwrap();
    let rel = (p.ppl - LLAMA_CPP_F32_PPL).abs() / LLAMA_CPP_F32_PPL;
    eprintln!("F32 export: {} chunks, PPL {:.4} (llama.cpp {LLAMA_CPP_F32_PPL}, {:+.3}%)", p.n_chunks, p.ppl, 100.0 * (p.ppl - LLAMA_CPP_F32_PPL) / LLAMA_CPP_F32_PPL);
    assert_eq!(p.n_chunks, tokens.len() / 512);
    assert!(rel < 0.005, "PPL {:.4} vs llama.cpp {LLAMA_CPP_F32_PPL}: {:.3}% off", p.ppl, rel * 100.0);
}
