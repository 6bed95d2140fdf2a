//! Trainer tests on the tiny elastic model of [`super::toy`].

use std::path::Path;

use burn::tensor::Device;
use device_runtime::arch::ModelConfig;
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};

use super::data::Example;
use super::sample::{SplitMix64, SubnetPlan};
use super::toy::ToyLm;
use super::train::ElasticLm;
use super::*;
use crate::space::{LayerMode, SearchSpace};

const N_LAYERS: usize = 4;

fn cfg() -> ModelConfig {
    ModelConfig {
        arch: "llama".into(),
        n_layers: N_LAYERS,
        d_model: 16,
        n_vocab: 32,
        n_ctx_train: 64,
        head_dim: 16,
        rope_dim: 16,
        rope_freq_base: 10000.0,
        rope_neox: false,
        rms_eps: 1e-5,
        ffn: vec![64; N_LAYERS],
        n_heads: vec![1; N_LAYERS],
        n_kv_heads: vec![1; N_LAYERS],
        tied_embeddings: true,
        name: None,
    }
}

fn space() -> SearchSpace {
    SearchSpace {
        n_layers: N_LAYERS,
        layer_mode: LayerMode::AnySubset,
        min_layers: 2,
        ffn_choices: vec![vec![16, 32, 64]; N_LAYERS],
        kv_choices: vec![vec![1]; N_LAYERS],
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

/// Sequences following `next = (3 * prev + 1) mod 32`, random starts, loss on the second half.
fn examples() -> Vec<Example> {
    let mut rng = SplitMix64::new(9);
    (0..24)
        .map(|_| {
            let mut t = vec![rng.below(32) as u32];
            for _ in 1..12 {
                t.push((3 * t.last().unwrap() + 1) % 32);
            }
            Example { target: (0..12).map(|i| i >= 4).collect(), tokens: t }
        })
        .collect()
}

fn template(model: &ToyLm) -> GgufFile {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("toy".into()));
    for (name, dims, data) in model.gguf_tensors() {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(&name, &dims, GgmlType::F32, bytes).unwrap();
    }
    GgufFile::from_bytes(w.to_bytes().unwrap(), "toy.gguf").unwrap()
}

fn read_tensors(path: &Path) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors().iter().map(|t| (t.name.clone(), t.dims.clone(), f.tensor_f32(t).unwrap().to_vec())).collect()
}

fn load(path: &Path, device: &Device) -> Result<ToyLm, String> {
    let f = GgufFile::open(path).map_err(|e| e.to_string())?;
    let t: Vec<_> = f.tensors().iter().map(|t| (t.name.clone(), t.dims.clone(), f.tensor_f32(t).unwrap().to_vec())).collect();
    ToyLm::from_tensors(&t, N_LAYERS, device).ok_or_else(|| "missing tensor".to_string())
}

fn train_cfg(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 4,
        grad_accum: 2,
        lr: 3e-2,
        min_lr: 3e-3,
        warmup: 2,
        weight_decay: 0.01,
        clip_norm: Some(1.0),
        plan: SubnetPlan::sandwich(1),
        distill_weight: 0.3,
        seed: 5,
        save_every: 2,
        max_steps_this_run: None,
    }
}

fn read_log(out: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(out.join("finetune.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dev = device();
    let m0 = ToyLm::random(&cfg(), 1, &dev);
    let tpl = template(&m0);
    let ex = examples();
    let inputs = TrainInputs {
        template: &tpl,
        supernet_json: Some(serde_json::json!({"schema_version": 1})),
        space: space(),
        train: &ex,
        pad: 0,
        data_note: serde_json::json!("toy"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let c = train_cfg(7);
    let sa = run_training(|| Ok(m0.clone()), &load, &inputs, &c, false, &a, &dev, false).unwrap();
    assert!(sa.finished && sa.steps_done == 7);

    // Interrupted after 3 steps (checkpoints at 2 and 3), then resumed in two parts.
    let c3 = TrainConfig { max_steps_this_run: Some(3), ..c.clone() };
    let s1 = run_training(|| Ok(m0.clone()), &load, &inputs, &c3, false, &b, &dev, false).unwrap();
    assert!(!s1.finished && s1.steps_done == 3);
    assert!(!b.join("supernet.gguf").exists());
    // A fresh model passed in must be ignored on resume.
    let other = ToyLm::random(&cfg(), 77, &dev);
    let s2 = run_training(|| Ok(other.clone()), &load, &inputs, &c3, true, &b, &dev, false).unwrap();
    assert_eq!(s2.steps_done, 6);
    let s3 = run_training(|| Ok(other), &load, &inputs, &c, true, &b, &dev, false).unwrap();
    assert!(s3.finished && s3.steps_done == 7);

    let (ta, tb) = (read_tensors(&a.join("supernet.gguf")), read_tensors(&b.join("supernet.gguf")));
    assert_eq!(ta.len(), tb.len());
    let mut max_diff = 0f32;
    for ((na, _, da), (nb, _, db)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        for (x, y) in da.iter().zip(db) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(max_diff < 1e-6, "resumed weights differ by {max_diff}");
    // The weights moved.
    let t0 = m0.gguf_tensors();
    assert!(t0[0].2.iter().zip(&ta[0].2).any(|(x, y)| (x - y).abs() > 1e-4));
    // Logs agree step for step.
    let (la, lb) = (read_log(&a), read_log(&b));
    assert_eq!(la.len(), 7);
    assert_eq!(lb.len(), 7);
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.step, y.step);
        assert_eq!(x.subnets, y.subnets);
        for (p, q) in x.losses.iter().zip(&y.losses) {
            assert!((p - q).abs() < 1e-5, "step {}: {p} vs {q}", x.step);
        }
    }
    // supernet.json carries the note.
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("supernet.json")).unwrap()).unwrap();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["finetune"]["config"]["steps"], 7);
    // Only the last checkpoint remains.
    let left: Vec<_> = std::fs::read_dir(b.join("checkpoints")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");

    // Resuming with another trajectory configuration is refused.
    let other_seed = TrainConfig { seed: 6, ..c };
    let err = run_training(|| Ok(m0), &load, &inputs, &other_seed, true, &b, &dev, false).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
}

#[test]
fn loss_decreases_for_all_subnets() {
    let dev = device();
    let m0 = ToyLm::random(&cfg(), 2, &dev);
    let tpl = template(&m0);
    let ex = examples();
    let inputs = TrainInputs {
        template: &tpl,
        supernet_json: None,
        space: space(),
        train: &ex,
        pad: 0,
        data_note: serde_json::json!("toy"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let c = TrainConfig { save_every: 0, plan: SubnetPlan::sandwich(2), ..train_cfg(40) };
    run_training(|| Ok(m0), &load, &inputs, &c, false, tmp.path(), &dev, false).unwrap();
    let log = read_log(tmp.path());
    let first = &log[0].losses;
    let last = &log[log.len() - 1].losses;
    // Full and smallest sub-network: uniform guessing is ln 32 = 3.47 nats; the sequence is deterministic.
    assert!(last[0] < 0.5 * first[0], "full: {first:?} -> {last:?}");
    assert!(last[1] < 0.5 * first[1], "smallest: {first:?} -> {last:?}");
}
