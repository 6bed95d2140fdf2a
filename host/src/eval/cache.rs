//! `llamanas eval --cache FILE`: the log-likelihoods of every scored document, appended to a JSONL file as
//! documents finish, so that a killed run (a whole HellaSwag split is about two CPU-hours here) continues
//! where it stopped instead of starting over.
//!
//! Format (one JSON object per line):
//! - line 1, the header ([`CacheKey`]): what was scored (model file and its size in bytes, sub-network id,
//!   in-memory quantization, `--limit`, `--seed`) and `"llamanas_eval_cache": 1`;
//! - then one [`DocRecord`] per document: `{"task":"hellaswag","doc":17,"lls":[-41.2,-38.9,-40.0,-44.7]}`
//!   (`doc` indexes the task's `--limit`/`--seed` subset, `lls` are the choices' log-likelihoods in nats).
//!
//! A rerun with another header is refused (a cache of another model must not leak into its scores). A
//! last line cut off by a kill (no final newline, not valid JSON) is dropped and overwritten; any other bad
//! line is an error naming the file and line.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::EvalError;

/// The cache format's version, written in the header.
pub const CACHE_VERSION: u32 = 1;

/// The header line: what the log-likelihoods belong to. Two runs may share a cache only if their keys are
/// equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    /// [`CACHE_VERSION`].
    pub llamanas_eval_cache: u32,
    /// The GGUF file scored (as given).
    pub model: String,
    /// Its size in bytes (a different file under the same name is caught).
    pub model_bytes: u64,
    /// Sub-network id, `None` for the whole model.
    pub subnet: Option<String>,
    /// In-memory quantization, `None` for the file's own.
    pub quant: Option<String>,
    /// `--limit` of the subset.
    pub limit: Option<usize>,
    /// `--seed` of the subset.
    pub seed: u64,
}

/// One scored document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// Task name ([`crate::data::TaskSpec::name`]).
    pub task: String,
    /// Index of the document in the task's subset.
    pub doc: usize,
    /// Log-likelihood of each choice (nats), in the document's choice order.
    pub lls: Vec<f64>,
}

/// An open cache: the documents already scored and an append handle for new ones (thread-safe).
pub struct DocCache {
    path: PathBuf,
    done: HashMap<(String, usize), Vec<f64>>,
    out: Mutex<File>,
}

impl DocCache {
    /// Open `path` for `key`: read what an earlier run wrote (dropping a cut-off last line) or start a new
    /// file with the header.
    ///
    /// Errors: [`EvalError::Other`] naming the file: unreadable or unwritable, a header of another model /
    /// sub-network / subset, or a malformed line other than a cut-off last one.
    pub fn open(path: &Path, key: &CacheKey) -> Result<DocCache, EvalError> {
        let err = |m: String| EvalError::Other(format!("{}: {m}", path.display()));
        let mut done = HashMap::new();
        let mut keep_bytes = 0u64;
        let exists = path.exists() && std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
        if exists {
            let f = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
            let mut r = BufReader::new(f);
            let mut line = String::new();
            let mut lineno = 0usize;
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(|e| err(format!("cannot read: {e}")))?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                let complete = line.ends_with('\n');
                if lineno == 1 {
                    let found: CacheKey = match serde_json::from_str(line.trim_end()) {
                        Ok(k) => k,
                        Err(_) if !complete => break, // header cut off: start over
                        Err(e) => return Err(err(format!("line 1 is not an eval cache header: {e}"))),
                    };
                    if found.llamanas_eval_cache != CACHE_VERSION {
                        return Err(err(format!(
                            "cache version {} (this llamanas writes {CACHE_VERSION}); use another --cache file",
                            found.llamanas_eval_cache
                        )));
                    }
                    if &found != key {
                        return Err(err(format!(
                            "holds the scores of another run ({}); use another --cache file or delete it",
                            describe_mismatch(&found, key)
                        )));
                    }
                } else {
                    match serde_json::from_str::<DocRecord>(line.trim_end()) {
                        Ok(d) if complete => {
                            done.insert((d.task, d.doc), d.lls);
                        }
                        _ if !complete => break, // cut off by a kill: dropped below
                        Ok(_) => unreachable!(),
                        Err(e) => return Err(err(format!("line {lineno}: not a document record: {e}"))),
                    }
                }
                keep_bytes += n as u64;
            }
        }
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| err(format!("cannot write: {e}")))?;
        out.set_len(keep_bytes).map_err(|e| err(format!("cannot write: {e}")))?;
        use std::io::Seek;
        out.seek(std::io::SeekFrom::End(0)).map_err(|e| err(format!("cannot write: {e}")))?;
        if keep_bytes == 0 {
            done.clear();
            let mut h = serde_json::to_string(key).map_err(|e| err(e.to_string()))?;
            h.push('\n');
            out.write_all(h.as_bytes()).map_err(|e| err(format!("cannot write: {e}")))?;
            out.sync_data().map_err(|e| err(format!("cannot write: {e}")))?;
        }
        Ok(DocCache { path: path.to_path_buf(), done, out: Mutex::new(out) })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log-likelihoods of document `doc` of `task` from an earlier run, if scored.
    pub fn get(&self, task: &str, doc: usize) -> Option<&[f64]> {
        self.done.get(&(task.to_string(), doc)).map(|v| v.as_slice())
    }

    /// Documents of `task` already in the cache.
    pub fn count(&self, task: &str) -> usize {
        self.done.keys().filter(|(t, _)| t == task).count()
    }

    /// Append one scored document (one `write` of a whole line, so a kill leaves at most one cut-off line).
    ///
    /// Errors: [`EvalError::Other`] naming the file when it cannot be written, or when a log-likelihood is
    /// not finite (JSON has no infinities).
    pub fn record(&self, task: &str, doc: usize, lls: &[f64]) -> Result<(), EvalError> {
        if lls.iter().any(|x| !x.is_finite()) {
            return Err(EvalError::Other(format!("{task} document {doc}: a log-likelihood is not finite: {lls:?}")));
        }
        let rec = DocRecord { task: task.to_string(), doc, lls: lls.to_vec() };
        let mut line = serde_json::to_string(&rec).map_err(|e| EvalError::Other(e.to_string()))?;
        line.push('\n');
        let mut f = self.out.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes()).map_err(|e| EvalError::Other(format!("{}: cannot write: {e}", self.path.display())))
    }
}

fn describe_mismatch(found: &CacheKey, want: &CacheKey) -> String {
    let mut d = Vec::new();
    if found.model != want.model || found.model_bytes != want.model_bytes {
        d.push(format!("model {} ({} bytes), not {} ({} bytes)", found.model, found.model_bytes, want.model, want.model_bytes));
    }
    if found.subnet != want.subnet {
        d.push(format!("sub-network {:?}, not {:?}", found.subnet, want.subnet));
    }
    if found.quant != want.quant {
        d.push(format!("quantization {:?}, not {:?}", found.quant, want.quant));
    }
    if found.limit != want.limit || found.seed != want.seed {
        d.push(format!("--limit {:?} --seed {}, not --limit {:?} --seed {}", found.limit, found.seed, want.limit, want.seed));
    }
    d.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            llamanas_eval_cache: CACHE_VERSION,
            model: "m.gguf".into(),
            model_bytes: 10,
            subnet: None,
            quant: None,
            limit: Some(5),
            seed: 0,
        }
    }

    #[test]
    fn resumes_and_drops_a_cut_off_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        {
            let c = DocCache::open(&p, &key()).unwrap();
            c.record("arc_easy", 0, &[-1.5, -2.25]).unwrap();
            c.record("arc_easy", 3, &[-0.5, -7.0]).unwrap();
            assert!(c.record("arc_easy", 2, &[f64::NAN, -1.0]).is_err());
        }
        // A kill in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"task":"arc_easy","doc":4,"lls":[-1."#).unwrap();
        drop(f);
        let c = DocCache::open(&p, &key()).unwrap();
        assert_eq!(c.get("arc_easy", 0), Some(&[-1.5, -2.25][..]));
        assert_eq!(c.get("arc_easy", 3), Some(&[-0.5, -7.0][..]));
        assert_eq!(c.get("arc_easy", 4), None);
        assert_eq!(c.count("arc_easy"), 2);
        c.record("arc_easy", 4, &[-3.0, -4.0]).unwrap();
        drop(c);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.ends_with("\"lls\":[-3.0,-4.0]}\n"), "{text}");
    }

    #[test]
    fn refuses_another_run_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        DocCache::open(&p, &key()).unwrap().record("piqa", 1, &[-1.0, -2.0]).unwrap();
        let other = CacheKey { subnet: Some("L29".into()), ..key() };
        let e = DocCache::open(&p, &other).err().unwrap().to_string();
        assert!(e.contains("c.jsonl") && e.contains("sub-network"), "{e}");
        std::fs::write(&p, format!("{}\nnot json\n{{}}\n", serde_json::to_string(&key()).unwrap())).unwrap();
        let e = DocCache::open(&p, &key()).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&p, "hello\n").unwrap();
        let e = DocCache::open(&p, &key()).err().unwrap().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
