//! HF `model.safetensors` (or the shards a `model.safetensors.index.json` lists) as a
//! [`TensorSource`]. Keys may carry a `bert.`, `roberta.` or `model.` prefix (or lack the `model.`
//! that Llama names have): lookups try the HF name, then those variants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::{read_file, HostTensor, TensorSource};
use crate::error::{Result, TransformerError};

/// The single-file weights of an HF folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of sharded weights (`save_pretrained` with `max_shard_size`).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// HF safetensors weights held in memory: one file, or the shards of an index.
pub struct SafetensorsSource {
    /// The file errors name: the weights file, or the index of the shards.
    path: PathBuf,
    /// Each file with its bytes (one, or one per shard).
    files: Vec<(PathBuf, Vec<u8>)>,
}

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Deserialize)]
pub(crate) struct ShardIndex {
    pub(crate) weight_map: BTreeMap<String, String>,
}

fn corrupt(path: &Path, message: impl Into<String>) -> TransformerError {
    TransformerError::CorruptWeights { path: path.to_path_buf(), message: message.into() }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<()> {
    SafeTensors::deserialize(bytes).map(|_| ()).map_err(|e| corrupt(path, e.to_string()))
}

/// A `model.safetensors.index.json` read from `text` (found at `index_path`), with its shard
/// files: each named once, sorted, and each a plain file name of the model folder.
pub(crate) fn read_index(index_path: &Path, text: &str) -> Result<(ShardIndex, Vec<String>)> {
    let index: ShardIndex = serde_json::from_str(text)
        .map_err(|e| corrupt(index_path, format!("not a safetensors index: {e}")))?;
    let mut shard_names: Vec<String> = index.weight_map.values().cloned().collect();
    shard_names.sort_unstable();
    shard_names.dedup();
    if shard_names.is_empty() {
        return Err(corrupt(index_path, "the weight_map is empty"));
    }
    for shard in &shard_names {
        let plain = Path::new(shard)
            .file_name()
            .is_some_and(|f| f == std::ffi::OsStr::new(shard) && shard != "..");
        if !plain {
            return Err(corrupt(
                index_path,
                format!("shard `{shard}` is not a file name in the model folder"),
            ));
        }
    }
    Ok((index, shard_names))
}

impl SafetensorsSource {
    /// Reads one file and checks its header (a truncated or corrupt file fails here).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        check_header(path, &bytes)?;
        Ok(Self { path: path.to_path_buf(), files: vec![(path.to_path_buf(), bytes)] })
    }

    /// The weights of an HF folder: `model.safetensors`, else the shards listed by
    /// `model.safetensors.index.json` (each shard a file of the same folder, each listed tensor
    /// present in the shard the index names).
    pub fn open_folder(dir: &Path) -> Result<Self> {
        let single = dir.join(WEIGHTS_FILE);
        if single.is_file() {
            return Self::open(&single);
        }
        let index_path = dir.join(INDEX_FILE);
        if !index_path.is_file() {
            return Err(TransformerError::Config {
                origin: dir.display().to_string(),
                message: format!("the folder has neither {WEIGHTS_FILE} nor {INDEX_FILE}"),
            });
        }
        let text = std::fs::read_to_string(&index_path)
            .map_err(|source| TransformerError::Io { path: index_path.clone(), source })?;
        let (index, shard_names) = read_index(&index_path, &text)?;
        let mut files = Vec::with_capacity(shard_names.len());
        for shard in &shard_names {
            let path = dir.join(shard);
            let bytes = read_file(&path)?;
            check_header(&path, &bytes)?;
            files.push((path, bytes));
        }
        let source = Self { path: index_path.clone(), files };
        for (name, shard) in &index.weight_map {
            let path = dir.join(shard);
            let holds = source
                .files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(p, bytes)| -> Result<bool> {
                    Ok(SafeTensors::deserialize(bytes)
                        .map_err(|e| corrupt(p, e.to_string()))?
                        .tensor(name)
                        .is_ok())
                })
                .transpose()?
                .unwrap_or(false);
            if !holds {
                return Err(corrupt(
                    &index_path,
                    format!("the index puts tensor `{name}` in {shard}, which does not hold it"),
                ));
            }
        }
        Ok(source)
    }

    fn views(&self) -> Result<Vec<SafeTensors<'_>>> {
        self.files
            .iter()
            .map(|(path, bytes)| {
                SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, e.to_string()))
            })
            .collect()
    }

    /// Every tensor name in the file (or shards).
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .views()?
            .iter()
            .flat_map(|v| v.names().into_iter().map(String::from).collect::<Vec<_>>())
            .collect())
    }
}

fn candidates(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string(), format!("bert.{name}"), format!("roberta.{name}")];
    if let Some(rest) = name.strip_prefix("model.") {
        names.push(rest.to_string());
    } else {
        names.push(format!("model.{name}"));
    }
    names
}

impl TensorSource for SafetensorsSource {
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        let views = self.views()?;
        for candidate in candidates(name) {
            let Some(view) = views.iter().find_map(|st| st.tensor(&candidate).ok()) else {
                continue;
            };
            let data = decode(view.dtype(), view.data()).ok_or_else(|| {
                TransformerError::UnsupportedDtype {
                    name: candidate.clone(),
                    dtype: format!("{:?}", view.dtype()),
                }
            })?;
            return Ok(Some(HostTensor { shape: view.shape().to_vec(), data }));
        }
        Ok(None)
    }

    fn origin(&self) -> &Path {
        &self.path
    }
}

/// Little-endian F32 / F16 / BF16 bytes to f32; `None` for other dtypes. (The one decoder of
/// safetensors data: model weights and adapters alike.)
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => {
            Some(bytes.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect())
        }
        Dtype::F16 => Some(
            bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|c| half::f16::from_le_bytes(*c).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|c| half::bf16::from_le_bytes(*c).to_f32())
                .collect(),
        ),
        _ => None,
    }
}
