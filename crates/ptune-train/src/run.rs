//! What a run folder remembers of its task (`task.json`): everything evaluation and prediction
//! need besides the adapter (task, labels, pooling, longest input, cloze template and verbalizer,
//! generation separator), so the CLI and library users load a run the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::classify::Pooling;
use crate::error::{io_err, Result, TrainError};

/// A task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    /// `task` by name, or the data set's natural task (`e2e` generates, `e2e-slots` tags, anything
    /// else classifies).
    pub fn pick(task: Option<&str>, dataset: &str) -> Result<Self> {
        Ok(match task {
            Some("classify") => TaskKind::Classify,
            Some("tag") => TaskKind::Tag,
            Some("cloze") => TaskKind::Cloze,
            Some("generate") => TaskKind::Generate,
            Some(other) => {
                return Err(TrainError::Config(format!(
                    "unknown task `{other}` (classify, tag, cloze, generate)"
                )))
            }
            None => match dataset {
                "e2e" => TaskKind::Generate,
                "e2e-slots" => TaskKind::Tag,
                _ => TaskKind::Classify,
            },
        })
    }
}

/// The cloze template's default.
pub const CLOZE_TEMPLATE: &str = "{text} Sentiment:";
/// The generation separator's default.
pub const SEPARATOR: &str = "\nDescription:";

/// Fills a cloze template.
pub fn templated(template: &str, text: &str) -> String {
    template.replace("{text}", text)
}

/// `<run>/task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task.
    pub task: TaskKind,
    /// Model name (`minilm`, `smollm2`) or path.
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
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let text = serde_json::to_string_pretty(self).map_err(|e| io_err(dir, e))?;
        crate::trainer::write_atomic(&dir.join("task.json"), &text)
    }

    /// Reads `task.json` from a run folder, or from the parent of its `adapter/` folder; returns
    /// it with the run folder.
    pub fn load(run: &Path) -> Result<(Self, PathBuf)> {
        for dir in [Some(run), run.parent()].into_iter().flatten() {
            let path = dir.join("task.json");
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
                let info = serde_json::from_str(&text).map_err(|e| {
                    TrainError::Config(format!("{}: not a task.json: {e}", path.display()))
                })?;
                return Ok((info, dir.to_path_buf()));
            }
        }
        Err(TrainError::Config(format!(
            "{}: no task.json (is it a `ptune train` run folder?)",
            run.display()
        )))
    }
}

/// A model name as runs record it: `minilm` and `smollm2` are the fetched models
/// (`cargo xtask fetch`), anything else is a path.
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    if matches!(name, "minilm" | "smollm2") {
        return Ok(ptune_data::recipes::fetched("models", name)?);
    }
    Ok(PathBuf::from(name))
}
