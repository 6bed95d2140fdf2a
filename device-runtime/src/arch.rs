//! `ModelConfig` (hyper-parameters of a LLaMA-family model) and `SubnetConfig` (kept layers, FFN width and KV
//! heads per kept layer): the one vocabulary that host and runtime share.
