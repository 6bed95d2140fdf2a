//! The objectives' implementations for real models: exact size and profile latency ([`ExactCosts`]), and an
//! accuracy oracle that needs no benchmark data ([`PerplexityOracle`]: the geometric-mean probability of the
//! next token of a text, `1 / perplexity`). The benchmark accuracy oracle wraps `llamanas::eval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use device_runtime::arch::SubnetConfig;
use device_runtime::engine::{Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::profile::LatencyModel;
use device_runtime::subnet::{ExportPlan, ExportQuant, Provenance, predicted_gguf_size};
use device_runtime::tokenizer::Tokenizer;

use super::linas::{AccuracyOracle, BoxError, CostModel};
use crate::reconstruct::Reconstructor;

/// Exact cheap objectives of sub-networks of one base GGUF: the size of the GGUF `llamanas export` would
/// write at `quant` ([`predicted_gguf_size`], exact to the byte) and the decode latency at a context length
/// from a device profile ([`LatencyModel::decode_ms`]). Results are cached by sub-network.
pub struct ExactCosts {
    base: GgufFile,
    quant: ExportQuant,
    latency: Option<LatencyModel>,
    context: usize,
    sizes: HashMap<SubnetConfig, u64>,
    /// Tensor-data bytes of one block: key (base ffn, base KV heads, base query heads, ffn, KV heads).
    block_bytes: HashMap<(usize, usize, usize, usize, usize), u64>,
    /// Exact size of the largest sub-network and its per-layer shapes (for [`CostModel::size_bytes_fast`]).
    full: Option<(u64, SubnetConfig)>,
    shapes: Option<device_runtime::arch::ModelConfig>,
}

impl ExactCosts {
    /// Costs for sub-networks of `base` exported at `quant`; `latency` (with the decode `context` in tokens)
    /// when latency is an objective.
    pub fn new(base: GgufFile, quant: ExportQuant, latency: Option<LatencyModel>, context: usize) -> ExactCosts {
        ExactCosts { base, quant, latency, context, sizes: HashMap::new(), block_bytes: HashMap::new(), full: None, shapes: None }
    }

    /// The base GGUF.
    pub fn base(&self) -> &GgufFile {
        &self.base
    }
}

impl ExactCosts {
    /// Tensor-data bytes (each tensor padded to the 32-byte GGUF alignment) of base layer `l` at FFN width
    /// `ffn` and `kv` KV heads, from the tensor infos of a one-layer export plan (cached by shape).
    fn layer_bytes(&mut self, mc: &device_runtime::arch::ModelConfig, l: usize, ffn: usize, kv: usize) -> Result<u64, BoxError> {
        let key = (mc.ffn[l], mc.n_kv_heads[l], mc.n_heads[l], ffn, kv);
        if let Some(&b) = self.block_bytes.get(&key) {
            return Ok(b);
        }
        let one = SubnetConfig { layers: vec![l], ffn: vec![ffn], kv_heads: vec![kv] };
        let prov = Provenance { base_sha256: String::new(), run: None, objectives: None };
        let plan = ExportPlan::new(&self.base, &one, self.quant, &prov)?;
        let mut bytes = 0u64;
        for (name, dims, ty) in plan.tensor_infos() {
            if !name.starts_with("blk.") {
                continue;
            }
            let (be, bb) = ty.block_size();
            let n: u64 = dims.iter().product();
            bytes += (n / be as u64 * bb as u64).div_ceil(32) * 32;
        }
        self.block_bytes.insert(key, bytes);
        Ok(bytes)
    }
}

impl CostModel for ExactCosts {
    /// The size of the largest sub-network (exact) plus, for each layer, the difference of its tensor data
    /// from the largest layer's: exact in tensor data; the metadata (the sub-network's JSON, per-layer arrays
    /// of `deci` files) may differ from the file by up to a few hundred bytes of about 10^8. Used only inside
    /// LINAS's predictor-only loop, where a full export plan per candidate (tens of ms: it copies the
    /// tokenizer metadata) would dominate; real evaluations record [`CostModel::size_bytes`].
    fn size_bytes_fast(&mut self, cfg: &SubnetConfig) -> Result<u64, BoxError> {
        if let Some(&s) = self.sizes.get(cfg) {
            return Ok(s);
        }
        if self.shapes.is_none() {
            self.shapes = Some(device_runtime::arch::ModelConfig::from_gguf(&self.base)?);
        }
        let mc = self.shapes.clone().expect("set above");
        if self.full.is_none() {
            let full = mc.full_subnet();
            let s = self.size_bytes(&full)?;
            self.full = Some((s, full));
        }
        let (full_size, full) = self.full.clone().expect("set above");
        let mut size = full_size as i64;
        for l in 0..mc.n_layers {
            size -= self.layer_bytes(&mc, l, full.ffn[l], full.kv_heads[l])? as i64;
        }
        for ((&l, &f), &k) in cfg.layers.iter().zip(&cfg.ffn).zip(&cfg.kv_heads) {
            size += self.layer_bytes(&mc, l, f, k)? as i64;
        }
        Ok(size.max(0) as u64)
    }

    fn latency_ms(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError> {
        let m = self.latency.as_ref().ok_or("latency is an objective but no --profile was given")?;
        Ok(m.decode_ms(cfg, self.context)?)
    }

    fn size_bytes(&mut self, cfg: &SubnetConfig) -> Result<u64, BoxError> {
        if let Some(&s) = self.sizes.get(cfg) {
            return Ok(s);
        }
        let s = predicted_gguf_size(&self.base, cfg, self.quant)?;
        self.sizes.insert(cfg.clone(), s);
        Ok(s)
    }
}

/// Accuracy stand-in without benchmark data: `exp(-mean NLL) = 1 / perplexity` of a text (llama-perplexity's
/// method, [`perplexity`], `chunks` chunks of `ctx` tokens), for the sub-network built at `quant` in memory by
/// the one sub-network builder ([`crate::reconstruct::plan`], reconstructed when a reconstructor is given) and
/// run by the runtime engine. A fraction in `(0, 1]`, higher is better.
pub struct PerplexityOracle {
    base: GgufFile,
    tokens: Vec<u32>,
    bos: Option<u32>,
    text: PathBuf,
    quant: ExportQuant,
    ctx: usize,
    chunks: usize,
    threads: usize,
    recon: Option<Reconstructor>,
}

impl PerplexityOracle {
    /// Tokenize `text` with `base`'s tokenizer.
    ///
    /// Errors: unreadable text, no tokenizer, or fewer than `ctx` tokens.
    pub fn new(
        base_path: &Path,
        text: &Path,
        quant: ExportQuant,
        ctx: usize,
        chunks: usize,
        threads: usize,
        recon: Option<Reconstructor>,
    ) -> Result<PerplexityOracle, BoxError> {
        let base = GgufFile::open(base_path)?;
        let tok = Tokenizer::from_gguf(&base)?;
        let s = std::fs::read_to_string(text).map_err(|e| format!("{}: {e}", text.display()))?;
        let tokens = tok.encode(&s, true, false)?;
        if tokens.len() < ctx {
            return Err(format!("{}: {} tokens, fewer than one chunk of {ctx}", text.display(), tokens.len()).into());
        }
        let bos = if tok.metadata().add_bos { tok.bos() } else { None };
        Ok(PerplexityOracle {
            base,
            tokens,
            bos,
            text: text.to_path_buf(),
            quant,
            ctx,
            chunks,
            threads,
            recon,
        })
    }
}

impl AccuracyOracle for PerplexityOracle {
    fn describe(&self) -> String {
        format!(
            "1/perplexity of {} ({} chunks of {} tokens, sub-networks at {}{})",
            self.text.display(),
            self.chunks,
            self.ctx,
            self.quant,
            if self.recon.is_some() { ", reconstructed" } else { "" }
        )
    }

    fn accuracy(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError> {
        let prov = Provenance { base_sha256: String::new(), run: None, objectives: None };
        let plan = crate::reconstruct::plan(&self.base, cfg, self.quant, &prov, self.recon.as_ref()).map_err(|e| format!("{e:#}"))?;
        let model = plan.build_model()?;
        let opts = SessionOptions { n_ctx: self.ctx, threads: self.threads, n_batch: self.ctx, ..Default::default() };
        let mut s = Session::new(&model, opts)?;
        let p = perplexity(&mut s, &self.tokens, self.ctx, self.bos, self.chunks, |_, _| {})?;
        Ok(1.0 / p.ppl)
    }
}

/// Benchmark accuracy through `llamanas::eval` (lm-evaluation-harness definitions): the mean `acc_norm` over
/// `--task` (comma-separated) on a fixed `--limit` subset, the sub-network sliced in memory at the export
/// quantization.
pub struct BenchmarkOracle {
    scorer: crate::eval::Scorer,
    desc: String,
}

impl BenchmarkOracle {
    /// Load and tokenize the tasks once.
    ///
    /// Errors: unknown task, missing data, unreadable GGUF (from `llamanas::eval`).
    pub fn new(
        base: &Path,
        task: &str,
        limit: Option<usize>,
        seed: u64,
        threads: usize,
        quant: ExportQuant,
        recon: Option<Reconstructor>,
    ) -> Result<BenchmarkOracle, BoxError> {
        let tasks = crate::data::TaskSpec::parse_list(task)?;
        let rec = if recon.is_some() { ", reconstructed" } else { "" };
        let scorer = crate::eval::Scorer::new(base, &tasks, limit, seed, threads)?.with_quant(quant).with_reconstruction(recon);
        let items: Vec<String> = scorer.tasks().iter().map(|t| format!("{} {} items", t.spec.name(), t.docs.len())).collect();
        let desc = format!("acc_norm on {} (seed {seed}), sub-networks at {quant}{rec}", items.join(", "));
        Ok(BenchmarkOracle { scorer, desc })
    }
}

impl AccuracyOracle for BenchmarkOracle {
    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn accuracy(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError> {
        Ok(crate::eval::mean_acc_norm(&self.scorer.score(cfg)?))
    }
}
