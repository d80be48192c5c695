//! The four tasks as the CLI runs them: what a run folder remembers of its task (`task.json`), and
//! loading a data set for a task.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ptune_data::formats::{ColumnMap, Record};
use ptune_data::tagging::{bio_labels, tokenize_tagging, TaggingSet};
use ptune_data::tasks::{tokenize_classification, tokenize_generation, GenerationPair, LmExample};
use ptune_data::{ClassificationSet, Splits};
use ptune_train::Pooling;
use ptune_transformer::TextTokenizer;
use serde::{Deserialize, Serialize};

/// A task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Sequence classification (head on the pooled output).
    Classify,
    /// Token classification (BIO tags, head on each word's first piece).
    Tag,
    /// Classification by a decoder's next word after a template (verbalizers).
    Cloze,
    /// Causal-LM generation (source → target).
    Generate,
}

impl TaskKind {
    /// `--task`, or the data set's natural task.
    pub fn pick(task: Option<&str>, dataset: &str) -> Result<Self> {
        Ok(match task {
            Some("classify") => TaskKind::Classify,
            Some("tag") => TaskKind::Tag,
            Some("cloze") => TaskKind::Cloze,
            Some("generate") => TaskKind::Generate,
            Some(other) => bail!("unknown task `{other}` (classify, tag, cloze, generate)"),
            None => match dataset {
                "e2e" => TaskKind::Generate,
                "e2e-slots" => TaskKind::Tag,
                _ => TaskKind::Classify,
            },
        })
    }
}

/// What `eval` and `predict` need to rebuild a run's task: written as `<run>/task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task.
    pub task: TaskKind,
    /// Model name or path.
    pub model: String,
    /// Data set name or path.
    pub dataset: String,
    /// Label names (classify, tag, cloze).
    pub labels: Vec<String>,
    /// Pooling (classify).
    pub pooling: Option<Pooling>,
    /// Template around the text (cloze).
    pub cloze_template: Option<String>,
    /// One word per label (cloze).
    pub verbalizer: Option<Vec<String>>,
    /// Text between source and target (generate).
    pub separator: Option<String>,
    /// Longest tokenized input.
    pub max_len: usize,
}

impl TaskInfo {
    /// Writes `task.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        ptune_prompt::adapter::write_atomic(
            &dir.join("task.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Reads `task.json` from a run folder or from its `adapter/` folder's parent.
    pub fn load(run: &Path) -> Result<(Self, PathBuf)> {
        for dir in [Some(run), run.parent()].into_iter().flatten() {
            let path = dir.join("task.json");
            if path.is_file() {
                let text = std::fs::read_to_string(&path)?;
                let info = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                return Ok((info, dir.to_path_buf()));
            }
        }
        bail!("{}: no task.json (is it a `ptune train` run folder?)", run.display())
    }
}

/// A task's tokenized data.
#[derive(Debug)]
pub enum TaskData {
    /// Classify or cloze (cloze ids hold the template).
    Labelled(ClassificationSet),
    /// Tag.
    Tagged(TaggingSet),
    /// Generate: tokenized examples and the text pairs (for references).
    Generation {
        /// Tokenized splits.
        examples: Splits<LmExample>,
        /// The text pairs.
        pairs: Splits<GenerationPair>,
    },
}

/// The cloze template's default.
pub const CLOZE_TEMPLATE: &str = "{text} Sentiment:";
/// The generation separator's default.
pub const SEPARATOR: &str = "\nDescription:";

/// Fills the cloze template.
pub fn templated(template: &str, text: &str) -> String {
    template.replace("{text}", text)
}

/// Loads and tokenizes `info.dataset` for `info.task` (train rows cut to `train_limit`); fills
/// `info.labels` from the data. Generation targets end with `eos`.
pub fn load_data(
    info: &mut TaskInfo,
    tok: &TextTokenizer,
    train_limit: usize,
    eos: Option<u32>,
) -> Result<TaskData> {
    match info.task {
        TaskKind::Classify | TaskKind::Cloze => {
            let text = ptune_data::recipes::classification(&info.dataset, &ColumnMap::default())?;
            info.labels = text.labels.clone();
            let template = info.cloze_template.clone();
            let source = text.source.clone();
            let tokenize = |records: &[Record]| -> Result<_> {
                let records: Vec<Record> = match &template {
                    Some(t) if info.task == TaskKind::Cloze => records
                        .iter()
                        .map(|r| Record { text: templated(t, &r.text), ..r.clone() })
                        .collect(),
                    _ => records.to_vec(),
                };
                Ok(tokenize_classification(&records, &text.labels, tok, info.max_len, &source)?)
            };
            let train: Vec<Record> = text.splits.train.iter().take(train_limit).cloned().collect();
            Ok(TaskData::Labelled(ClassificationSet {
                labels: text.labels.clone(),
                splits: Splits {
                    train: tokenize(&train)?,
                    dev: tokenize(&text.splits.dev)?,
                    test: tokenize(&text.splits.test)?,
                },
            }))
        }
        TaskKind::Tag => {
            let tagged = ptune_data::tagging::tagging(&info.dataset)?;
            let s = &tagged.splits;
            let labels = bio_labels(s.train.iter().chain(&s.dev).chain(&s.test));
            info.labels = labels.clone();
            let train: Vec<_> = s.train.iter().take(train_limit).cloned().collect();
            let tokenize = |rows: &[ptune_data::tagging::TaggedSentence]| -> Result<_> {
                let mut ex = tokenize_tagging(rows, &labels, tok, info.max_len, &tagged.source)?;
                ex.retain(|e| !e.tags.is_empty());
                Ok(ex)
            };
            Ok(TaskData::Tagged(TaggingSet {
                labels: labels.clone(),
                splits: Splits {
                    train: tokenize(&train)?,
                    dev: tokenize(&s.dev)?,
                    test: tokenize(&s.test)?,
                },
            }))
        }
        TaskKind::Generate => {
            let mut pairs = ptune_data::recipes::generation(&info.dataset)?;
            pairs.train.truncate(train_limit);
            let sep = info.separator.clone().unwrap_or_else(|| SEPARATOR.into());
            let examples = pairs
                .clone()
                .try_map(|rows| tokenize_generation(&rows, tok, &sep, eos, info.max_len))?;
            Ok(TaskData::Generation { examples, pairs })
        }
    }
}
