//! Opening a model from disk: an HF folder (`config.json` + `model.safetensors` or its shards
//! [+ `tokenizer.json`]), a Hub id in the local HF cache,
//! or a GGUF file (or a folder holding exactly one). Returns the backbone of the right family.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::bert::{load_bert, Bert};
use crate::config::ModelConfig;
use crate::error::{Result, TransformerError};
use crate::frozen::FrozenOps;
use crate::hub::resolve_model_path;
use crate::input::{delegate_backbone, Backbone, BackboneInput};
use crate::llama::{load_llama, Llama};
use crate::loader::gguf::{GgufFile, GgufLlamaSource};
use crate::loader::safetensors::SafetensorsSource;
use crate::loader::TensorSource;
use crate::tokenizer::TextTokenizer;

/// A loaded backbone of either family. (Loaded once per process, so the variants' sizes do not
/// matter.) A Burn module like its variants: full fine-tuning trains it, and its weights save and
/// load as records.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AnyBackbone<B: Backend> {
    /// BERT encoder.
    Bert(Bert<B>),
    /// Llama decoder.
    Llama(Llama<B>),
}

/// A backbone with its tokenizer and a record of what was loaded.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The frozen backbone.
    pub backbone: AnyBackbone<B>,
    /// Its config.
    pub config: ModelConfig,
    /// Its tokenizer, if the model folder or file has one.
    pub tokenizer: Option<TextTokenizer>,
    /// HF names of every tensor loaded.
    pub loaded_tensors: Vec<String>,
    /// The file the weights came from (for sharded weights, their index).
    pub weights_path: PathBuf,
}

/// How a path on disk holds a model.
enum Layout {
    HfFolder(PathBuf),
    Gguf(PathBuf),
}

fn layout(path: &Path) -> Result<Layout> {
    let not_found = |what: &str| TransformerError::Config {
        origin: path.display().to_string(),
        message: what.to_string(),
    };
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("gguf") => Ok(Layout::Gguf(path.to_path_buf())),
            _ => Err(not_found("a model file must be .gguf (or pass an HF folder)")),
        };
    }
    if !path.is_dir() {
        return Err(not_found("no such file or folder"));
    }
    if path.join("config.json").is_file() {
        return Ok(Layout::HfFolder(path.to_path_buf()));
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| TransformerError::Io { path: path.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(Layout::Gguf(one.clone())),
        [] => Err(not_found("folder has neither config.json nor a .gguf file")),
        _ => Err(not_found("folder has several .gguf files: pass one")),
    }
}

/// Loads a frozen backbone (and tokenizer) from an HF folder or a GGUF file.
///
/// `path` may also be a Hugging Face Hub id (`org/name[@revision]`) found in the local HF cache
/// ([`resolve_model_path`]); HF folders may hold sharded weights (`model.safetensors.index.json`).
pub fn load_model<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let path = resolve_model_path(&path.to_string_lossy())?;
    match layout(&path)? {
        Layout::HfFolder(dir) => {
            let config = ModelConfig::from_file(&dir.join("config.json"))?;
            let source = SafetensorsSource::open_folder(&dir)?;
            let weights_path = source.origin().to_path_buf();
            let (backbone, loaded_tensors) = match &config {
                ModelConfig::Bert(c) => {
                    let (m, names) = load_bert::<B>(c, &source, device)?;
                    (AnyBackbone::Bert(m), names)
                }
                ModelConfig::Llama(c) => {
                    let (m, names) = load_llama::<B>(c, &source, device)?;
                    (AnyBackbone::Llama(m), names)
                }
            };
            let tok_path = dir.join("tokenizer.json");
            let tokenizer =
                if tok_path.is_file() { Some(TextTokenizer::from_file(&tok_path)?) } else { None };
            Ok(LoadedModel { backbone, config, tokenizer, loaded_tensors, weights_path })
        }
        Layout::Gguf(file_path) => {
            let file = GgufFile::open(&file_path)?;
            let llama = file.llama_config()?;
            let tokenizer = Some(TextTokenizer::from_gguf(&file)?);
            let source = GgufLlamaSource::new(file, &llama);
            let (model, loaded_tensors) = load_llama::<B>(&llama, &source, device)?;
            Ok(LoadedModel {
                backbone: AnyBackbone::Llama(model),
                config: ModelConfig::Llama(llama),
                tokenizer,
                loaded_tensors,
                weights_path: file_path,
            })
        }
    }
}

impl<B: FrozenOps> AnyBackbone<B> {
    /// The backbone behind the enum: the one place a family is matched after loading.
    pub fn as_dyn(&self) -> &dyn Backbone<B> {
        match self {
            AnyBackbone::Bert(m) => m,
            AnyBackbone::Llama(m) => m,
        }
    }
}

/// Every method forwards to [`AnyBackbone::as_dyn`], so `&AnyBackbone` works wherever a
/// `&dyn Backbone` is asked for.
impl<B: FrozenOps> Backbone<B> for AnyBackbone<B> {
    delegate_backbone!(.as_dyn());

    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>> {
        self.as_dyn().forward(input)
    }
}
