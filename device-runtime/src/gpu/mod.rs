//! The wgpu backend (cargo feature `wgpu`): the forward pass of [`crate::engine`] on a GPU adapter reached
//! through wgpu (Vulkan, Metal, DX12, OpenGL), with own WGSL kernels ([`kernels`]) that read the weights in
//! their GGUF block format (F32, F16, Q8_0, Q4_0, Q4_1) and dequantize them inside the matrix products.
//!
//! - [`GpuContext`]: instance, adapter, device and queue; [`list_adapters`] and selection by name.
//! - [`GpuModel`]: a [`crate::engine::Model`]'s weights uploaded as raw GGUF bytes (one storage buffer per
//!   tensor; the RMSNorm vectors as f32).
//! - [`GpuSession`]: the KV cache on the GPU and [`GpuSession::prefill`] / [`GpuSession::decode`], the same
//!   API and math as [`crate::engine::Session`] (per-layer shapes, so heterogeneous `deci` models run).
//!
//! Why not burn-wgpu: burn's tensors are f32/f16 (or its own quantization schemes), so GGUF blocks would have
//! to be expanded to f32 in memory, and burn would make the runtime large; see the README.

pub mod kernels;
mod model;
mod session;

pub use model::GpuModel;
pub use session::GpuSession;

use std::sync::{Arc, Mutex};

/// Errors of the wgpu backend. Every message names the adapter, the tensor or the limit involved.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter exists (no GPU driver, no software rasterizer).
    #[error(
        "no wgpu adapter found (backends {backends}); on a machine without a GPU install Mesa's software Vulkan \
         driver (Debian: mesa-vulkan-drivers, adapter \"llvmpipe\") and set XDG_RUNTIME_DIR"
    )]
    NoAdapter {
        /// The backends searched.
        backends: String,
    },
    /// `--adapter NAME` matched none of the adapters.
    #[error("no wgpu adapter matches {name:?}; adapters: {}", available.join("; "))]
    NoMatch {
        /// The name asked for.
        name: String,
        /// The adapters found (`name (backend, type)`).
        available: Vec<String>,
    },
    /// `EDGERUN_WGPU_ROWS` is set to something other than a whole number from 1 to 8.
    #[error("EDGERUN_WGPU_ROWS={value:?}: expected weight rows per invocation, a whole number from 1 to 8")]
    BadRows {
        /// The variable's value.
        value: String,
    },
    /// The adapter refused to create a device.
    #[error("adapter {adapter}: cannot create a device: {reason}")]
    Device {
        /// The adapter.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// A tensor type the kernels cannot dequantize.
    #[error("tensor {tensor}: type {ty} is not supported by the wgpu backend (supported: F32, F16, Q8_0, Q4_0, Q4_1)")]
    UnsupportedType {
        /// Tensor name.
        tensor: String,
        /// Its type.
        ty: crate::gguf::GgmlType,
    },
    /// A buffer larger than the adapter allows.
    #[error("{what}: {bytes} bytes exceed the adapter's limit of {limit} bytes per storage buffer")]
    TooLarge {
        /// The tensor or buffer.
        what: String,
        /// Its size.
        bytes: u64,
        /// `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// A wgpu error (shader compilation, validation, mapping, device lost).
    #[error("wgpu: {0}")]
    Wgpu(String),
    /// Bad input (empty, context full, token out of range) or model.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

impl From<GpuError> for crate::engine::EngineError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Engine(e) => e,
            other => crate::engine::EngineError::Config(other.to_string()),
        }
    }
}

pub use crate::profile::device::AdapterFacts;

fn facts(i: &wgpu::AdapterInfo) -> AdapterFacts {
        AdapterFacts {
            name: i.name.clone(),
            vendor: format!("{:#x}", i.vendor),
            device: format!("{:#x}", i.device),
            device_type: format!("{:?}", i.device_type),
            backend: format!("{:?}", i.backend),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
        }
}

/// Block on a wgpu future. wgpu's native futures are ready when first polled (the work happens in the
/// calls); the loop is for safety.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// The backends searched: Vulkan (Linux, Windows, Android; Mesa's lavapipe without a GPU), Metal (Apple),
/// DX12 (Windows), then OpenGL as the fallback.
pub fn backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backends(),
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Order of preference: real GPUs first (discrete, integrated, virtual), software last; Vulkan/Metal/DX12
/// before OpenGL.
fn rank(i: &wgpu::AdapterInfo) -> (u8, u8) {
    let t = match i.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (t, u8::from(i.backend == wgpu::Backend::Gl))
}

fn sorted_adapters(inst: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut a = block_on(inst.enumerate_adapters(backends()));
    a.sort_by_key(|a| rank(&a.get_info()));
    a
}

/// The wgpu adapters of this machine, best first (see [`GpuContext::new`] for the order).
pub fn list_adapters() -> Vec<AdapterFacts> {
    sorted_adapters(&instance()).iter().map(|a| facts(&a.get_info())).collect()
}

/// A wgpu device and queue on a chosen adapter, with the adapter's facts.
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter's facts.
    pub adapter: AdapterFacts,
    /// `max_storage_buffer_binding_size` of the device.
    pub max_binding: u64,
    /// Weight rows per invocation of the matrix products: 8 on CPU (software) adapters, where each
    /// activation load is a per-lane gather and is shared by that many rows (llvmpipe, 2 threads, pp32 /
    /// tg4 tokens/s: 1 row 1.32 / 0.82, 4 rows 3.66 / 1.74, 8 rows 4.91 / 1.84); 1 on GPUs (more
    /// invocations in flight). `EDGERUN_WGPU_ROWS` (1..=8) overrides it.
    pub rows_per_lane: u32,
    errors: Arc<Mutex<Vec<String>>>,
    pipelines: Mutex<std::collections::HashMap<String, Arc<wgpu::ComputePipeline>>>,
}

impl GpuContext {
    /// Open a device on the first adapter whose `name (backend, type)` contains `name` (case-insensitive),
    /// or on the best adapter when `name` is `None`: discrete, then integrated, virtual, other and CPU
    /// (software) adapters; Vulkan/Metal/DX12 before OpenGL. The device gets the adapter's full limits.
    ///
    /// Errors: [`GpuError::NoAdapter`], [`GpuError::NoMatch`] (listing the adapters), [`GpuError::Device`],
    /// [`GpuError::BadRows`] (`EDGERUN_WGPU_ROWS` set but not 1..=8).
    pub fn new(name: Option<&str>) -> Result<GpuContext, GpuError> {
        // Checked first: a bad value fails before adapters are enumerated and a device is created.
        let rows_override = match std::env::var("EDGERUN_WGPU_ROWS") {
            Err(_) => None,
            Ok(v) => {
                let rows = v.trim().parse::<u32>().ok().filter(|r| (1..=8).contains(r));
                Some(rows.ok_or(GpuError::BadRows { value: v })?)
            }
        };
        let inst = instance();
        let adapters = sorted_adapters(&inst);
        if adapters.is_empty() {
            return Err(GpuError::NoAdapter { backends: format!("{:?}", backends()) });
        }
        let adapter = match name {
            None => adapters.into_iter().next().unwrap(),
            Some(n) => {
                let low = n.to_lowercase();
                let labels: Vec<String> = adapters.iter().map(|a| facts(&a.get_info()).label()).collect();
                match labels.iter().position(|l| l.to_lowercase().contains(&low)) {
                    Some(i) => adapters.into_iter().nth(i).unwrap(),
                    None => return Err(GpuError::NoMatch { name: n.to_string(), available: labels }),
                }
            }
        };
        let facts = facts(&adapter.get_info());
        let limits = adapter.limits();
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("edgerun"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device { adapter: facts.label(), reason: e.to_string() })?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        let max_binding = device.limits().max_storage_buffer_binding_size;
        let cpu = adapter.get_info().device_type == wgpu::DeviceType::Cpu;
        let rows_per_lane = rows_override.unwrap_or(if cpu { 8 } else { 1 });
        Ok(GpuContext { device, queue, adapter: facts, max_binding, rows_per_lane, errors, pipelines: Mutex::default() })
    }

    /// This context with `rows` weight rows per matrix-product invocation (clamped to 1..=8) instead of the
    /// adapter's default ([`GpuContext::rows_per_lane`]); call before uploading a model (kernels are built
    /// at upload). For tests and tuning on a new adapter.
    pub fn with_rows_per_lane(mut self, rows: u32) -> GpuContext {
        self.rows_per_lane = rows.clamp(1, 8);
        self
    }

    /// The compute pipeline of WGSL `src`'s entry point `entry`, compiled on first use and kept for the
    /// device's lifetime under `label` (shader compilation takes seconds on a software adapter). Compilation
    /// errors surface at the next [`GpuContext::check`].
    pub(crate) fn pipeline(&self, label: &str, src: &str, entry: &str) -> Arc<wgpu::ComputePipeline> {
        let key = format!("{label}/{entry}");
        let mut map = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(label),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
                Arc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                }))
            })
            .clone()
    }

    /// The first wgpu error reported since the last call (validation, shader compilation, out of memory).
    pub(crate) fn check(&self) -> Result<(), GpuError> {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_empty() {
            Ok(())
        } else {
            let all = std::mem::take(&mut *e);
            Err(GpuError::Wgpu(all.join("; ")))
        }
    }
}
