//! Choice of the compute backend: the CPU engine ([`crate::engine::Session`]) or, with the cargo feature
//! `wgpu`, a wgpu adapter (`crate::gpu::GpuSession`). `edgerun --backend cpu|wgpu [--adapter NAME]` and
//! the profiler go through [`Backend`] and [`BackendSession`], which have the session API of the CPU engine.

use crate::engine::perplexity::Evaluator;
use crate::engine::{EngineError, Logits, Model, Session, SessionOptions};
use crate::profile::device::AdapterFacts;

/// Which backend to run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU engine.
    Cpu,
    /// A wgpu adapter: the first whose `name (backend, type)` contains this text (case-insensitive), or the
    /// best one when `None` (see `gpu::GpuContext::new`).
    Wgpu(Option<String>),
}

impl BackendKind {
    /// Parse `--backend NAME [--adapter NAME]`: `cpu` or `wgpu`.
    ///
    /// Errors: [`EngineError::Config`] for another name, for `wgpu` in a build without the `wgpu` feature,
    /// and for `--adapter` with the CPU backend.
    pub fn parse(name: &str, adapter: Option<&str>) -> Result<BackendKind, EngineError> {
        match name {
            "cpu" if adapter.is_some() => Err(EngineError::Config("--adapter selects a wgpu adapter: use it with --backend wgpu".into())),
            "cpu" => Ok(BackendKind::Cpu),
            "wgpu" if cfg!(feature = "wgpu") => Ok(BackendKind::Wgpu(adapter.map(str::to_string))),
            "wgpu" => Err(EngineError::Config(
                "--backend wgpu: this edgerun was built without the wgpu feature (build with `cargo build -p device-runtime --features wgpu`)".into(),
            )),
            other => Err(EngineError::Config(format!("unknown backend {other:?} (available: {})", available().join(", ")))),
        }
    }

    /// `cpu` or `wgpu` (the name profiles record).
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu(_) => "wgpu",
        }
    }
}

/// The backends of this build: `cpu`, and `wgpu` with the feature.
pub fn available() -> Vec<&'static str> {
    if cfg!(feature = "wgpu") { vec!["cpu", "wgpu"] } else { vec!["cpu"] }
}

/// A model made ready for a backend: nothing for the CPU (it reads the memory map), the weights uploaded to the
/// device for wgpu.
pub struct Backend {
    kind: BackendKind,
    #[cfg(feature = "wgpu")]
    gpu: Option<crate::gpu::GpuModel>,
}

impl Backend {
    /// Prepare `model` for `kind` (wgpu: open the adapter, upload the weights, compile the kernels).
    ///
    /// Errors: [`EngineError::Config`] with the wgpu error (no adapter, none matching, unsupported tensor type
    /// naming the tensor, ...).
    pub fn open(kind: &BackendKind, model: &Model) -> Result<Backend, EngineError> {
        match kind {
            BackendKind::Cpu => Ok(Backend {
                kind: kind.clone(),
                #[cfg(feature = "wgpu")]
                gpu: None,
            }),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu(name) => {
                let ctx = std::sync::Arc::new(crate::gpu::GpuContext::new(name.as_deref())?);
                Ok(Backend { kind: kind.clone(), gpu: Some(crate::gpu::GpuModel::upload(ctx, model)?) })
            }
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu(_) => {
                let _ = model;
                Err(BackendKind::parse("wgpu", None).unwrap_err())
            }
        }
    }

    /// `model` uploaded to an open wgpu device (the profiler uploads many models to one device).
    ///
    /// Errors: as [`Backend::open`].
    #[cfg(feature = "wgpu")]
    pub fn on_device(ctx: std::sync::Arc<crate::gpu::GpuContext>, model: &Model) -> Result<Backend, EngineError> {
        let name = Some(ctx.adapter.name.clone());
        Ok(Backend { kind: BackendKind::Wgpu(name), gpu: Some(crate::gpu::GpuModel::upload(ctx, model)?) })
    }

    /// The backend kind.
    pub fn kind(&self) -> &BackendKind {
        &self.kind
    }

    /// The adapter's facts (wgpu), `None` on the CPU.
    pub fn adapter(&self) -> Option<AdapterFacts> {
        #[cfg(feature = "wgpu")]
        if let Some(g) = &self.gpu {
            return Some(g.adapter().clone());
        }
        None
    }

    /// `CPU` or the adapter's `name (backend, type)`, for reports.
    pub fn label(&self) -> String {
        self.adapter().map_or_else(|| "CPU".to_string(), |a| a.label())
    }

    /// A new session on `model` (the model given to [`Backend::open`]). `opts.threads` and `opts.kernels`
    /// apply to the CPU only; `n_ctx` and `n_batch` to both.
    ///
    /// Errors: as [`Session::new`] / `GpuSession::new`.
    pub fn session<'a>(&'a self, model: &'a Model, opts: SessionOptions) -> Result<BackendSession<'a>, EngineError> {
        #[cfg(feature = "wgpu")]
        if let Some(g) = &self.gpu {
            return Ok(BackendSession::Gpu(crate::gpu::GpuSession::new(g, opts.n_ctx, opts.n_batch)?));
        }
        Ok(BackendSession::Cpu(Session::new(model, opts)?))
    }
}

/// A session on either backend, with the API of [`Session`].
#[allow(clippy::large_enum_variant)] // one per run: boxing would only add an indirection
pub enum BackendSession<'m> {
    /// The CPU engine.
    Cpu(Session<'m>),
    /// A wgpu adapter.
    #[cfg(feature = "wgpu")]
    Gpu(crate::gpu::GpuSession<'m>),
}

macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            BackendSession::Cpu($x) => $e,
            #[cfg(feature = "wgpu")]
            BackendSession::Gpu($x) => $e,
        }
    };
}

#[allow(clippy::useless_conversion)] // the CPU arm's error is already an EngineError, the GPU arm's is not
impl BackendSession<'_> {
    /// As [`Session::prefill`].
    pub fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError> {
        each!(self, s => s.prefill(tokens, logits).map_err(EngineError::from))
    }
    /// As [`Session::decode`].
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>, EngineError> {
        each!(self, s => s.decode(token).map_err(EngineError::from))
    }
    /// As [`Session::reset`].
    pub fn reset(&mut self) {
        each!(self, s => s.reset())
    }
    /// As [`Session::truncate`].
    pub fn truncate(&mut self, pos: usize) {
        each!(self, s => s.truncate(pos))
    }
    /// As [`Session::pos`].
    pub fn pos(&self) -> usize {
        each!(self, s => s.pos())
    }
    /// As [`Session::n_ctx`].
    pub fn n_ctx(&self) -> usize {
        each!(self, s => s.n_ctx())
    }
    /// As [`Session::kv_cache_bytes`].
    pub fn kv_cache_bytes(&self) -> usize {
        each!(self, s => s.kv_cache_bytes())
    }
    /// CPU worker threads (0 on a GPU).
    pub fn threads(&self) -> usize {
        match self {
            BackendSession::Cpu(s) => s.threads(),
            #[cfg(feature = "wgpu")]
            BackendSession::Gpu(_) => 0,
        }
    }
}

impl Evaluator for BackendSession<'_> {
    fn reset(&mut self) {
        BackendSession::reset(self)
    }
    fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError> {
        BackendSession::prefill(self, tokens, logits)
    }
}
