//! The activation observer hook (`Session::prefill_observed`, used by `llamanas import` for importance
//! scores): same logits as `prefill`, one call per block and batch with the documented shapes, and values
//! checked by hand on the first token (attention over a single position returns that position's V).

mod engine_common;
use device_runtime::engine::{ActivationObserver, Logits, Model, Session, SessionOptions};
use device_runtime::gguf::{GgmlType, GgufFile};
use device_runtime::quant::dequant::dequantize_to_vec;
use engine_common::*;

const L: TinyLayer = TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 96 };

#[derive(Default)]
struct Recorder {
    /// (layer, n_tokens, values)
    att: Vec<(usize, usize, Vec<f32>)>,
    ffn: Vec<(usize, usize, Vec<f32>)>,
}

impl ActivationObserver for Recorder {
    fn attention(&mut self, layer: usize, n_tokens: usize, att: &[f32]) {
        self.att.push((layer, n_tokens, att.to_vec()));
    }
    fn ffn_hidden(&mut self, layer: usize, n_tokens: usize, hidden: &[f32]) {
        self.ffn.push((layer, n_tokens, hidden.to_vec()));
    }
}

fn tensor(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap();
    dequantize_to_vec(t.ty, f.tensor_data(t)).unwrap()
}

#[test]
fn observed_prefill_reports_activations_and_keeps_logits() {
    let bytes = tiny_gguf("llama", &[L, L], GgmlType::F32, |_| {});
    let f = GgufFile::from_bytes(bytes.clone(), "tiny.gguf").unwrap();
    let model = Model::from_gguf(GgufFile::from_bytes(bytes, "tiny.gguf").unwrap()).unwrap();
    let tokens = [3u32, 17, 5, 39, 0];
    let opts = SessionOptions { n_ctx: 32, threads: 2, n_batch: 3, ..Default::default() };
    let plain = Session::new(&model, opts).unwrap().prefill(&tokens, Logits::All).unwrap();
    let mut rec = Recorder::default();
    let observed = Session::new(&model, opts).unwrap().prefill_observed(&tokens, Logits::All, &mut rec).unwrap();
    assert_eq!(plain, observed);

    // Two batches (3 + 2 tokens) x two blocks, in block order within a batch.
    let calls: Vec<(usize, usize)> = rec.att.iter().map(|(l, n, _)| (*l, *n)).collect();
    assert_eq!(calls, vec![(0, 3), (1, 3), (0, 2), (1, 2)]);
    let calls: Vec<(usize, usize)> = rec.ffn.iter().map(|(l, n, _)| (*l, *n)).collect();
    assert_eq!(calls, vec![(0, 3), (1, 3), (0, 2), (1, 2)]);
    for (_, n, v) in &rec.att {
        assert_eq!(v.len(), n * 4 * 16); // [n_tokens, n_head*head_dim]
    }
    for (_, n, v) in &rec.ffn {
        assert_eq!(v.len(), n * 96); // [n_tokens, n_ff]
    }

    // Token 0 of block 0 attends only to itself: query head j returns V of KV head j/2, with
    // v = Wv · (rmsnorm(x) * attn_norm) and x the token's embedding (computed here from the file).
    let (d, hd) = (64usize, 16usize);
    let emb = tensor(&f, "token_embd.weight");
    let x = &emb[tokens[0] as usize * d..(tokens[0] as usize + 1) * d];
    let norm = tensor(&f, "blk.0.attn_norm.weight");
    let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
    let h: Vec<f32> = x.iter().zip(&norm).map(|(v, w)| v / (ms + 1e-5).sqrt() * w).collect();
    let wv = tensor(&f, "blk.0.attn_v.weight"); // [d, 2*hd]: 32 rows of d
    let v: Vec<f32> = (0..2 * hd).map(|r| (0..d).map(|c| wv[r * d + c] * h[c]).sum()).collect();
    let att0 = &rec.att[0].2[..4 * hd];
    for j in 0..4 {
        for i in 0..hd {
            let (got, want) = (att0[j * hd + i], v[(j / 2) * hd + i]);
            assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "head {j} dim {i}: {got} vs {want}");
        }
    }
}
