//! The adapters a server holds: every folder under `--adapters DIR` that holds a PEFT adapter
//! (`adapter_config.json`) and the task it was trained for (`task.json`, which `ptune train` writes
//! into the adapter folder), loaded for the server's one backbone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ptune_prompt::adapter::load_adapter;
use ptune_prompt::{ClassifierHead, SoftPrompt};
use ptune_train::{Pooling, TaskInfo, TaskKind};
use ptune_transformer::{Backbone, FrozenOps, TextTokenizer};
use serde::Serialize;

/// One adapter, ready to run on the server's backbone.
pub struct ServedAdapter<B: FrozenOps> {
    /// Unique among every adapter this process has loaded (a reload gives new ids).
    pub id: u64,
    /// Its name: the folder's name under the adapters folder.
    pub name: String,
    /// The task it was trained for (labels, pooling, longest input, template).
    pub info: TaskInfo,
    /// Its soft prompt (materialized table).
    pub prompt: SoftPrompt<B>,
    /// Its head (classify and tag adapters).
    pub head: Option<ClassifierHead<B>>,
    /// The token of each label's word (cloze adapters: classification by the decoder's next
    /// word after the template).
    pub verbalizer: Vec<u32>,
}

impl<B: FrozenOps> ServedAdapter<B> {
    /// The pooling of a classify adapter (mean where the run did not say).
    pub fn pooling(&self) -> Pooling {
        self.info.pooling.unwrap_or(Pooling::Mean)
    }

    /// What `GET /v1/adapters` says of it.
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary {
            name: self.name.clone(),
            task: self.info.task,
            method: self.prompt.spec.method.to_string(),
            labels: self.info.labels.clone(),
            num_virtual_tokens: self.prompt.spec.num_virtual_tokens,
            max_len: self.info.max_len,
        }
    }
}

/// An adapter as listed by the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterSummary {
    /// Name (the folder's).
    pub name: String,
    /// Task.
    pub task: TaskKind,
    /// Method.
    pub method: String,
    /// Label names (classify, tag).
    pub labels: Vec<String>,
    /// Virtual tokens.
    pub num_virtual_tokens: usize,
    /// Longest tokenized input; longer inputs are cut, as `ptune predict` does.
    pub max_len: usize,
}

/// A folder that could not be loaded, and why (the server starts without it and lists it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The folder's name.
    pub name: String,
    /// Why it was not loaded.
    pub error: String,
}

/// The adapters of one scan of the adapters folder.
pub struct AdapterSet<B: FrozenOps> {
    /// By name.
    pub adapters: BTreeMap<String, ServedAdapter<B>>,
    /// Folders with an `adapter_config.json` that did not load.
    pub skipped: Vec<Skipped>,
}

impl<B: FrozenOps> AdapterSet<B> {
    /// Loads every adapter folder directly under `dir` for `backbone`. A folder that fails to
    /// load (broken files, another model's sizes, no `task.json`) is skipped with its reason; a
    /// missing or unreadable `dir` is an error.
    pub fn scan(
        dir: &Path,
        backbone: &dyn Backbone<B>,
        tokenizer: &TextTokenizer,
        device: &B::Device,
    ) -> Result<Self, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("adapters folder {}: {e}", dir.display()))?;
        let mut folders: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("adapter_config.json").is_file())
            .collect();
        // The adapters folder may itself be one adapter.
        if dir.join("adapter_config.json").is_file() {
            folders.push(dir.to_path_buf());
        }
        folders.sort();
        let mut adapters = BTreeMap::new();
        let mut skipped = Vec::new();
        for folder in folders {
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| folder.display().to_string());
            match load_one(&folder, &name, backbone, tokenizer, device) {
                Ok(a) => {
                    adapters.insert(name, a);
                }
                Err(error) => skipped.push(Skipped { name, error }),
            }
        }
        Ok(Self { adapters, skipped })
    }
}

fn load_one<B: FrozenOps>(
    folder: &Path,
    name: &str,
    backbone: &dyn Backbone<B>,
    tokenizer: &TextTokenizer,
    device: &B::Device,
) -> Result<ServedAdapter<B>, String> {
    let task = folder.join("task.json");
    if !task.is_file() {
        return Err(format!(
            "no task.json in {} (adapters written by `ptune train` carry one)",
            folder.display()
        ));
    }
    let (info, _) = TaskInfo::load(folder).map_err(|e| e.to_string())?;
    let dims = backbone.dims();
    let adapter = load_adapter::<B>(folder, &dims, device).map_err(|e| e.to_string())?;
    adapter.prompt.check_backbone(backbone).map_err(|e| e.to_string())?;
    if let Some(head) = &adapter.head {
        let [d_in, d_out] = head.linear.weight.dims();
        if d_in != dims.hidden_size {
            return Err(format!(
                "its head reads {d_in} features, the model's hidden size is {}",
                dims.hidden_size
            ));
        }
        if matches!(info.task, TaskKind::Classify | TaskKind::Tag) && d_out != info.labels.len() {
            return Err(format!(
                "its head has {d_out} outputs, its task.json {} labels",
                info.labels.len()
            ));
        }
    }
    if matches!(info.task, TaskKind::Classify | TaskKind::Tag) && adapter.head.is_none() {
        return Err(format!("a {:?} adapter without a head", info.task));
    }
    let mut verbalizer = Vec::new();
    if info.task == TaskKind::Cloze {
        if backbone.as_decoder().is_none() {
            return Err(format!(
                "a cloze adapter needs a decoder, not a {} model",
                backbone.family()
            ));
        }
        let words = info.verbalizer.clone().unwrap_or_default();
        verbalizer = ptune_train::lm::verbalizer(tokenizer, &words).map_err(|e| e.to_string())?;
        if verbalizer.len() != info.labels.len() {
            return Err(format!(
                "its verbalizer has {} words for {} labels",
                verbalizer.len(),
                info.labels.len()
            ));
        }
    }
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Ok(ServedAdapter {
        id,
        name: name.to_string(),
        info,
        prompt: adapter.prompt,
        head: adapter.head,
        verbalizer,
    })
}
