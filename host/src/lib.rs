//! `llamanas` library: the host side of the LLaMA-NAS toolkit (Sarah et al., 2024, "LLaMA-NAS: Efficient Neural
//! Architecture Search for Large Language Models").
//!
//! Modules (DESIGN.md): [`space`] the search space; [`store`] the super-network folder (`supernet.gguf` +
//! `supernet.json`); [`importance`] importance ordering at import;
//! [`reconstruct`] calibration reconstruction of sub-networks (the one host-side sub-network builder,
//! [`reconstruct::plan`]); [`prune`] the training-free baselines (ShortGPT, uniform width); [`data`] benchmark and instruction data;
//! [`eval`] multiple-choice scoring and perplexity; [`elastic`] the elastic super-network in burn;
//! [`finetune`] InstaTune; [`search`] NSGA-II, predictors, LINAS; [`export`] sub-network GGUF export.

pub mod data;
pub mod elastic;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod importance;
pub mod prune;
pub mod reconstruct;
pub mod search;
pub mod space;
pub mod store;
