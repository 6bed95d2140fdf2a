//! [`GpuModel`]: a model's weights on the GPU, in their GGUF block format.

use super::kernels;
use super::{GpuContext, GpuError};
use crate::engine::model::Mat;
use crate::engine::{EngineConfig, Model};
use crate::gguf::GgmlType;
use std::collections::HashMap;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// One weight matrix on the GPU: `rows x cols` (`cols` a multiple of 32), raw GGUF blocks of type `ty`.
pub(crate) struct GMat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub buf: Arc<wgpu::Buffer>,
}

pub(crate) struct GLayer {
    pub attn_norm: Option<wgpu::Buffer>,
    pub wq: Option<GMat>,
    pub wk: Option<GMat>,
    pub wv: Option<GMat>,
    pub wo: Option<GMat>,
    pub ffn_norm: Option<wgpu::Buffer>,
    pub gate: Option<GMat>,
    pub up: Option<GMat>,
    pub down: Option<GMat>,
}

/// Compute pipelines for the weight types a model uses (compiled once per device: [`GpuContext::pipeline`]).
pub(crate) struct Pipelines {
    /// Per weight type: `matmul`, `get_rows`, `matvec`.
    pub matmul: HashMap<GgmlType, (Arc<wgpu::ComputePipeline>, Arc<wgpu::ComputePipeline>, Arc<wgpu::ComputePipeline>)>,
    pub rmsnorm: Arc<wgpu::ComputePipeline>,
    pub rope: Arc<wgpu::ComputePipeline>,
    pub attention: Arc<wgpu::ComputePipeline>,
    pub swiglu: Arc<wgpu::ComputePipeline>,
}

/// A model's weights uploaded to a GPU device: each weight matrix's raw GGUF bytes in one storage buffer
/// (padded to 4 bytes; F32, F16, Q8_0, Q4_0, Q4_1), dequantized only inside the kernels; the RMSNorm vectors
/// as f32. The tied output head shares the embedding's buffer. Source of truth for shapes and math:
/// [`crate::engine::Model`].
pub struct GpuModel {
    /// Hyper-parameters (per-layer shapes included).
    pub config: EngineConfig,
    /// The device.
    pub ctx: Arc<GpuContext>,
    pub(crate) tok_embd: GMat,
    pub(crate) output: GMat,
    pub(crate) output_norm: wgpu::Buffer,
    pub(crate) layers: Vec<GLayer>,
    pub(crate) pipes: Pipelines,
    /// Bytes of weights on the device.
    pub weight_bytes: u64,
}

impl GpuModel {
    /// Upload `model`'s weights to `ctx`'s device and compile the kernels for the weight types it uses
    /// (shader compilation can take seconds on a software adapter).
    ///
    /// Errors: [`GpuError::UnsupportedType`] naming the first tensor of another type, [`GpuError::TooLarge`]
    /// for a tensor over the adapter's storage-buffer limit, [`GpuError::Wgpu`] if a kernel fails to compile.
    pub fn upload(ctx: Arc<GpuContext>, model: &Model) -> Result<GpuModel, GpuError> {
        let bytes = model.storage.bytes();
        let mut weight_bytes = 0u64;
        let mut cache: HashMap<usize, Arc<wgpu::Buffer>> = HashMap::new();
        let mut up = |name: &str, m: &Mat| -> Result<GMat, GpuError> {
            if !kernels::supported(m.ty) {
                return Err(GpuError::UnsupportedType { tensor: name.to_string(), ty: m.ty });
            }
            if !m.cols.is_multiple_of(32) {
                return Err(GpuError::Wgpu(format!("tensor {name}: {} columns, not a multiple of 32", m.cols)));
            }
            let padded = m.len.div_ceil(4) * 4;
            if padded as u64 > ctx.max_binding {
                return Err(GpuError::TooLarge { what: format!("tensor {name}"), bytes: padded as u64, limit: ctx.max_binding });
            }
            let buf = match cache.get(&m.offset) {
                Some(b) => b.clone(),
                None => {
                    let mut data = bytes[m.offset..m.offset + m.len].to_vec();
                    data.resize(padded, 0);
                    let b = Arc::new(ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: &data,
                        usage: wgpu::BufferUsages::STORAGE,
                    }));
                    weight_bytes += padded as u64;
                    cache.insert(m.offset, b.clone());
                    b
                }
            };
            Ok(GMat { ty: m.ty, rows: m.rows, cols: m.cols, buf })
        };
        let tok_embd = up("token_embd.weight", &model.tok_embd)?;
        let output = up("output.weight", &model.output)?;
        let mut layers = Vec::with_capacity(model.layers.len());
        let f32buf = |name: &str, v: &[f32]| -> Option<wgpu::Buffer> {
            if v.is_empty() {
                return None;
            }
            Some(ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::STORAGE,
            }))
        };
        for (i, l) in model.layers.iter().enumerate() {
            let mut opt = |n: &str, m: &Option<Mat>| m.as_ref().map(|m| up(&format!("blk.{i}.{n}.weight"), m)).transpose();
            layers.push(GLayer {
                wq: opt("attn_q", &l.wq)?,
                wk: opt("attn_k", &l.wk)?,
                wv: opt("attn_v", &l.wv)?,
                wo: opt("attn_output", &l.wo)?,
                gate: opt("ffn_gate", &l.gate)?,
                up: opt("ffn_up", &l.up)?,
                down: opt("ffn_down", &l.down)?,
                attn_norm: f32buf(&format!("blk.{i}.attn_norm.weight"), &l.attn_norm),
                ffn_norm: f32buf(&format!("blk.{i}.ffn_norm.weight"), &l.ffn_norm),
            });
        }
        let output_norm = f32buf("output_norm.weight", &model.output_norm).expect("output norm");
        // Kernels for the weight types in use.
        let mut types: Vec<GgmlType> = vec![tok_embd.ty, output.ty];
        for l in &layers {
            for m in [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down].into_iter().flatten() {
                types.push(m.ty);
            }
        }
        let mut matmul = HashMap::new();
        for ty in types {
            if let std::collections::hash_map::Entry::Vacant(e) = matmul.entry(ty) {
                let src = kernels::matmul_source(ty, ctx.rows_per_lane).expect("supported type");
                let label = format!("matmul {ty} rows {}", ctx.rows_per_lane);
                e.insert((
                    ctx.pipeline(&label, &src, "matmul"),
                    ctx.pipeline(&label, &src, "get_rows"),
                    ctx.pipeline(&label, &src, "matvec"),
                ));
            }
        }
        let pipes = Pipelines {
            matmul,
            rmsnorm: ctx.pipeline("rmsnorm", &kernels::rmsnorm_source(), "main"),
            rope: ctx.pipeline("rope", &kernels::rope_source(), "main"),
            attention: ctx.pipeline("attention", &kernels::attention_source(), "main"),
            swiglu: ctx.pipeline("swiglu", &kernels::swiglu_source(), "main"),
        };
        ctx.check()?;
        Ok(GpuModel { config: model.config.clone(), ctx, tok_embd, output, output_norm, layers, pipes, weight_bytes })
    }

    /// The adapter the model lives on.
    pub fn adapter(&self) -> &super::AdapterFacts {
        &self.ctx.adapter
    }
}
