//! Speed of the burn elastic super-network on this machine: forward and forward+backward tokens/s of the full
//! model (and of a small sub-network), plus one AdamW step, on burn's Flex CPU backend.
//!
//! `RAYON_NUM_THREADS=2 cargo run --profile test -p host --example elastic_bench -- [MODEL.gguf|SUPERNET_DIR]
//! [--seq 256] [--batch 1] [--iters 3]` (model default: `$LLAMANAS_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf`).
//! Tokens are the GPL-3 text's bytes mapped into the vocabulary (speed does not depend on the ids).
//! Results go to docs/PERFORMANCE.md ("burn" section).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::optim::{AdamWConfig, GradientsParams};
use device_runtime::arch::SubnetConfig;
use llamanas::elastic::{ElasticModel, TokenBatch, default_device, training_device};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut path, mut seq, mut batch, mut iters) = (None, 256usize, 1usize, 3usize);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<usize> {
            args.next().with_context(|| format!("{what} needs a value"))?.parse().with_context(|| format!("{what}: not a number"))
        };
        match a.as_str() {
            "--seq" => seq = num("--seq")?,
            "--batch" => batch = num("--batch")?,
            "--iters" => iters = num("--iters")?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => path = Some(std::path::PathBuf::from(s)),
        }
    }
    let path = path.unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var("LLAMANAS_ASSETS").unwrap_or_else(|_| "assets".into()))
            .join("SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all CPUs".into());
    println!("model {}, seq {seq}, batch {batch}, {iters} timed iterations after 1 warm-up, rayon threads: {threads}", path.display());

    let t0 = Instant::now();
    let model = ElasticModel::load(&path, &default_device()).with_context(|| format!("loading {}", path.display()))?;
    println!("load (dequantize + upload): {:.2} s", t0.elapsed().as_secs_f64());
    let mc = model.config().clone();
    let text = std::fs::read("/usr/share/common-licenses/GPL-3").unwrap_or_else(|_| vec![b'x'; 65536]);
    let seqs: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..seq).map(|t| text[(b * seq + t) % text.len()] as u32 % mc.n_vocab as u32).collect())
        .collect();
    let tb = TokenBatch::new(&seqs)?;
    let n_tok = (batch * seq) as f64;
    let full = mc.full_subnet();
    let small = SubnetConfig {
        layers: (0..mc.n_layers).step_by(2).collect(),
        ffn: (0..mc.n_layers).step_by(2).map(|l| mc.ffn[l] / 3).collect(),
        kv_heads: (0..mc.n_layers).step_by(2).map(|_| 1).collect(),
    };
    let time = |what: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let t = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        let s = t.elapsed().as_secs_f64() / iters as f64;
        println!("{what:<40} {:>8.1} ms  {:>8.1} tokens/s", s * 1e3, n_tok / s);
        Ok(s)
    };
    for (name, s) in [("full", &full), ("small (15 layers, FFN 512, 1 KV)", &small)] {
        time(&format!("forward, {name}"), &mut || {
            let l = model.loss(&tb, s)?;
            let _ = l.loss.into_scalar::<f32>();
            Ok(())
        })?;
    }
    drop(model);
    let mut model = ElasticModel::load(&path, &training_device())?;
    for (name, s) in [("full", &full), ("small (15 layers, FFN 512, 1 KV)", &small)] {
        time(&format!("forward+backward, {name}"), &mut || {
            let l = model.loss(&tb, s)?;
            let g = l.loss.backward();
            drop(g);
            Ok(())
        })?;
    }
    let mut optim = AdamWConfig::new().init();
    let mut step = || -> Result<()> {
        let g = model.loss(&tb, &full)?.loss.backward();
        let g = GradientsParams::from_grads(g, &model);
        model = optim.step(1e-6, model.clone(), g);
        // Force the update to run (lazy backends): read one weight.
        let _ = model.output_norm.val().sum().into_scalar::<f32>();
        Ok(())
    };
    time("forward+backward+AdamW step, full", &mut step)?;
    Ok(())
}
