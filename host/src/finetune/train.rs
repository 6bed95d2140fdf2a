//! The InstaTune training loop in burn: per optimizer step, for each micro-batch, the forward and backward pass
//! of every planned sub-network on the same batch, gradients summed over sub-networks and averaged over
//! micro-batches, optional in-place distillation towards the full network, global-norm gradient clipping and
//! AdamW with warm-up + cosine learning rate.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use device_runtime::arch::SubnetConfig;

use super::data::Batch;

/// A super-network the trainer can fine-tune: a burn module whose forward pass runs any sub-network of it on
/// the shared weights.
pub trait ElasticLm: Module + Sized {
    /// Logits `[B, T, n_vocab]` of the token ids `[B, T]` through `subnet` (causal; position `t` predicts
    /// token `t + 1`). Gradients must flow only into the weights the sub-network uses.
    fn forward_subnet(&self, tokens: Tensor<2, Int>, subnet: &SubnetConfig) -> Tensor<3>;

    /// The weights as GGUF tensors: (name, dims in ggml order, F32 data row-major), for writing the
    /// super-network GGUF (checkpoints and the final output).
    fn gguf_tensors(&self) -> Vec<(String, Vec<u64>, Vec<f32>)>;
}

/// Gives every float parameter the id `1, 2, 3, ...` in visiting order, so that optimizer state saved by one
/// process finds its parameters in a model loaded by another (burn keys AdamW moments by [`ParamId`], and a
/// freshly loaded module draws new random ids).
pub fn renumber_params<M: Module>(m: M) -> M {
    struct Renumber(u64);
    impl ModuleMapper for Renumber {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = param.consume();
            self.0 += 1;
            Param::from_mapped_value(ParamId::from(self.0), value, mapper)
        }
    }
    m.map(&mut Renumber(0))
}

/// Global L2 norm of the gradients of `model`'s parameters (Pascanu et al. 2013's gradient clipping uses the
/// norm of all gradients together, as PyTorch's `clip_grad_norm_` does; burn's own clipping is per tensor).
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct Norm<'a> {
        grads: &'a GradientsParams,
        sq: f64,
    }
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.sq += g.square().sum().into_scalar::<f32>() as f64;
            }
        }
    }
    let mut v = Norm { grads, sq: 0.0 };
    model.visit(&mut v);
    v.sq.sqrt()
}

/// Multiplies every gradient of `model`'s parameters by `factor`.
pub fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f32) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

/// The batch's token ids as a `[B, T]` Int tensor on `device`.
pub fn tokens_tensor(batch: &Batch, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = batch.tokens.iter().map(|&x| x as i64).collect();
    Tensor::<2, Int>::from_data(TensorData::new(ids, [batch.b, batch.t]), device)
}

/// Per-position log-probabilities `[B*(T-1), V]` of the predictions (positions `0..T-1`) from logits
/// `[B, T, V]`.
pub fn prediction_log_probs(logits: Tensor<3>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    let pred = logits.narrow(1, 0, t - 1).reshape([b * (t - 1), v]);
    log_softmax(pred, 1)
}

/// Weighted mean negative log-likelihood of the batch's targets (cross-entropy over target positions):
/// `-sum_i w_i log p_i(target_i) / sum_i w_i`, a `[1]` tensor. `logp` is [`prediction_log_probs`].
pub fn masked_nll(logp: Tensor<2>, batch: &Batch, device: &Device) -> Tensor<1> {
    let n = batch.b * (batch.t - 1);
    let tg: Vec<i64> = batch.targets.iter().map(|&x| x as i64).collect();
    let tg = Tensor::<2, Int>::from_data(TensorData::new(tg, [n, 1]), device);
    let w = Tensor::<1>::from_data(TensorData::new(batch.weights.clone(), [n]), device);
    let picked = logp.gather(1, tg).reshape([n]);
    let denom = batch.n_targets().max(1) as f32;
    picked.mul(w).sum().div_scalar(-denom)
}

/// Mean over target positions of KL(p_teacher || p_student) = sum_v p_t (log p_t - log p_s), the in-place
/// distillation loss of InstaTune / OFA (teacher: the full network's detached distribution), a `[1]` tensor.
pub fn masked_kl(student_logp: Tensor<2>, teacher_logp: Tensor<2>, batch: &Batch, device: &Device) -> Tensor<1> {
    let n = batch.b * (batch.t - 1);
    let w = Tensor::<2>::from_data(TensorData::new(batch.weights.clone(), [n, 1]), device);
    let pt = teacher_logp.clone().exp();
    let per_pos = pt.mul(teacher_logp.sub(student_logp)).sum_dim(1);
    let denom = batch.n_targets().max(1) as f32;
    per_pos.mul(w).sum().div_scalar(denom)
}

/// Hyper-parameters of one optimizer step.
#[derive(Clone, Debug)]
pub struct StepConfig {
    /// Weight of the distillation term for sub-networks other than the first (largest) one:
    /// `loss = (1 - w) * CE + w * KL`; 0 disables it.
    pub distill_weight: f32,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub clip_norm: Option<f32>,
}

/// What one optimizer step measured.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Mean cross-entropy (nats/token) per planned sub-network, averaged over the micro-batches.
    pub losses: Vec<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens (predictions counting in the loss) per micro-batch summed.
    pub target_tokens: usize,
    /// Tokens read (B*T summed over micro-batches and sub-networks).
    pub tokens_processed: usize,
}

/// Runs one optimizer step: for each micro-batch and each sub-network of `subnets` (the first one is the
/// teacher when distilling), forward, loss, backward; gradients summed over sub-networks and averaged over
/// micro-batches; clipping; AdamW update at learning rate `lr`. Returns the updated model.
pub fn train_step<M: ElasticLm>(
    model: M,
    optim: &mut burn::optim::ModuleOptimizer,
    micro_batches: &[Batch],
    subnets: &[SubnetConfig],
    lr: f64,
    cfg: &StepConfig,
    device: &Device,
) -> (M, StepStats) {
    let mut acc = GradientsAccumulator::<M>::new();
    let mut stats = StepStats { losses: vec![0.0; subnets.len()], ..Default::default() };
    let n_micro = micro_batches.len().max(1) as f32;
    for batch in micro_batches {
        let tokens = tokens_tensor(batch, device);
        stats.target_tokens += batch.n_targets();
        let mut teacher: Option<Tensor<2>> = None;
        for (i, subnet) in subnets.iter().enumerate() {
            let logp = prediction_log_probs(model.forward_subnet(tokens.clone(), subnet));
            let ce = masked_nll(logp.clone(), batch, device);
            stats.losses[i] += ce.clone().into_scalar::<f32>() as f64 / n_micro as f64;
            let loss = match (&teacher, i) {
                (Some(t), i) if i > 0 && cfg.distill_weight > 0.0 => ce
                    .mul_scalar(1.0 - cfg.distill_weight)
                    .add(masked_kl(logp.clone(), t.clone(), batch, device).mul_scalar(cfg.distill_weight)),
                _ => ce,
            };
            if i == 0 && cfg.distill_weight > 0.0 && subnets.len() > 1 {
                teacher = Some(logp.detach());
            }
            let grads = loss.div_scalar(n_micro).backward();
            acc.accumulate(&model, GradientsParams::from_grads(grads, &model));
            stats.tokens_processed += batch.b * batch.t;
        }
    }
    let mut grads = acc.grads();
    stats.grad_norm = grad_norm(&model, &grads);
    if let Some(max) = cfg.clip_norm
        && stats.grad_norm > max as f64
    {
        scale_grads(&model, &mut grads, (max as f64 / (stats.grad_norm + 1e-6)) as f32);
    }
    let model = optim.step(lr, model, grads);
    (model, stats)
}

/// AdamW as used here: betas (0.9, 0.95) and epsilon 1e-8 (the LLaMA pre-training settings, Touvron et al.
/// 2023), decoupled weight decay `weight_decay`; no per-tensor clipping (clipping is global, in
/// [`train_step`]).
pub fn adamw(weight_decay: f32) -> burn::optim::ModuleOptimizer {
    AdamWConfig::new().with_beta_2(0.95).with_epsilon(1e-8).with_weight_decay(weight_decay).init()
}

/// The shared elastic super-network of [`crate::elastic`] is what the trainer fine-tunes.
impl ElasticLm for crate::elastic::ElasticModel {
    fn forward_subnet(&self, tokens: Tensor<2, Int>, subnet: &SubnetConfig) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let ids: Vec<i64> = tokens.into_data().convert::<i64>().try_into_vec::<i64>().expect("token ids read back");
        let seqs: Vec<Vec<u32>> = ids.chunks(t.max(1)).map(|c| c.iter().map(|&x| x as u32).collect()).collect();
        let batch = crate::elastic::TokenBatch::new(&seqs).expect("a rectangular batch of token ids");
        self.forward(&batch, subnet).expect("the trainer samples sub-networks of this super-network's space")
    }

    fn gguf_tensors(&self) -> Vec<(String, Vec<u64>, Vec<f32>)> {
        self.named_weights().expect("weights read back from the device")
    }
}

/// Load an [`crate::elastic::ElasticModel`] (a super-network folder, its `supernet.gguf`, a checkpoint or any
/// llama/deci GGUF) for the trainer.
pub fn load_elastic(path: &std::path::Path, device: &Device) -> Result<crate::elastic::ElasticModel, String> {
    crate::elastic::ElasticModel::load(path, device).map_err(|e| format!("{}: {e}", path.display()))
}
