//! Multiple-choice scoring and perplexity with the device-runtime engine, following lm-evaluation-harness
//! (`lm_eval/api/task.py` `process_results` for `multiple_choice`, `lm_eval/models/huggingface.py`
//! `_encode_pair` and `_loglikelihood_tokens`).
//!
//! - **Requests**: each choice of a [`McDoc`] is a `(context, continuation)` pair. Tokenization as lm-eval's
//!   `_encode_pair`: trailing spaces of the context move to the front of the continuation; then
//!   `whole = encode(context + continuation)`, `context_tokens = encode(context)`,
//!   `continuation_tokens = whole[len(context_tokens)..]`; no BOS is added (lm-eval's default for causal
//!   models); a sequence longer than the session keeps its last `n_ctx + 1` tokens (lm-eval's left truncation).
//! - **Log-likelihood** of a choice: `sum_j log softmax(logits at the position before continuation token j)`.
//! - **Metrics** ([`doc_metrics`]): `acc` (argmax of the sums equals the gold index), `acc_norm` (argmax of the
//!   sum divided by the length in characters of the choice text, as lm-eval's `completion_len`), `acc_bytes`
//!   (sum divided by the UTF-8 bytes of the scored continuation, delimiter included: OLMo's per-byte
//!   normalization). Ties go to the first choice (numpy's argmax). Standard error of a mean as lm-eval's
//!   `mean_stderr`: sample standard deviation (n-1) over sqrt(n).
//! - **Speed**: the KV cache is reused across requests: each request keeps the longest prefix it shares
//!   with the tokens in the cache (the context shared by the choices, the few-shot header shared by the MMLU
//!   questions of a subject), the output head runs only at continuation positions
//!   ([`Logits::From`]), and the documents are split into one contiguous shard per thread, each scored by a
//!   one-thread session (small batches do not pay for thread synchronization).
//!
//! [`Scorer`] scores sub-networks of a super-network without writing files: [`subnet_model`] slices (and
//! reconstructs) the base GGUF in memory ([`device_runtime::subnet::ExportPlan::build_model`]) into a [`Model`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::engine::{EngineError, Logits, Model, Session, SessionOptions, ops};
use device_runtime::gguf::{GgmlType, GgufFile};
use device_runtime::subnet::{ExportQuant, Provenance, SubnetError};

use crate::reconstruct::Reconstructor;
use device_runtime::tokenizer::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};

use crate::data::{self, DataError, McDoc, TaskSpec};

pub mod cache;
pub mod cli;

/// Errors of scoring.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Loading a task failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] device_runtime::gguf::GgufError),
    /// The model's configuration could not be read.
    #[error(transparent)]
    Arch(#[from] device_runtime::arch::ArchError),
    /// Slicing the sub-network failed.
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    /// Building or reconstructing the sub-network failed ([`crate::reconstruct`]).
    #[error("{0:#}")]
    Reconstruct(anyhow::Error),
    /// Tokenizing failed.
    #[error("{file}: tokenizer: {source}")]
    Tokenizer {
        /// The model file.
        file: String,
        /// Cause.
        source: TokenizerError,
    },
    /// Anything else (bad option, unsupported storage type).
    #[error("{0}")]
    Other(String),
}

/// One scoring request: context and continuation tokens (continuation non-empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Context tokens (non-empty).
    pub ctx: Vec<u32>,
    /// Continuation tokens (non-empty).
    pub cont: Vec<u32>,
}

/// Tokenize `(context, continuation)` as lm-eval's `_encode_pair` does (module docs). An empty context
/// becomes `[prefix]` (lm-eval's `prefix_token_id`: EOS, else BOS).
///
/// Errors: [`TokenizerError`]; an empty continuation is an [`EvalError::Other`].
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> Result<Request, EvalError> {
    let terr = |source| EvalError::Tokenizer { file: "model".into(), source };
    // lm-eval: n_spaces = len(context) - len(context.rstrip()); those trailing characters move to the
    // continuation (rstrip() strips all whitespace).
    let ctx_text = context.trim_end();
    let cont = format!("{}{continuation}", &context[ctx_text.len()..]);
    let whole = tok.encode(&format!("{ctx_text}{cont}"), false, false).map_err(terr)?;
    let mut ctx = tok.encode(ctx_text, false, false).map_err(terr)?;
    let cont_tokens = if ctx.len() <= whole.len() { whole[ctx.len()..].to_vec() } else { Vec::new() };
    if cont_tokens.is_empty() {
        return Err(EvalError::Other(format!("continuation {continuation:?} of context {context:?} has no tokens")));
    }
    if ctx.is_empty() {
        let prefix = tok.eos().or(tok.bos()).ok_or_else(|| EvalError::Other("empty context and no EOS/BOS token".into()))?;
        ctx.push(prefix);
    }
    Ok(Request { ctx, cont: cont_tokens })
}

/// Per-document metric values (each 0 or 1) from the choices' log-likelihoods `lls`, the choice texts
/// (`acc_norm` divides by their length in characters) and the UTF-8 byte lengths of the scored
/// continuations (`acc_bytes`). Returns `(acc, acc_norm, acc_bytes)`; ties go to the first choice.
pub fn doc_metrics(lls: &[f64], choice_texts: &[String], cont_bytes: &[usize], gold: usize) -> (f64, f64, f64) {
    let argmax = |v: &mut dyn Iterator<Item = f64>| {
        let mut best = (0, f64::NEG_INFINITY);
        for (i, x) in v.enumerate() {
            if x > best.1 {
                best = (i, x);
            }
        }
        best.0
    };
    let acc = argmax(&mut lls.iter().copied());
    let norm = argmax(&mut lls.iter().zip(choice_texts).map(|(l, t)| l / t.chars().count().max(1) as f64));
    let bytes = argmax(&mut lls.iter().zip(cont_bytes).map(|(l, b)| l / (*b).max(1) as f64));
    ((acc == gold) as u8 as f64, (norm == gold) as u8 as f64, (bytes == gold) as u8 as f64)
}

/// Mean and its standard error as lm-eval's `mean` / `mean_stderr`: `sqrt(var_{n-1} / n)` (0 for `n < 2`).
pub fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

/// Scores of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    /// Task name ([`TaskSpec::name`]).
    pub task: String,
    /// Documents scored.
    pub n: usize,
    /// Accuracy (fraction) and its standard error.
    pub acc: f64,
    /// Standard error of `acc`.
    pub acc_stderr: f64,
    /// Length-normalized accuracy (characters).
    pub acc_norm: f64,
    /// Standard error of `acc_norm`.
    pub acc_norm_stderr: f64,
    /// Byte-normalized accuracy.
    pub acc_bytes: f64,
    /// Standard error of `acc_bytes`.
    pub acc_bytes_stderr: f64,
    /// Tokens of the requests scored (context + continuation, each choice counted in full).
    pub tokens: usize,
    /// Tokens actually run through the model (after KV-cache reuse).
    pub tokens_evaluated: usize,
    /// Wall-clock seconds of scoring (tokenization excluded).
    pub seconds: f64,
    /// Documents taken from an `--cache` file of an earlier run (not scored again; `tokens`,
    /// `tokens_evaluated` and `seconds` cover the others).
    #[serde(default)]
    pub resumed: usize,
}

/// A task's documents, tokenized.
#[derive(Clone, Debug)]
pub struct PreparedTask {
    /// The task.
    pub spec: TaskSpec,
    /// Its documents.
    pub docs: Vec<McDoc>,
    /// Per document, per choice, the request.
    pub requests: Vec<Vec<Request>>,
}

impl PreparedTask {
    /// Load `spec` from `assets`, keep the `--limit`/`--seed` subset ([`data::subset`]) and tokenize.
    pub fn load(spec: TaskSpec, assets: &Path, limit: Option<usize>, seed: u64, tok: &Tokenizer) -> Result<Self, EvalError> {
        let docs = data::load_task_subset(spec, assets, limit, seed)?;
        let requests = docs
            .iter()
            .map(|d| d.choices.iter().map(|(c, x)| encode_pair(tok, c, x)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedTask { spec, docs, requests })
    }

    /// The longest request in tokens (context + continuation).
    pub fn max_len(&self) -> usize {
        self.requests.iter().flatten().map(|r| r.ctx.len() + r.cont.len()).max().unwrap_or(0)
    }
}

/// A session that remembers which tokens its KV cache holds, to reuse shared prefixes.
struct CachedSession<'m> {
    s: Session<'m>,
    toks: Vec<u32>,
    /// The logits row at position `.0` of the cached sequence (the last context token of the last request).
    saved: Option<(usize, Vec<f32>)>,
    evaluated: usize,
    n_vocab: usize,
}

impl<'m> CachedSession<'m> {
    fn new(model: &'m Model, n_ctx: usize) -> Result<Self, EvalError> {
        let s = Session::new(model, SessionOptions { n_ctx, threads: 1, ..Default::default() })?;
        Ok(CachedSession { s, toks: Vec::new(), saved: None, evaluated: 0, n_vocab: model.config.n_vocab })
    }

    /// Sum of log-probabilities of `cont` given `ctx`.
    fn loglikelihood(&mut self, ctx: &[u32], cont: &[u32]) -> Result<f64, EvalError> {
        // lm-eval's left truncation: the model input is (ctx ++ cont)[-(n_ctx + 1)..][..-1].
        let n_ctx = self.s.n_ctx();
        let total = ctx.len() + cont.len();
        let (ctx, cont): (Vec<u32>, &[u32]) = if total > n_ctx + 1 {
            let drop = total - (n_ctx + 1);
            if drop >= ctx.len() {
                return Err(EvalError::Other(format!("continuation of {} tokens does not fit the context of {n_ctx}", cont.len())));
            }
            (ctx[drop..].to_vec(), cont)
        } else {
            (ctx.to_vec(), cont)
        };
        let c = ctx.len();
        let nv = self.n_vocab;
        let mut seq = ctx.clone();
        seq.extend_from_slice(&cont[..cont.len() - 1]);
        let lcp = self.toks.iter().zip(&seq).take_while(|(a, b)| a == b).count();
        let mut ll = 0f64;
        let rows: Vec<f32>;
        let first_row: Vec<f32>;
        match &self.saved {
            Some((p, row)) if *p == c - 1 && lcp >= c => {
                first_row = row.clone();
                self.s.truncate(c);
                self.toks.truncate(c);
                rows = if cont.len() > 1 {
                    let out = self.s.prefill(&cont[..cont.len() - 1], Logits::All)?;
                    self.evaluated += cont.len() - 1;
                    self.toks.extend_from_slice(&cont[..cont.len() - 1]);
                    out
                } else {
                    Vec::new()
                };
            }
            _ => {
                let start = lcp.min(c - 1);
                self.s.truncate(start);
                self.toks.truncate(start);
                let out = self.s.prefill(&seq[start..], Logits::From(c - 1 - start))?;
                self.evaluated += seq.len() - start;
                self.toks.extend_from_slice(&seq[start..]);
                first_row = out[..nv].to_vec();
                rows = out[nv..].to_vec();
            }
        }
        ll += ops::log_softmax_at(&first_row, cont[0] as usize);
        for (j, &t) in cont[1..].iter().enumerate() {
            ll += ops::log_softmax_at(&rows[j * nv..(j + 1) * nv], t as usize);
        }
        self.saved = Some((c - 1, first_row));
        Ok(ll)
    }
}

/// Log-likelihood of every choice of every document (`[doc][choice]`), scored by `threads` one-thread
/// sessions over contiguous shards of `requests`. `progress` is called with the number of documents done
/// (from any thread). Returns the sums and the tokens run through the model.
///
/// Errors: [`EvalError::Engine`] (context too small, model errors).
pub fn loglikelihoods(
    model: &Model,
    requests: &[Vec<Request>],
    n_ctx: usize,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<Vec<f64>>, usize), EvalError> {
    let all: Vec<usize> = (0..requests.len()).collect();
    let (v, e) = loglikelihoods_of(model, requests, &all, n_ctx, threads, &|_, _| Ok(()), progress)?;
    Ok((v.into_iter().map(|(_, l)| l).collect(), e))
}

/// [`loglikelihoods`] of the documents `which` (indices into `requests`) only, with `on_doc(index, lls)`
/// called from the scoring thread as each document finishes (e.g. [`cache::DocCache::record`]; its error
/// stops that thread's shard). Returns `(index, lls)` in the order of `which`, and the tokens run.
///
/// Errors: [`EvalError::Engine`], or the first error of `on_doc`.
pub fn loglikelihoods_of(
    model: &Model,
    requests: &[Vec<Request>],
    which: &[usize],
    n_ctx: usize,
    threads: usize,
    on_doc: &(dyn Fn(usize, &[f64]) -> Result<(), EvalError> + Sync),
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<(usize, Vec<f64>)>, usize), EvalError> {
    if let Some(&bad) = which.iter().find(|&&i| i >= requests.len()) {
        return Err(EvalError::Other(format!("document {bad} of {} requested", requests.len())));
    }
    let threads = threads.max(1).min(which.len().max(1));
    let per = which.len().div_ceil(threads).max(1);
    let done = AtomicUsize::new(0);
    type Shard = Result<(Vec<(usize, Vec<f64>)>, usize), EvalError>;
    let results: Vec<Shard> = std::thread::scope(|sc| {
        let handles: Vec<_> = which
            .chunks(per)
            .map(|shard| {
                let done = &done;
                sc.spawn(move || -> Shard {
                    let mut cs = CachedSession::new(model, n_ctx)?;
                    let mut out = Vec::with_capacity(shard.len());
                    for &i in shard {
                        let lls = requests[i].iter().map(|r| cs.loglikelihood(&r.ctx, &r.cont)).collect::<Result<Vec<_>, _>>()?;
                        on_doc(i, &lls)?;
                        out.push((i, lls));
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    Ok((out, cs.evaluated))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(EvalError::Other("scoring thread panicked".into())))).collect()
    });
    let mut all = Vec::with_capacity(which.len());
    let mut evaluated = 0;
    for r in results {
        let (v, e) = r?;
        all.extend(v);
        evaluated += e;
    }
    Ok((all, evaluated))
}

/// Score a prepared task on `model` (metrics in the module docs).
pub fn score_task(
    model: &Model,
    task: &PreparedTask,
    n_ctx: usize,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<TaskScore, EvalError> {
    score_task_cached(model, task, n_ctx, threads, None, progress)
}

/// [`score_task`] that takes the documents found in `cache` from it, scores only the others and appends
/// each to the cache as it finishes ([`cache::DocCache`]: a killed run continues where it stopped).
/// `progress` counts all documents, those from the cache included. The speed figures of the result
/// (`tokens`, `tokens_evaluated`, `seconds`) cover the documents scored in this run only.
///
/// Errors: [`EvalError::Engine`]; a cached document whose number of choices differs from the task's;
/// the cache's write errors.
pub fn score_task_cached(
    model: &Model,
    task: &PreparedTask,
    n_ctx: usize,
    threads: usize,
    cache: Option<&cache::DocCache>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<TaskScore, EvalError> {
    let t0 = Instant::now();
    let name = task.spec.name();
    let mut lls: Vec<Option<Vec<f64>>> = vec![None; task.docs.len()];
    if let Some(c) = cache {
        for (i, doc) in task.docs.iter().enumerate() {
            if let Some(v) = c.get(name, i) {
                if v.len() != doc.choices.len() {
                    return Err(EvalError::Other(format!(
                        "{}: {name} document {i} has {} log-likelihoods, the task has {} choices (another task version?)",
                        c.path().display(),
                        v.len(),
                        doc.choices.len()
                    )));
                }
                lls[i] = Some(v.to_vec());
            }
        }
    }
    let which: Vec<usize> = (0..lls.len()).filter(|&i| lls[i].is_none()).collect();
    let resumed = lls.len() - which.len();
    progress(resumed);
    let record = |i: usize, v: &[f64]| match cache {
        Some(c) => c.record(name, i, v),
        None => Ok(()),
    };
    let (scored, evaluated) = loglikelihoods_of(model, &task.requests, &which, n_ctx, threads, &record, &|d| progress(resumed + d))?;
    for (i, v) in scored {
        lls[i] = Some(v);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (mut acc, mut norm, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for (doc, ll) in task.docs.iter().zip(&lls) {
        let ll = ll.as_deref().ok_or_else(|| EvalError::Other(format!("{name}: a document was not scored")))?;
        let cont_bytes: Vec<usize> = doc.choices.iter().map(|(_, c)| c.len()).collect();
        let (a, n, b) = doc_metrics(ll, &doc.choice_texts, &cont_bytes, doc.gold);
        acc.push(a);
        norm.push(n);
        bytes.push(b);
    }
    let (acc, acc_stderr) = mean_stderr(&acc);
    let (acc_norm, acc_norm_stderr) = mean_stderr(&norm);
    let (acc_bytes, acc_bytes_stderr) = mean_stderr(&bytes);
    let tokens = which.iter().flat_map(|&i| &task.requests[i]).map(|r| r.ctx.len() + r.cont.len()).sum();
    Ok(TaskScore {
        task: name.to_string(),
        n: task.docs.len(),
        acc,
        acc_stderr,
        acc_norm,
        acc_norm_stderr,
        acc_bytes,
        acc_bytes_stderr,
        tokens,
        tokens_evaluated: evaluated,
        seconds,
        resumed,
    })
}

/// The tensor type an in-memory sub-network keeps when no quantization is asked: the type of the base's
/// `blk.0.ffn_gate.weight` (the bulk of the weights), as an [`ExportQuant`].
///
/// Errors: [`EvalError::Other`] when that type is not one the slicer writes (then pass a quantization).
pub fn native_quant(base: &GgufFile) -> Result<ExportQuant, EvalError> {
    let t = base
        .tensors()
        .iter()
        .find(|t| t.name.ends_with("ffn_gate.weight"))
        .ok_or_else(|| EvalError::Other(format!("{}: no ffn_gate tensor", base.name())))?;
    Ok(match t.ty {
        GgmlType::F32 => ExportQuant::F32,
        GgmlType::F16 => ExportQuant::F16,
        GgmlType::Q8_0 => ExportQuant::Q8_0,
        GgmlType::Q4_0 => ExportQuant::Q4_0,
        GgmlType::Q4_1 => ExportQuant::Q4_1,
        other => {
            return Err(EvalError::Other(format!(
                "{}: weights are {other}, which the in-memory slicer cannot keep: pass a quantization (q8_0)",
                base.name()
            )));
        }
    })
}

/// Build the [`Model`] of sub-network `cfg` of `base` in memory (no file written) through the one
/// sub-network builder ([`crate::reconstruct::plan`], then [`ExportPlan::build_model`]): the tensors at
/// `quant` (the base's own type with [`native_quant`]: blocks copied unchanged), reconstructed when `recon` is
/// given, byte for byte what `llamanas export` writes.
///
/// Errors: [`EvalError::Subnet`] (invalid sub-network, FFN width not a multiple of the block size, ...),
/// [`EvalError::Reconstruct`], [`EvalError::Engine`].
pub fn subnet_model(base: &GgufFile, cfg: &SubnetConfig, quant: ExportQuant, recon: Option<&Reconstructor>) -> Result<Model, EvalError> {
    let prov = Provenance { base_sha256: String::new(), run: None, objectives: None };
    let plan = crate::reconstruct::plan(base, cfg, quant, &prov, recon).map_err(EvalError::Reconstruct)?;
    Ok(plan.build_model()?)
}

/// Scores sub-networks of one super-network (or base GGUF) on a fixed set of tasks: the data is loaded and
/// tokenized once, each [`Scorer::score`] slices the sub-network in memory and scores it.
pub struct Scorer {
    base: GgufFile,
    path: PathBuf,
    tasks: Vec<PreparedTask>,
    threads: usize,
    n_ctx: usize,
    quant: ExportQuant,
    recon: Option<Reconstructor>,
}

impl Scorer {
    /// Open `supernet_gguf` (a super-network's `supernet.gguf` or any LLaMA-family GGUF), load `tasks` from
    /// [`data::assets_dir`] with `--limit`/`--seed` ([`data::subset`]) and tokenize them with the file's
    /// tokenizer. `threads`: scoring threads (0: all logical CPUs). Sub-networks keep the file's weight type
    /// ([`native_quant`]); see [`Scorer::with_quant`].
    ///
    /// Errors: [`EvalError`] naming the file (unreadable GGUF, no tokenizer, missing task data).
    pub fn new(supernet_gguf: &Path, tasks: &[TaskSpec], limit: Option<usize>, seed: u64, threads: usize) -> Result<Scorer, EvalError> {
        Self::with_assets(supernet_gguf, &data::assets_dir(), tasks, limit, seed, threads)
    }

    /// [`Scorer::new`] with an explicit assets folder.
    pub fn with_assets(
        supernet_gguf: &Path,
        assets: &Path,
        tasks: &[TaskSpec],
        limit: Option<usize>,
        seed: u64,
        threads: usize,
    ) -> Result<Scorer, EvalError> {
        let base = GgufFile::open(supernet_gguf)?;
        let mc = ModelConfig::from_gguf(&base)?;
        let tok = Tokenizer::from_gguf(&base)
            .map_err(|source| EvalError::Tokenizer { file: supernet_gguf.display().to_string(), source })?;
        let tasks = tasks.iter().map(|&t| PreparedTask::load(t, assets, limit, seed, &tok)).collect::<Result<Vec<_>, _>>()?;
        let need = tasks.iter().map(|t| t.max_len()).max().unwrap_or(1);
        let cap = if mc.n_ctx_train > 0 { mc.n_ctx_train } else { 4096 };
        let n_ctx = need.clamp(1, cap);
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let quant = native_quant(&base)?;
        Ok(Scorer { base, path: supernet_gguf.to_path_buf(), tasks, threads, n_ctx, quant, recon: None })
    }

    /// Quantize every sub-network to `quant` in memory before scoring (e.g. Q8_0 for speed on an F32
    /// super-network; docs/EVAL.md gives the accuracy effect).
    pub fn with_quant(mut self, quant: ExportQuant) -> Scorer {
        self.quant = quant;
        self
    }

    /// Reconstruct every sub-network with `recon` before scoring ([`crate::reconstruct`]).
    pub fn with_reconstruction(mut self, recon: Option<Reconstructor>) -> Scorer {
        self.recon = recon;
        self
    }

    /// The reconstructor in use, if any.
    pub fn reconstructor(&self) -> Option<&Reconstructor> {
        self.recon.as_ref()
    }

    /// The file being scored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base model's configuration.
    pub fn model_config(&self) -> Result<ModelConfig, EvalError> {
        Ok(ModelConfig::from_gguf(&self.base)?)
    }

    /// The prepared tasks.
    pub fn tasks(&self) -> &[PreparedTask] {
        &self.tasks
    }

    /// Score sub-network `cfg` on every task (in the order given to [`Scorer::new`]).
    ///
    /// Errors: [`EvalError::Subnet`] (a sub-network the slicer refuses), [`EvalError::Engine`].
    pub fn score(&self, cfg: &SubnetConfig) -> Result<Vec<TaskScore>, EvalError> {
        let model = subnet_model(&self.base, cfg, self.quant, self.recon.as_ref())?;
        self.score_model(&model, &|_, _| {})
    }

    /// Score an already built model (e.g. the full GGUF via [`Model::load`]) on every task.
    /// `progress(task_index, docs_done)` is called as documents finish.
    pub fn score_model(&self, model: &Model, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Vec<TaskScore>, EvalError> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| score_task(model, t, self.n_ctx, self.threads, &|d| progress(i, d)))
            .collect()
    }

    /// KV-cache capacity of the scoring sessions (the longest request, capped by the training context).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Scoring threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// The mean of `acc_norm` over the scores (the single accuracy objective a search may use).
pub fn mean_acc_norm(scores: &[TaskScore]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().map(|s| s.acc_norm).sum::<f64>() / scores.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_hand_computed() {
        // lls [-10, -12, -9.5]; lengths 5, 10, 2 chars -> per char [-2, -1.2, -4.75]: argmax acc = 2, norm = 1.
        let texts: Vec<String> = ["abcde", "abcdefghij", "ab"].iter().map(|s| s.to_string()).collect();
        // bytes 6, 11, 3 -> [-1.667, -1.0909, -3.1667]: argmax 1.
        assert_eq!(doc_metrics(&[-10.0, -12.0, -9.5], &texts, &[6, 11, 3], 2), (1.0, 0.0, 0.0));
        assert_eq!(doc_metrics(&[-10.0, -12.0, -9.5], &texts, &[6, 11, 3], 1), (0.0, 1.0, 1.0));
        // Ties: first index.
        assert_eq!(doc_metrics(&[-1.0, -1.0], &texts[..2], &[1, 1], 0).0, 1.0);
        // Multi-byte characters: "é" is 1 char, 2 bytes.
        let t2: Vec<String> = vec!["éé".into(), "abc".into()];
        // lls [-3, -4]: per char [-1.5, -1.333] -> 1; per byte (5, 4) [-0.6, -1.0] -> 0.
        assert_eq!(doc_metrics(&[-3.0, -4.0], &t2, &[5, 4], 0), (1.0, 0.0, 1.0));
    }

    #[test]
    fn stderr_hand_computed() {
        // [1, 0, 1, 1]: mean 0.75, sample variance (3*0.0625 + 0.5625)/3 = 0.25, stderr sqrt(0.25/4) = 0.25.
        let (m, se) = mean_stderr(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(m, 0.75);
        assert!((se - 0.25).abs() < 1e-12);
        assert_eq!(mean_stderr(&[]), (0.0, 0.0));
    }
}
