//! A tiny elastic language model built in code, for testing the trainer without the real super-network: token
//! embedding (tied output head), then per layer a residual ReLU MLP `h += relu(h W1[:k]^T) W2[:, :k]^T` whose
//! hidden width is sliced to the sub-network's FFN width `k`; dropped layers are skipped. KV-head choices are
//! ignored (the toy has no attention).

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use device_runtime::arch::{ModelConfig, SubnetConfig};

use super::sample::SplitMix64;
use super::train::ElasticLm;

/// The toy model (see the module docs). Weight names follow GGUF: `token_embd.weight` `[d, vocab]` (ggml
/// dims), `blk.{l}.ffn_up.weight` `[d, ffn]`, `blk.{l}.ffn_down.weight` `[ffn, d]`.
#[derive(Module, Debug)]
pub struct ToyLm {
    /// Token embedding `[vocab, d]` (also the output head).
    pub embd: Param<Tensor<2>>,
    /// Per layer: `[ffn, d]`.
    pub up: Vec<Param<Tensor<2>>>,
    /// Per layer: `[d, ffn]`.
    pub down: Vec<Param<Tensor<2>>>,
}

impl ToyLm {
    /// Random weights from `seed` (uniform, scale 1/sqrt(fan_in)) for a model with `cfg`'s vocabulary,
    /// `d_model`, layers and FFN widths.
    pub fn random(cfg: &ModelConfig, seed: u64, device: &Device) -> ToyLm {
        let mut rng = SplitMix64::new(seed);
        let mut mat = |rows: usize, cols: usize, scale: f32| {
            let v: Vec<f32> = (0..rows * cols).map(|_| (rng.unit() as f32 * 2.0 - 1.0) * scale).collect();
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), device))
        };
        let d = cfg.d_model;
        let embd = mat(cfg.n_vocab, d, 1.0);
        let mut up = Vec::new();
        let mut down = Vec::new();
        for l in 0..cfg.n_layers {
            up.push(mat(cfg.ffn[l], d, 1.0 / (d as f32).sqrt()));
            down.push(mat(d, cfg.ffn[l], 1.0 / (cfg.ffn[l] as f32).sqrt()));
        }
        ToyLm { embd, up, down }
    }

    /// Builds the model from GGUF-named tensors (as [`ElasticLm::gguf_tensors`] gives them).
    pub fn from_tensors(t: &[(String, Vec<u64>, Vec<f32>)], n_layers: usize, device: &Device) -> Option<ToyLm> {
        let get = |name: &str| {
            t.iter().find(|(n, _, _)| n == name).map(|(_, dims, data)| {
                let shape = [dims[1] as usize, dims[0] as usize];
                Param::from_tensor(Tensor::<2>::from_data(TensorData::new(data.clone(), shape), device))
            })
        };
        let embd = get("token_embd.weight")?;
        let mut up = Vec::new();
        let mut down = Vec::new();
        for l in 0..n_layers {
            up.push(get(&format!("blk.{l}.ffn_up.weight"))?);
            down.push(get(&format!("blk.{l}.ffn_down.weight"))?);
        }
        Some(ToyLm { embd, up, down })
    }
}

fn to_vec(t: Tensor<2>) -> (Vec<u64>, Vec<f32>) {
    let [r, c] = t.dims();
    let data = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
    (vec![c as u64, r as u64], data)
}

impl ElasticLm for ToyLm {
    fn forward_subnet(&self, tokens: Tensor<2, Int>, subnet: &SubnetConfig) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let emb = self.embd.val();
        let [v, d] = emb.dims();
        let mut h = emb.clone().select(0, tokens.reshape([b * t]));
        for (i, &l) in subnet.layers.iter().enumerate() {
            let k = subnet.ffn[i];
            let w1 = self.up[l].val().narrow(0, 0, k);
            let w2 = self.down[l].val().narrow(1, 0, k);
            let a = relu(h.clone().matmul(w1.transpose()));
            h = h + a.matmul(w2.transpose()).mul_scalar(0.5);
        }
        h.matmul(emb.transpose()).div_scalar((d as f32).sqrt()).reshape([b, t, v])
    }

    fn gguf_tensors(&self) -> Vec<(String, Vec<u64>, Vec<f32>)> {
        let mut out = Vec::new();
        let (dims, data) = to_vec(self.embd.val());
        out.push(("token_embd.weight".to_string(), dims, data));
        for l in 0..self.up.len() {
            let (dims, data) = to_vec(self.up[l].val());
            out.push((format!("blk.{l}.ffn_up.weight"), dims, data));
            let (dims, data) = to_vec(self.down[l].val());
            out.push((format!("blk.{l}.ffn_down.weight"), dims, data));
        }
        out
    }
}
