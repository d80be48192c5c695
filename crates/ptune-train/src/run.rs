//! What a run folder remembers of its task (`task.json`): everything evaluation and prediction
//! need besides the adapter (task, labels, pooling, longest input, cloze template and verbalizer,
//! generation separator), so the CLI and library users load a run the same way.

use std::path::{Path, PathBuf};

use ptune_data::{Columns, DataSpec};
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
    /// Data set name or path (the training file).
    pub dataset: String,
    /// The dev file, when the run was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<PathBuf>,
    /// The test file, when the run was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// Column names of the data files, where not the defaults.
    #[serde(default, skip_serializing_if = "is_default_columns")]
    pub columns: Columns,
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

fn is_default_columns(c: &Columns) -> bool {
    *c == Columns::default()
}

impl TaskInfo {
    /// The longest input (in tokens) a prediction reads: the run's `max_len`, within what a model
    /// of `max_positions` positions leaves after `virtual_tokens` (input-level tokens and
    /// prefixes both shift the text's positions). Longer texts are cut to it.
    pub fn longest_input(&self, virtual_tokens: usize, max_positions: usize) -> usize {
        self.max_len.min(max_positions.saturating_sub(virtual_tokens))
    }

    /// Where the run's rows come from.
    pub fn data_spec(&self) -> DataSpec {
        DataSpec {
            dataset: self.dataset.clone(),
            dev: self.dev.clone(),
            test: self.test.clone(),
            columns: self.columns.clone(),
        }
    }

    /// `task.json`'s text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| TrainError::Config(format!("writing task.json: {e}")))
    }

    /// Writes `task.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        crate::trainer::write_atomic(&dir.join("task.json"), &self.to_json()?)
    }

    /// Reads `task.json` from a run folder or an adapter folder (which carries a copy), else from
    /// the folder's parent; returns it with the folder it was found in.
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

/// What an adapter's `base_model_name_or_path` records for the model `name`: the Hub id when it is
/// known (the packaged models' ids, a Hub id given as such, a folder inside an HF cache snapshot),
/// else the path, so PEFT's `from_pretrained` can find the base model.
pub fn base_model_id(name: &str) -> String {
    match name {
        "minilm" => return "sentence-transformers/all-MiniLM-L6-v2".into(),
        "smollm2" => return "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
        _ => {}
    }
    let path = Path::new(name);
    if !path.exists() {
        if let Some((org, repo, _)) = ptune_transformer::hub::parse_hub_id(name) {
            return format!("{org}/{repo}");
        }
    }
    // …/models--org--name/snapshots/<commit>[/file]
    let parts: Vec<String> =
        path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for (i, part) in parts.iter().enumerate() {
        let snapshot_follows = parts.get(i + 1).is_some_and(|p| p == "snapshots");
        if let (Some(id), true) = (part.strip_prefix("models--"), snapshot_follows) {
            if let Some((org, repo)) = id.split_once("--") {
                return format!("{org}/{repo}");
            }
        }
    }
    name.to_string()
}

/// A model name as runs record it: `minilm` and `smollm2` are the fetched models
/// (`cargo xtask fetch`), anything else is a path.
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    if matches!(name, "minilm" | "smollm2") {
        return Ok(ptune_data::recipes::fetched("models", name)?);
    }
    Ok(PathBuf::from(name))
}

#[cfg(test)]
mod base_model_tests {
    use super::base_model_id;

    #[test]
    fn adapters_name_the_hub_id_when_known() {
        assert_eq!(base_model_id("minilm"), "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(base_model_id("HuggingFaceTB/SmolLM2-135M@main"), "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(
            base_model_id("/hf/hub/models--org--tiny-bert/snapshots/0123abcd"),
            "org/tiny-bert"
        );
        assert_eq!(base_model_id("/models/my-bert"), "/models/my-bert");
    }
}
