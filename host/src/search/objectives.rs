//! The objectives' implementations for real models: exact size and profile latency ([`ExactCosts`]), and an
//! accuracy oracle that needs no benchmark data ([`PerplexityOracle`]: the geometric-mean probability of the
//! next token of a text, `1 / perplexity`). The benchmark accuracy oracle wraps `llamanas::eval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use device_runtime::arch::SubnetConfig;
use device_runtime::engine::{Model, Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::profile::LatencyModel;
use device_runtime::subnet::{ExportPlan, ExportQuant, Provenance, predicted_gguf_size};
use device_runtime::tokenizer::Tokenizer;

use super::linas::{AccuracyOracle, BoxError, CostModel};

/// Exact cheap objectives of sub-networks of one base GGUF: the size of the GGUF `llamanas export` would
/// write at `quant` ([`predicted_gguf_size`], exact to the byte) and the decode latency at a context length
/// from a device profile ([`LatencyModel::decode_ms`]). Results are cached by sub-network.
pub struct ExactCosts {
    base: GgufFile,
    quant: ExportQuant,
    latency: Option<LatencyModel>,
    context: usize,
    sizes: HashMap<SubnetConfig, u64>,
}

impl ExactCosts {
    /// Costs for sub-networks of `base` exported at `quant`; `latency` (with the decode `context` in tokens)
    /// when latency is an objective.
    pub fn new(base: GgufFile, quant: ExportQuant, latency: Option<LatencyModel>, context: usize) -> ExactCosts {
        ExactCosts { base, quant, latency, context, sizes: HashMap::new() }
    }

    /// The base GGUF.
    pub fn base(&self) -> &GgufFile {
        &self.base
    }
}

impl CostModel for ExactCosts {
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
/// method, [`perplexity`], `chunks` chunks of `ctx` tokens), for the sub-network exported at `quant` to a
/// temporary file in `work_dir` and loaded by the runtime engine. A fraction in `(0, 1]`, higher is better.
pub struct PerplexityOracle {
    base: GgufFile,
    tokens: Vec<u32>,
    bos: Option<u32>,
    text: PathBuf,
    quant: ExportQuant,
    ctx: usize,
    chunks: usize,
    threads: usize,
    work_dir: PathBuf,
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
        work_dir: &Path,
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
            work_dir: work_dir.to_path_buf(),
        })
    }
}

impl AccuracyOracle for PerplexityOracle {
    fn describe(&self) -> String {
        format!(
            "1/perplexity of {} ({} chunks of {} tokens, sub-networks at {})",
            self.text.display(),
            self.chunks,
            self.ctx,
            self.quant
        )
    }

    fn accuracy(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError> {
        let plan = ExportPlan::new(&self.base, cfg, self.quant, &Provenance { base_sha256: String::new(), run: None, objectives: None })?;
        std::fs::create_dir_all(&self.work_dir)?;
        let path = self.work_dir.join(format!(".eval-{}-{}.gguf", cfg.id(), std::process::id()));
        plan.write(&path)?;
        let res = (|| -> Result<f64, BoxError> {
            let model = Model::load(&path)?;
            let opts = SessionOptions { n_ctx: self.ctx, threads: self.threads, n_batch: self.ctx, ..Default::default() };
            let mut s = Session::new(&model, opts)?;
            let p = perplexity(&mut s, &self.tokens, self.ctx, self.bos, self.chunks, |_, _| {})?;
            Ok(1.0 / p.ppl)
        })();
        let _ = std::fs::remove_file(&path);
        res
    }
}
