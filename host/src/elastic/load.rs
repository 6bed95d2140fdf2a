//! GGUF ⇄ burn parameters: [`ElasticModel::load`], [`ElasticModel::from_gguf`], [`ElasticModel::save_gguf`].
//!
//! Tensor names and shapes are llama.cpp's (`LLM_ARCH_LLAMA`, `LLM_ARCH_DECI`; see
//! `device_runtime::engine::model`). Any block format [`device_runtime::quant::dequantize`] supports is
//! dequantized to f32 (bit-exact with gguf-py), so a quantized base model loads as well as an F32/F16
//! super-network.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use device_runtime::arch::ModelConfig;
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter};
use device_runtime::quant;

use super::{ElasticBlock, ElasticError, ElasticModel};

/// Name of the weights file inside a super-network folder.
pub const SUPERNET_GGUF: &str = "supernet.gguf";

/// Tensor type of the 2-D weights [`ElasticModel::save_gguf`] writes (1-D norms are always F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveType {
    /// 32-bit floats: lossless.
    F32,
    /// IEEE half precision (round to nearest even, as numpy's `astype(np.float16)`): half the size.
    F16,
}

impl SaveType {
    fn ggml(self) -> GgmlType {
        match self {
            SaveType::F32 => GgmlType::F32,
            SaveType::F16 => GgmlType::F16,
        }
    }
}

/// Where the weights of `path` are: the file itself, or `path/supernet.gguf` for a folder.
fn weights_path(path: &Path) -> Result<std::path::PathBuf, ElasticError> {
    if path.is_dir() {
        let p = path.join(SUPERNET_GGUF);
        if !p.is_file() {
            return Err(ElasticError::Path {
                path: path.display().to_string(),
                reason: format!("a folder without {SUPERNET_GGUF} (not a super-network folder)"),
            });
        }
        Ok(p)
    } else if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(ElasticError::Path { path: path.display().to_string(), reason: "no such file or folder".into() })
    }
}

impl ElasticModel {
    /// Load a super-network folder (its `supernet.gguf`) or any `llama`/`deci` GGUF file onto `device`.
    ///
    /// Errors: [`ElasticError::Path`] (missing file or folder without `supernet.gguf`), and those of
    /// [`ElasticModel::from_gguf`].
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<ElasticModel, ElasticError> {
        let f = GgufFile::open(weights_path(path.as_ref())?)?;
        Self::from_gguf(&f, device)
    }

    /// Build the model from an open GGUF file: reads the [`ModelConfig`], checks every tensor's presence and
    /// dims against it, dequantizes to f32 and uploads each one as a trainable parameter. Peak extra memory:
    /// one tensor's f32 copy besides the parameters.
    ///
    /// Errors: [`ElasticError::Arch`] (unsupported architecture or hyper-parameters),
    /// [`ElasticError::MissingTensor`], [`ElasticError::Shape`], [`ElasticError::Quant`] (a block format that
    /// cannot be dequantized, or data of the wrong size).
    pub fn from_gguf(f: &GgufFile, device: &Device) -> Result<ElasticModel, ElasticError> {
        let config = ModelConfig::from_gguf(f)?;
        let file = f.name().to_owned();
        let (d, hd) = (config.d_model, config.head_dim);
        // Dequantize tensor `name` with ggml dims `[cols, rows]` (or `[cols]` when rows == 0).
        let read = |name: &str, cols: usize, rows: usize| -> Result<Vec<f32>, ElasticError> {
            let t = f
                .tensor(name)
                .ok_or_else(|| ElasticError::MissingTensor { file: file.clone(), tensor: name.to_owned() })?;
            let expected: Vec<u64> = if rows == 0 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
            if t.dims != expected {
                return Err(ElasticError::Shape {
                    file: file.clone(),
                    tensor: name.to_owned(),
                    expected,
                    got: t.dims.clone(),
                });
            }
            let n = cols * rows.max(1);
            let mut out = vec![0f32; n];
            quant::dequantize(t.ty, f.tensor_data(t), &mut out).map_err(|source| ElasticError::Quant {
                file: file.clone(),
                tensor: name.to_owned(),
                source,
            })?;
            Ok(out)
        };
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Param<Tensor<2>>, ElasticError> {
            let v = read(name, cols, rows)?;
            Ok(Param::from_tensor(Tensor::from_data(TensorData::new(v, [rows, cols]), device)))
        };
        let vector = |name: &str, n: usize| -> Result<Param<Tensor<1>>, ElasticError> {
            let v = read(name, n, 0)?;
            Ok(Param::from_tensor(Tensor::from_data(TensorData::new(v, [n]), device)))
        };
        let tok_embd = mat("token_embd.weight", config.n_vocab, d)?;
        let output = if config.tied_embeddings { None } else { Some(mat("output.weight", config.n_vocab, d)?) };
        let output_norm = vector("output_norm.weight", d)?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let p = |s: &str| format!("blk.{l}.{s}.weight");
            let (nh, nkv, ffn) = (config.n_heads[l], config.n_kv_heads[l], config.ffn[l]);
            let attn = nh > 0 && nkv > 0;
            let opt_mat = |on: bool, s: &str, rows: usize, cols: usize| on.then(|| mat(&p(s), rows, cols)).transpose();
            let opt_vec = |on: bool, s: &str| on.then(|| vector(&p(s), d)).transpose();
            blocks.push(ElasticBlock {
                attn_norm: opt_vec(attn, "attn_norm")?,
                wq: opt_mat(attn, "attn_q", nh * hd, d)?,
                wk: opt_mat(attn, "attn_k", nkv * hd, d)?,
                wv: opt_mat(attn, "attn_v", nkv * hd, d)?,
                wo: opt_mat(attn, "attn_output", d, nh * hd)?,
                ffn_norm: opt_vec(ffn > 0, "ffn_norm")?,
                gate: opt_mat(ffn > 0, "ffn_gate", ffn, d)?,
                up: opt_mat(ffn > 0, "ffn_up", ffn, d)?,
                down: opt_mat(ffn > 0, "ffn_down", d, ffn)?,
            });
        }
        Ok(ElasticModel { tok_embd, output, output_norm, blocks, config })
    }

    /// Every weight with its GGUF name and ggml dims (`[cols, rows]` for matrices, `[n]` for norms), in the
    /// order llama.cpp writes them. Values are read back from the device (a copy).
    ///
    /// Errors: [`ElasticError::Readback`].
    pub fn named_weights(&self) -> Result<Vec<(String, Vec<u64>, Vec<f32>)>, ElasticError> {
        let mut out = Vec::new();
        let mut push2 = |name: String, p: &Param<Tensor<2>>| -> Result<(), ElasticError> {
            let t = p.val();
            let [r, c] = t.dims();
            out.push((name, vec![c as u64, r as u64], read_vec(t)?));
            Ok(())
        };
        push2("token_embd.weight".into(), &self.tok_embd)?;
        let mut vecs: Vec<(String, Tensor<1>)> = vec![("output_norm.weight".into(), self.output_norm.val())];
        if let Some(o) = &self.output {
            push2("output.weight".into(), o)?;
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("blk.{l}.{s}.weight");
            if let Some(n) = &b.attn_norm {
                vecs.push((p("attn_norm"), n.val()));
            }
            for (s, w) in [("attn_q", &b.wq), ("attn_k", &b.wk), ("attn_v", &b.wv), ("attn_output", &b.wo)] {
                if let Some(w) = w {
                    push2(p(s), w)?;
                }
            }
            if let Some(n) = &b.ffn_norm {
                vecs.push((p("ffn_norm"), n.val()));
            }
            for (s, w) in [("ffn_gate", &b.gate), ("ffn_up", &b.up), ("ffn_down", &b.down)] {
                if let Some(w) = w {
                    push2(p(s), w)?;
                }
            }
        }
        for (name, t) in vecs {
            let [n] = t.dims();
            out.push((name, vec![n as u64], read_vec(t)?));
        }
        Ok(out)
    }

    /// Write the current weights as a GGUF file at `out` (atomically: temporary file in the same folder,
    /// then rename), with every metadata pair of `template` (normally the file the model was loaded from:
    /// architecture, tokenizer, chat template) and `general.file_type` set to 0 (F32) or 1 (F16). Norms are
    /// F32; matrices `ty`. Returns the file size in bytes.
    ///
    /// Errors: [`ElasticError::Readback`], [`ElasticError::Quant`] (F16 conversion), [`ElasticError::Gguf`]
    /// (writing or renaming failed).
    pub fn save_gguf(&self, template: &GgufFile, out: impl AsRef<Path>, ty: SaveType) -> Result<u64, ElasticError> {
        let out = out.as_ref();
        let mut w = GgufWriter::new();
        for (k, v) in template.metadata() {
            w.add_metadata(k, v.clone());
        }
        w.add_metadata(
            "general.file_type",
            device_runtime::gguf::MetaValue::U32(match ty {
                SaveType::F32 => 0,
                SaveType::F16 => 1,
            }),
        );
        for (name, dims, v) in self.named_weights()? {
            let tty = if dims.len() == 1 { GgmlType::F32 } else { ty.ggml() };
            let bytes = quant::quantize(tty, &v).map_err(|source| ElasticError::Quant {
                file: out.display().to_string(),
                tensor: name.clone(),
                source,
            })?;
            w.add_tensor(&name, &dims, tty, bytes)?;
        }
        Ok(w.write_atomic(out)?)
    }

    /// Move (a copy of) the model to `device`, e.g. from a training device to [`super::default_device`] for
    /// evaluation. Parameters keep their ids.
    pub fn on_device(&self, device: &Device) -> ElasticModel {
        self.clone().to_device(device)
    }
}

/// Read a tensor back as f32 values (row-major).
pub(crate) fn read_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ElasticError> {
    t.into_data().try_into_vec::<f32>().map_err(|e| ElasticError::Readback(format!("{e:?}")))
}
