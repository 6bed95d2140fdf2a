//! [`GpuSession`]: the KV cache on the GPU and the forward pass of `engine::session` recorded as compute
//! dispatches (one command buffer per batch; the logits read back in chunks).

use super::kernels::{MATMUL_TILE, PARAM_WORDS, WG};
use super::model::{GMat, GpuModel};
use super::GpuError;
use crate::engine::{ops, EngineError, Logits};

/// Output rows per read-back of the logits (the head runs in chunks of this many tokens).
const HEAD_CHUNK: usize = 64;
/// Bytes of one uniform parameter slot (`min_uniform_buffer_offset_alignment` is at most 256).
const SLOT: u64 = 256;
/// Largest score scratch buffer the attention may use, bytes (prefill batches are split to stay under it).
const MAX_SCRATCH: u64 = 256 << 20;

struct KvCache {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    kvd: usize,
}

/// A sequence on the GPU: KV cache (f32, `n_ctx x n_head_kv*head_dim` per block with attention), activation
/// buffers for `n_batch` tokens, and the forward pass of [`crate::engine::Session`] (same equations:
/// RMSNorm, RoPE from an f64 table, causal GQA attention, SwiGLU, tied output head) as WGSL kernels.
/// Products use f32 activations (the CPU engine quantizes them to 8 bits for quantized weights), so logits
/// differ from the CPU engine's by that rounding.
pub struct GpuSession<'m> {
    model: &'m GpuModel,
    n_ctx: usize,
    n_batch: usize,
    pos: usize,
    cache: Vec<Option<KvCache>>,
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    q: wgpu::Buffer,
    att: wgpu::Buffer,
    g: wgpu::Buffer,
    u: wgpu::Buffer,
    scores: wgpu::Buffer,
    tokens: wgpu::Buffer,
    rope: wgpu::Buffer,
    logits: wgpu::Buffer,
    staging: wgpu::Buffer,
    params: wgpu::Buffer,
    n_slots: usize,
}

impl<'m> GpuSession<'m> {
    /// A new session with an empty KV cache of `n_ctx` tokens (0: the training context, capped at 4096) and
    /// activation buffers for prefill batches of `n_batch` tokens (0: 512; lowered so that the attention
    /// scores of a batch fit in 256 MiB).
    ///
    /// Errors: [`GpuError::Engine`] ([`EngineError::Config`]) if `n_ctx` exceeds the training context,
    /// [`GpuError::TooLarge`] if a buffer exceeds the adapter's limit.
    pub fn new(model: &'m GpuModel, n_ctx: usize, n_batch: usize) -> Result<Self, GpuError> {
        let c = &model.config;
        let n_ctx = if n_ctx == 0 { c.n_ctx_train.clamp(1, 4096) } else { n_ctx };
        if c.n_ctx_train > 0 && n_ctx > c.n_ctx_train {
            return Err(EngineError::Config(format!("context {n_ctx} exceeds the model's training context {}", c.n_ctx_train)).into());
        }
        let max_heads = c.layers.iter().map(|l| l.n_head).max().unwrap_or(0).max(1);
        let max_ff = c.layers.iter().map(|l| l.n_ff).max().unwrap_or(0).max(1);
        let mut n_batch = if n_batch == 0 { 512 } else { n_batch }.min(n_ctx).max(1);
        while n_batch > 1 && (n_batch * max_heads * n_ctx * 4) as u64 > MAX_SCRATCH.min(model.ctx.max_binding) {
            n_batch /= 2;
        }
        let dev = &model.ctx.device;
        let limit = model.ctx.max_binding;
        let buf = |what: &str, floats: usize, extra: wgpu::BufferUsages| -> Result<wgpu::Buffer, GpuError> {
            let bytes = (floats.max(1) * 4) as u64;
            if bytes > limit {
                return Err(GpuError::TooLarge { what: what.to_string(), bytes, limit });
            }
            Ok(dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
                mapped_at_creation: false,
            }))
        };
        let none = wgpu::BufferUsages::empty();
        let (d, hd) = (c.n_embd, c.head_dim);
        let mut cache = Vec::with_capacity(c.layers.len());
        for (i, l) in c.layers.iter().enumerate() {
            cache.push(if l.has_attention() {
                let kvd = l.n_head_kv * hd;
                Some(KvCache {
                    k: buf(&format!("KV cache K of block {i}"), n_ctx * kvd, none)?,
                    v: buf(&format!("KV cache V of block {i}"), n_ctx * kvd, none)?,
                    kvd,
                })
            } else {
                None
            });
        }
        let head_rows = HEAD_CHUNK.min(n_batch);
        let n_slots = c.layers.len() * 14 + 4 + n_batch.div_ceil(HEAD_CHUNK);
        let params = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: n_slots as u64 * SLOT,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let s = GpuSession {
            model,
            n_ctx,
            n_batch,
            pos: 0,
            x: buf("x", n_batch * d, none)?,
            h: buf("h", n_batch * d, none)?,
            q: buf("q", n_batch * max_heads * hd, none)?,
            att: buf("attention output", n_batch * max_heads * hd, none)?,
            g: buf("ffn gate", n_batch * max_ff, none)?,
            u: buf("ffn up", n_batch * max_ff, none)?,
            scores: buf("attention scores", n_batch * max_heads * n_ctx, none)?,
            tokens: buf("tokens", n_batch, none)?,
            rope: buf("rope table", n_batch * c.rope_dims.max(2), none)?,
            logits: buf("logits", head_rows * c.n_vocab, wgpu::BufferUsages::COPY_SRC)?,
            staging: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("logits read-back"),
                size: (head_rows * c.n_vocab * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            params,
            n_slots,
            cache,
        };
        model.ctx.check()?;
        Ok(s)
    }

    /// Tokens in the KV cache (the position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// KV cache capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens per prefill batch (after the scratch-size cap of [`GpuSession::new`]).
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Bytes held by the KV cache on the device.
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.iter().flatten().map(|c| 2 * self.n_ctx * c.kvd * 4).sum()
    }

    /// Forget the sequence.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Keep only the first `pos` tokens of the KV cache (no-op when `pos >= self.pos()`).
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Run `tokens` (in batches of `n_batch`), append them to the KV cache and return logits, exactly as
    /// [`crate::engine::Session::prefill`]: `[n_vocab]` for [`Logits::Last`], `[tokens.len(), n_vocab]` for
    /// [`Logits::All`], `[tokens.len() - i, n_vocab]` for [`Logits::From(i)`](Logits::From).
    ///
    /// Errors: [`EngineError::EmptyInput`], [`EngineError::ContextFull`], [`EngineError::TokenOutOfRange`],
    /// [`EngineError::Config`] (as [`GpuError::Engine`]); [`GpuError::Wgpu`] when the device fails.
    pub fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, GpuError> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyInput.into());
        }
        if self.pos + tokens.len() > self.n_ctx {
            return Err(EngineError::ContextFull { pos: self.pos, n_tokens: tokens.len(), n_ctx: self.n_ctx }.into());
        }
        let nv = self.model.config.n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= nv) {
            return Err(EngineError::TokenOutOfRange { token: t, n_vocab: nv }.into());
        }
        let from = match logits {
            Logits::Last => tokens.len() - 1,
            Logits::All => 0,
            Logits::From(i) if i < tokens.len() => i,
            Logits::From(i) => {
                return Err(EngineError::Config(format!("logits from token {i} of a batch of {}", tokens.len())).into());
            }
        };
        let mut out = Vec::with_capacity((tokens.len() - from) * nv);
        let nb = self.n_batch;
        for (i, chunk) in tokens.chunks(nb).enumerate() {
            let start = i * nb;
            let first = from.max(start) - start;
            let want = if first >= chunk.len() { None } else { Some(first) };
            self.forward(chunk, want, &mut out)?;
            self.pos += chunk.len();
        }
        Ok(out)
    }

    /// Run one token and return its logits `[n_vocab]`. Errors as [`GpuSession::prefill`].
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>, GpuError> {
        self.prefill(&[token], Logits::Last)
    }

    fn bind(&self, pipe: &'static str, buffers: &[&wgpu::Buffer], slot: usize) -> wgpu::BindGroup {
        let p = &self.model.pipes;
        let pl = match pipe {
            "rmsnorm" => &p.rmsnorm,
            "rope" => &p.rope,
            "attention" => &p.attention,
            "swiglu" => &p.swiglu,
            _ => unreachable!(),
        };
        self.bind_to(pl, buffers, slot)
    }

    /// A bind group of `buffers` at bindings `0..`, then the parameter slot.
    fn bind_to(&self, pl: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer], slot: usize) -> wgpu::BindGroup {
        let mut entries: Vec<wgpu::BindGroupEntry> =
            buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params,
                offset: slot as u64 * SLOT,
                size: std::num::NonZeroU64::new((PARAM_WORDS * 4) as u64),
            }),
        });
        self.model.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pl.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// One batch (`tokens.len() <= n_batch`) at position `self.pos`; appends the logits of tokens
    /// `first..` to `out` when `first` is `Some`.
    fn forward(&self, tokens: &[u32], first: Option<usize>, out: &mut Vec<f32>) -> Result<(), GpuError> {
        let m = self.model;
        let c = &m.config;
        let ctx = &m.ctx;
        let (n, d, hd, pos0) = (tokens.len(), c.n_embd, c.head_dim, self.pos);
        let q = &ctx.queue;
        q.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        // RoPE table (cos, sin) per token and pair, in f64 as the CPU engine computes it.
        let half = c.rope_dims / 2;
        if half > 0 {
            let mut tab = Vec::with_capacity(n * half * 2);
            let mut t = Vec::new();
            for i in 0..n {
                ops::rope_table(pos0 + i, c.rope_dims, c.rope_base, &mut t);
                tab.extend(t.iter().flat_map(|&(cs, sn)| [cs, sn]));
            }
            q.write_buffer(&self.rope, 0, bytemuck::cast_slice(&tab));
        }
        let mut params: Vec<[u32; PARAM_WORDS]> = Vec::new();
        let mut ops_: Vec<(&wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))> = Vec::new();
        let mut slot = |p: &[u32]| {
            let mut w = [0u32; PARAM_WORDS];
            w[..p.len()].copy_from_slice(p);
            params.push(w);
            params.len() - 1
        };
        let wg = WG as usize;
        // A 1-D grid of `count` invocations as (x, y) workgroups and the row width `x * WG`.
        let grid = |count: usize| -> ((u32, u32), u32) {
            let groups = count.div_ceil(wg).max(1);
            let x = groups.min(65535);
            ((x as u32, groups.div_ceil(x) as u32), (x * wg) as u32)
        };
        let matmul = |w: &GMat, x: &wgpu::Buffer, y: &wgpu::Buffer, n: usize, slot: usize| {
            // One token (decode): the one-token tile.
            let (pl, tile) = if n == 1 { (&*m.pipes.matmul[&w.ty].2, 1) } else { (&*m.pipes.matmul[&w.ty].0, MATMUL_TILE as usize) };
            let b = self.bind_to(pl, &[&w.buf, x, y], slot);
            let per_group = wg * m.ctx.rows_per_lane as usize;
            (pl, b, ((w.rows.div_ceil(per_group)) as u32, n.div_ceil(tile) as u32))
        };
        let mm_params = |w: &GMat, n: usize, x_off: usize, y_off: usize, acc: bool| {
            [w.rows as u32, w.cols as u32, n as u32, x_off as u32, y_off as u32, acc as u32]
        };
        // Embeddings.
        {
            let e = &m.tok_embd;
            let pl = &*m.pipes.matmul[&e.ty].1;
            let s = slot(&[0, d as u32, n as u32]);
            // get_rows binds w, x (unused by the entry point, so not in its layout), y, params, tokens.
            let ents = [
                wgpu::BindGroupEntry { binding: 0, resource: e.buf.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: self.x.as_entire_binding() },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.params,
                        offset: s as u64 * SLOT,
                        size: std::num::NonZeroU64::new((PARAM_WORDS * 4) as u64),
                    }),
                },
                wgpu::BindGroupEntry { binding: 4, resource: self.tokens.as_entire_binding() },
            ];
            let b = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pl.get_bind_group_layout(0), entries: &ents });
            let (g, _) = grid(n * d / 32);
            assert_eq!(g.1, 1, "embedding grid");
            ops_.push((pl, b, g));
        }
        let eps = c.rms_eps.to_bits();
        for (l, (lw, kv)) in m.layers.iter().zip(&self.cache).enumerate() {
            let shape = c.layers[l];
            if let (Some(kv), true) = (kv, shape.has_attention()) {
                let (wq, wk, wv, wo) = (lw.wq.as_ref().unwrap(), lw.wk.as_ref().unwrap(), lw.wv.as_ref().unwrap(), lw.wo.as_ref().unwrap());
                let s = slot(&[d as u32, 0, eps]);
                ops_.push((&*m.pipes.rmsnorm, self.bind("rmsnorm", &[&self.x, lw.attn_norm.as_ref().unwrap(), &self.h], s), (n as u32, 1)));
                let s = slot(&mm_params(wq, n, 0, 0, false));
                ops_.push(matmul(wq, &self.h, &self.q, n, s));
                let s = slot(&mm_params(wk, n, 0, pos0 * kv.kvd, false));
                ops_.push(matmul(wk, &self.h, &kv.k, n, s));
                let s = slot(&mm_params(wv, n, 0, pos0 * kv.kvd, false));
                ops_.push(matmul(wv, &self.h, &kv.v, n, s));
                if half > 0 {
                    let neox = c.rope_neox as u32;
                    let (g, width) = grid(n * shape.n_head * half);
                    let s = slot(&[n as u32, shape.n_head as u32, hd as u32, half as u32, 0, (shape.n_head * hd) as u32, neox, width]);
                    ops_.push((&*m.pipes.rope, self.bind("rope", &[&self.q, &self.rope], s), g));
                    let (g, width) = grid(n * shape.n_head_kv * half);
                    let s = slot(&[n as u32, shape.n_head_kv as u32, hd as u32, half as u32, (pos0 * kv.kvd) as u32, kv.kvd as u32, neox, width]);
                    ops_.push((&*m.pipes.rope, self.bind("rope", &[&kv.k, &self.rope], s), g));
                }
                let group = shape.n_head / shape.n_head_kv;
                let scale = (1.0 / (hd as f32).sqrt()).to_bits();
                let s = slot(&[pos0 as u32, shape.n_head as u32, group as u32, hd as u32, kv.kvd as u32, self.n_ctx as u32, scale]);
                ops_.push((
                    &*m.pipes.attention,
                    self.bind("attention", &[&self.q, &kv.k, &kv.v, &self.att, &self.scores], s),
                    (shape.n_head as u32, n as u32),
                ));
                let s = slot(&mm_params(wo, n, 0, 0, true));
                ops_.push(matmul(wo, &self.att, &self.x, n, s));
            }
            if shape.has_ffn() {
                let (wg_, wu, wd) = (lw.gate.as_ref().unwrap(), lw.up.as_ref().unwrap(), lw.down.as_ref().unwrap());
                let s = slot(&[d as u32, 0, eps]);
                ops_.push((&*m.pipes.rmsnorm, self.bind("rmsnorm", &[&self.x, lw.ffn_norm.as_ref().unwrap(), &self.h], s), (n as u32, 1)));
                let s = slot(&mm_params(wg_, n, 0, 0, false));
                ops_.push(matmul(wg_, &self.h, &self.g, n, s));
                let s = slot(&mm_params(wu, n, 0, 0, false));
                ops_.push(matmul(wu, &self.h, &self.u, n, s));
                let (g, width) = grid(n * shape.n_ff);
                let s = slot(&[(n * shape.n_ff) as u32, 0, 0, 0, 0, 0, 0, width]);
                ops_.push((&*m.pipes.swiglu, self.bind("swiglu", &[&self.g, &self.u], s), g));
                let s = slot(&mm_params(wd, n, 0, 0, true));
                ops_.push(matmul(wd, &self.g, &self.x, n, s));
            }
        }
        // Final RMSNorm of the rows whose logits are wanted, into h.
        if let Some(f) = first {
            let s = slot(&[d as u32, (f * d) as u32, eps]);
            ops_.push((&*m.pipes.rmsnorm, self.bind("rmsnorm", &[&self.x, &m.output_norm, &self.h], s), ((n - f) as u32, 1)));
        }
        // The output head, in chunks of HEAD_CHUNK rows: each chunk one more submission and read-back.
        let head_chunks: Vec<(usize, usize)> = match first {
            None => vec![],
            Some(f) => (f..n).step_by(HEAD_CHUNK).map(|a| ((n - a).min(HEAD_CHUNK), slot(&mm_params(&m.output, (n - a).min(HEAD_CHUNK), (a - f) * d, 0, false)))).collect(),
        };
        assert!(params.len() <= self.n_slots, "parameter slots: {} > {}", params.len(), self.n_slots);
        let mut bytes = Vec::with_capacity(params.len() * SLOT as usize);
        for p in &params {
            let mut b = [0u8; SLOT as usize];
            b[..PARAM_WORDS * 4].copy_from_slice(bytemuck::cast_slice(p));
            bytes.extend_from_slice(&b);
        }
        q.write_buffer(&self.params, 0, &bytes);
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
            for (pl, b, g) in &ops_ {
                pass.set_pipeline(pl);
                pass.set_bind_group(0, b, &[]);
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
        }
        let nv = c.n_vocab;
        if head_chunks.is_empty() {
            q.submit([enc.finish()]);
            ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Wgpu(e.to_string()))?;
            return ctx.check();
        }
        let mut first_enc = Some(enc);
        for &(rows, s) in &head_chunks {
            let mut enc = first_enc
                .take()
                .unwrap_or_else(|| ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("output head") }));
            {
                let (pl, b, g) = matmul(&m.output, &self.h, &self.logits, rows, s);
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("output head"), timestamp_writes: None });
                pass.set_pipeline(pl);
                pass.set_bind_group(0, &b, &[]);
                pass.dispatch_workgroups(g.0, g.1, 1);
            }
            let len = (rows * nv * 4) as u64;
            enc.copy_buffer_to_buffer(&self.logits, 0, &self.staging, 0, len);
            q.submit([enc.finish()]);
            let slice = self.staging.slice(0..len);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Wgpu(e.to_string()))?;
            rx.recv()
                .map_err(|_| GpuError::Wgpu("logits read-back: no answer".into()))?
                .map_err(|e| GpuError::Wgpu(format!("logits read-back: {e}")))?;
            {
                let view = slice.get_mapped_range().map_err(|e| GpuError::Wgpu(format!("logits read-back: {e:?}")))?;
                out.extend_from_slice(bytemuck::cast_slice(&view[..]));
            }
            self.staging.unmap();
            ctx.check()?;
        }
        Ok(())
    }
}
