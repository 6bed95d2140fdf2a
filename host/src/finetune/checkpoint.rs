//! Checkpoints of a fine-tuning run, written atomically.
//!
//! Layout under the output folder: `checkpoints/step-NNNNNNNN/` holding `supernet.gguf` (the weights, F32,
//! the input's metadata), `optimizer.bpk` (burn's AdamW state, burnpack format, keyed by the renumbered
//! parameter ids of [`super::train::renumber_params`]) and `state.json` ([`TrainState`]). A checkpoint is
//! built in `checkpoints/.tmp-step-NNNNNNNN/` and renamed into place, then `checkpoints/latest.json` (the name
//! of the newest complete checkpoint) is replaced atomically (temp file + rename), then older checkpoints are
//! removed. A kill at any moment leaves `latest.json` naming a complete checkpoint (or no `latest.json`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter};
use serde::{Deserialize, Serialize};

use super::train::{ElasticLm, adamw};
use super::{FinetuneError, TrainConfig, io_err};

/// The training state saved with each checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The run's configuration.
    pub config: TrainConfig,
}

/// `checkpoints/latest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Latest {
    /// Folder name of the newest complete checkpoint (under `checkpoints/`).
    dir: String,
    step: u64,
}

/// The checkpoints of one output folder.
pub struct Checkpoint {
    dir: PathBuf,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FinetuneError> {
    use std::io::Write;
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io_err(&tmp, "write"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename into place"))
}

/// Writes a super-network GGUF at `path` (atomically): `template`'s metadata, the model's tensors as F32, and
/// any tensor of `template` the model does not produce copied unchanged.
///
/// Errors: [`FinetuneError::Gguf`] (bad dims, write failure).
pub fn write_gguf<M: ElasticLm>(model: &M, template: &GgufFile, path: &Path) -> Result<(), FinetuneError> {
    let gerr = |source| FinetuneError::Gguf { path: path.display().to_string(), source };
    let tensors = model.gguf_tensors();
    let mut w = GgufWriter::new();
    for (k, v) in template.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("general.file_type", device_runtime::gguf::MetaValue::U32(0));
    let mut written = std::collections::HashSet::new();
    // Keep the template's tensor order; the model's tensors replace the template's data.
    for t in template.tensors() {
        if let Some((name, dims, data)) = tensors.iter().find(|(n, _, _)| *n == t.name) {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(name, dims, GgmlType::F32, bytes).map_err(gerr)?;
            written.insert(name.clone());
        } else {
            w.add_tensor(&t.name, &t.dims, t.ty, template.tensor_data(t)).map_err(gerr)?;
        }
    }
    for (name, dims, data) in &tensors {
        if !written.contains(name) {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(name, dims, GgmlType::F32, bytes).map_err(gerr)?;
        }
    }
    w.write_atomic(path).map_err(gerr)?;
    Ok(())
}

/// Keeps only the lines of the JSONL log whose `step` is at most `step` (steps after the last checkpoint are
/// redone by a resumed run and logged again).
pub fn truncate_log(path: &Path, step: u64) -> Result<(), FinetuneError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    write_atomic(path, kept.as_bytes())
}

impl Checkpoint {
    /// The checkpoints of output folder `out` (`out/checkpoints/`).
    pub fn new(out: &Path) -> Checkpoint {
        Checkpoint { dir: out.join("checkpoints") }
    }

    /// `out/checkpoints`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes all checkpoints (a fresh run).
    pub fn clear(&self) -> Result<(), FinetuneError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir, "remove old checkpoints"))?;
        }
        Ok(())
    }

    /// The state of the newest complete checkpoint, if any.
    ///
    /// Errors: [`FinetuneError::Checkpoint`] when `latest.json` or the `state.json` it names is unreadable.
    pub fn latest(&self) -> Result<Option<TrainState>, FinetuneError> {
        let latest = self.dir.join("latest.json");
        let Ok(text) = std::fs::read_to_string(&latest) else { return Ok(None) };
        let bad = |reason: String| FinetuneError::Checkpoint { path: latest.display().to_string(), reason };
        let l: Latest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let state_path = self.dir.join(&l.dir).join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| bad(format!("{}: {e}", state_path.display())))?;
        let s: TrainState = serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", state_path.display())))?;
        if s.step != l.step {
            return Err(bad(format!("names step {} but {} holds step {}", l.step, state_path.display(), s.step)));
        }
        Ok(Some(s))
    }

    fn step_dir(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    /// Loads the model (through `load`, from the checkpoint's `supernet.gguf`) and the optimizer state of the
    /// checkpoint of `state`.
    pub fn load<M: ElasticLm>(
        &self,
        state: &TrainState,
        load: &dyn Fn(&Path, &Device) -> Result<M, String>,
        device: &Device,
    ) -> Result<(M, burn::optim::ModuleOptimizer), FinetuneError> {
        let d = self.step_dir(state.step);
        let bad = |reason: String| FinetuneError::Checkpoint { path: d.display().to_string(), reason };
        let model = load(&d.join("supernet.gguf"), device).map_err(&bad)?;
        let optim = adamw(state.config.weight_decay)
            .load(d.join("optimizer.bpk"))
            .map_err(|e| bad(format!("optimizer.bpk: {e:?}")))?;
        Ok((model, optim))
    }

    /// Saves a checkpoint of `model` and `optim` at `state.step` (see the module docs for the protocol).
    pub fn save<M: ElasticLm>(
        &self,
        model: &M,
        optim: &burn::optim::ModuleOptimizer,
        template: &GgufFile,
        state: &TrainState,
    ) -> Result<(), FinetuneError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir, "create folder"))?;
        let name = format!("step-{:08}", state.step);
        let tmp = self.dir.join(format!(".tmp-{name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp, "remove stale temp checkpoint"))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp, "create folder"))?;
        write_gguf(model, template, &tmp.join("supernet.gguf"))?;
        let opt_path = tmp.join("optimizer.bpk");
        optim.save(&opt_path).map_err(|e| FinetuneError::Checkpoint {
            path: opt_path.display().to_string(),
            reason: format!("cannot save optimizer state: {e:?}"),
        })?;
        let text = serde_json::to_string_pretty(state).map_err(|e| FinetuneError::Invalid(e.to_string()))?;
        write_atomic(&tmp.join("state.json"), text.as_bytes())?;
        let fin = self.dir.join(&name);
        if fin.exists() {
            std::fs::remove_dir_all(&fin).map_err(io_err(&fin, "remove old checkpoint"))?;
        }
        std::fs::rename(&tmp, &fin).map_err(io_err(&fin, "rename checkpoint into place"))?;
        let latest = serde_json::to_string(&Latest { dir: name.clone(), step: state.step })
            .map_err(|e| FinetuneError::Invalid(e.to_string()))?;
        write_atomic(&self.dir.join("latest.json"), latest.as_bytes())?;
        // Older checkpoints are no longer needed.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if (n.starts_with("step-") || n.starts_with(".tmp-step-")) && n != name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}
