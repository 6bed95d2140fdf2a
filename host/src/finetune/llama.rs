//! A trainable elastic LLaMA in burn, used by the trainer until the shared elastic model of
//! [`crate::elastic`] is available (same maths as the runtime engine, `device_runtime::engine`): RMSNorm,
//! RoPE with interleaved pairs (llama.cpp `LLAMA_ROPE_TYPE_NORM`, the GGUF convention for `llama`/`deci`),
//! causal GQA attention, SwiGLU FFN, tied or separate output head.
//!
//! Weights are loaded from a GGUF (any type `device_runtime::quant` dequantizes) and kept as `[in, out]`
//! matrices (the transpose of the GGUF row layout), so that a sub-network's slices are plain column/row
//! ranges: the first `k` FFN neurons are the first `k` columns of gate/up and rows of down; the first `g` KV
//! groups are the first `g * head_dim` columns of k/v and the first `g * (n_head / n_kv) * head_dim` columns of
//! q and rows of o (query head `h` belongs to KV group `h / (n_head / n_kv)`, as in llama.cpp). Slicing uses
//! `narrow` on the shared parameters inside the autodiff graph, so gradients reach only the slices used.

use burn::module::{Module, Param};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;

use super::train::ElasticLm;

/// One transformer block's weights (`[in, out]` layout).
#[derive(Module, Debug)]
pub struct LlamaBlock {
    /// `attn_norm.weight` `[d]`.
    pub attn_norm: Param<Tensor<1>>,
    /// `attn_q.weight` transposed: `[d, n_head * head_dim]`.
    pub wq: Param<Tensor<2>>,
    /// `attn_k.weight` transposed: `[d, n_kv * head_dim]`.
    pub wk: Param<Tensor<2>>,
    /// `attn_v.weight` transposed: `[d, n_kv * head_dim]`.
    pub wv: Param<Tensor<2>>,
    /// `attn_output.weight` transposed: `[n_head * head_dim, d]`.
    pub wo: Param<Tensor<2>>,
    /// `ffn_norm.weight` `[d]`.
    pub ffn_norm: Param<Tensor<1>>,
    /// `ffn_gate.weight` transposed: `[d, ffn]`.
    pub w_gate: Param<Tensor<2>>,
    /// `ffn_up.weight` transposed: `[d, ffn]`.
    pub w_up: Param<Tensor<2>>,
    /// `ffn_down.weight` transposed: `[ffn, d]`.
    pub w_down: Param<Tensor<2>>,
}

/// The elastic LLaMA super-network (see the module docs).
#[derive(Module, Debug)]
pub struct LlamaSupernet {
    /// `token_embd.weight` `[vocab, d]`.
    pub embd: Param<Tensor<2>>,
    /// `output.weight` transposed `[d, vocab]` when the head is not tied.
    pub output: Option<Param<Tensor<2>>>,
    /// `output_norm.weight` `[d]`.
    pub out_norm: Param<Tensor<1>>,
    /// The blocks.
    pub blocks: Vec<LlamaBlock>,
    /// Hyper-parameters.
    #[module(skip)]
    pub cfg: ModelConfig,
}

/// A 2-D GGUF tensor, dequantized and transposed to `[in, out]`. Errors: missing, unsupported type, not 2-D.
fn tensor_2d_t(f: &GgufFile, name: &str, device: &Device) -> Result<Param<Tensor<2>>, String> {
    let (dims, data) = read(f, name)?;
    if dims.len() != 2 {
        return Err(format!("{}: tensor {name} has {} dims, expected 2", f.name(), dims.len()));
    }
    // GGUF row-major [rows = dims[1], cols = dims[0]] = [out, in]; store [in, out].
    let t = Tensor::<2>::from_data(TensorData::new(data, [dims[1], dims[0]]), device).transpose();
    Ok(Param::from_tensor(Tensor::from_data(t.into_data(), device)))
}

fn read(f: &GgufFile, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t = f.tensor(name).ok_or_else(|| format!("{}: tensor {name} is missing", f.name()))?;
    let data = device_runtime::quant::dequantize_to_vec(t.ty, f.tensor_data(t))
        .map_err(|e| format!("{}: tensor {name}: {e}", f.name()))?;
    Ok((t.dims.iter().map(|&d| d as usize).collect(), data))
}

fn tensor_1d(f: &GgufFile, name: &str, device: &Device) -> Result<Param<Tensor<1>>, String> {
    let (_, data) = read(f, name)?;
    let n = data.len();
    Ok(Param::from_tensor(Tensor::<1>::from_data(TensorData::new(data, [n]), device)))
}

impl LlamaSupernet {
    /// Loads a `llama` (or uniform `deci`) GGUF: every block must have attention and an FFN, and RoPE must
    /// rotate the whole head (`rope_dim == head_dim`).
    ///
    /// Errors: a message naming the file and the problem.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<LlamaSupernet, String> {
        let f = GgufFile::open(path).map_err(|e| e.to_string())?;
        let cfg = ModelConfig::from_gguf(&f).map_err(|e| e.to_string())?;
        if cfg.rope_dim != cfg.head_dim {
            return Err(format!("{}: partial RoPE (rope_dim {} < head_dim {}) is not supported", f.name(), cfg.rope_dim, cfg.head_dim));
        }
        if cfg.ffn.contains(&0) || cfg.n_heads.contains(&0) {
            return Err(format!("{}: blocks without attention or FFN are not supported", f.name()));
        }
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{l}.{s}.weight");
            blocks.push(LlamaBlock {
                attn_norm: tensor_1d(&f, &p("attn_norm"), device)?,
                wq: tensor_2d_t(&f, &p("attn_q"), device)?,
                wk: tensor_2d_t(&f, &p("attn_k"), device)?,
                wv: tensor_2d_t(&f, &p("attn_v"), device)?,
                wo: tensor_2d_t(&f, &p("attn_output"), device)?,
                ffn_norm: tensor_1d(&f, &p("ffn_norm"), device)?,
                w_gate: tensor_2d_t(&f, &p("ffn_gate"), device)?,
                w_up: tensor_2d_t(&f, &p("ffn_up"), device)?,
                w_down: tensor_2d_t(&f, &p("ffn_down"), device)?,
            });
        }
        let (dims, data) = read(&f, "token_embd.weight")?;
        let embd = Param::from_tensor(Tensor::<2>::from_data(TensorData::new(data, [dims[1], dims[0]]), device));
        let output = if cfg.tied_embeddings { None } else { Some(tensor_2d_t(&f, "output.weight", device)?) };
        Ok(LlamaSupernet { embd, output, out_norm: tensor_1d(&f, "output_norm.weight", device)?, blocks, cfg })
    }
}

/// RMSNorm over the last dim of `[N, d]` with weight `[d]`.
fn rmsnorm(x: Tensor<2>, w: Tensor<1>, eps: f32) -> Tensor<2> {
    let ms = x.clone().square().mean_dim(1);
    x.mul(ms.add_scalar(eps).sqrt().recip()).mul(w.unsqueeze::<2>())
}

/// RoPE (interleaved pairs) on `[B, T, H, hd]` with `cos`, `sin` of shape `[1, T, 1, hd/2, 1]`.
fn rope(x: Tensor<4>, cos: &Tensor<5>, sin: &Tensor<5>) -> Tensor<4> {
    let [b, t, h, hd] = x.dims();
    let x = x.reshape([b, t, h, hd / 2, 2]);
    let x0 = x.clone().narrow(4, 0, 1);
    let x1 = x.narrow(4, 1, 1);
    let r0 = x0.clone().mul(cos.clone()).sub(x1.clone().mul(sin.clone()));
    let r1 = x0.mul(sin.clone()).add(x1.mul(cos.clone()));
    Tensor::cat(vec![r0, r1], 4).reshape([b, t, h, hd])
}

fn export_t(name: String, p: &Param<Tensor<2>>) -> (String, Vec<u64>, Vec<f32>) {
    // Stored [in, out]; GGUF wants row-major [out, in] with dims [in, out].
    let v = p.val();
    let [i, o] = v.dims();
    let data = v.transpose().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
    (name, vec![i as u64, o as u64], data)
}

fn export_1(name: String, p: &Param<Tensor<1>>) -> (String, Vec<u64>, Vec<f32>) {
    let v = p.val();
    let [n] = v.dims();
    (name, vec![n as u64], v.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default())
}

impl ElasticLm for LlamaSupernet {
    fn forward_subnet(&self, tokens: Tensor<2, Int>, subnet: &SubnetConfig) -> Tensor<3> {
        let c = &self.cfg;
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let hd = c.head_dim;
        let embd = self.embd.val();
        let v = embd.dims()[0];
        let mut h = embd.clone().select(0, tokens.reshape([b * t]));
        // RoPE tables [1, T, 1, hd/2, 1].
        let half = hd / 2;
        let mut cs = Vec::with_capacity(t * half);
        let mut sn = Vec::with_capacity(t * half);
        for pos in 0..t {
            for i in 0..half {
                let theta = pos as f64 * (c.rope_freq_base as f64).powf(-2.0 * i as f64 / hd as f64);
                cs.push(theta.cos() as f32);
                sn.push(theta.sin() as f32);
            }
        }
        let cos = Tensor::<5>::from_data(TensorData::new(cs, [1, t, 1, half, 1]), &device);
        let sin = Tensor::<5>::from_data(TensorData::new(sn, [1, t, 1, half, 1]), &device);
        let scale = 1.0 / (hd as f32).sqrt();
        for (i, &l) in subnet.layers.iter().enumerate() {
            let blk = &self.blocks[l];
            let (kv, ffn) = (subnet.kv_heads[i], subnet.ffn[i]);
            let g = c.n_heads[l] / c.n_kv_heads[l];
            let nq = kv * g;
            if kv > 0 {
                let x = rmsnorm(h.clone(), blk.attn_norm.val(), c.rms_eps);
                let q = x.clone().matmul(blk.wq.val().narrow(1, 0, nq * hd)).reshape([b, t, nq, hd]);
                let k = x.clone().matmul(blk.wk.val().narrow(1, 0, kv * hd)).reshape([b, t, kv, hd]);
                let vv = x.matmul(blk.wv.val().narrow(1, 0, kv * hd)).reshape([b, t, kv, hd]);
                let q = rope(q, &cos, &sin).swap_dims(1, 2).reshape([b, kv, g * t, hd]);
                let k = rope(k, &cos, &sin).swap_dims(1, 2);
                let vv = vv.swap_dims(1, 2);
                let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
                // Causal mask (true = masked: key after query; burn's tril_mask is false on and below the
                // diagonal); row r of the [g*T, T] block is position r % T.
                let mask = burn::tensor::Tensor::<2, burn::tensor::Bool>::tril_mask([t, t], 0, &device)
                    .reshape([1, 1, 1, t, t])
                    .expand([1, 1, g, t, t])
                    .reshape([1, 1, g * t, t])
                    .expand([b, kv, g * t, t]);
                let att = softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
                let o = att.matmul(vv).reshape([b, nq, t, hd]).swap_dims(1, 2).reshape([b * t, nq * hd]);
                h = h + o.matmul(blk.wo.val().narrow(0, 0, nq * hd));
            }
            if ffn > 0 {
                let x = rmsnorm(h.clone(), blk.ffn_norm.val(), c.rms_eps);
                let gate = silu(x.clone().matmul(blk.w_gate.val().narrow(1, 0, ffn)));
                let up = x.matmul(blk.w_up.val().narrow(1, 0, ffn));
                h = h + gate.mul(up).matmul(blk.w_down.val().narrow(0, 0, ffn));
            }
        }
        let x = rmsnorm(h, self.out_norm.val(), c.rms_eps);
        let logits = match &self.output {
            Some(o) => x.matmul(o.val()),
            None => x.matmul(embd.transpose()),
        };
        logits.reshape([b, t, v])
    }

    fn gguf_tensors(&self) -> Vec<(String, Vec<u64>, Vec<f32>)> {
        let mut out = Vec::new();
        let e = self.embd.val();
        let [v, d] = e.dims();
        out.push(("token_embd.weight".into(), vec![d as u64, v as u64], e.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default()));
        for (l, blk) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("blk.{l}.{s}.weight");
            out.push(export_1(p("attn_norm"), &blk.attn_norm));
            out.push(export_t(p("attn_q"), &blk.wq));
            out.push(export_t(p("attn_k"), &blk.wk));
            out.push(export_t(p("attn_v"), &blk.wv));
            out.push(export_t(p("attn_output"), &blk.wo));
            out.push(export_1(p("ffn_norm"), &blk.ffn_norm));
            out.push(export_t(p("ffn_gate"), &blk.w_gate));
            out.push(export_t(p("ffn_up"), &blk.w_up));
            out.push(export_t(p("ffn_down"), &blk.w_down));
        }
        out.push(export_1("output_norm.weight".into(), &self.out_norm));
        if let Some(o) = &self.output {
            out.push(export_t("output.weight".into(), o));
        }
        out
    }
}
