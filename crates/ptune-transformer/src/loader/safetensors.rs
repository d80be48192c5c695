//! HF `model.safetensors` as a [`TensorSource`]. Keys may carry a `bert.`, `roberta.` or `model.`
//! prefix (or lack the `model.` that Llama names have): lookups try the HF name, then those variants.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{read_file, HostTensor, TensorSource};
use crate::error::{Result, TransformerError};

/// An HF safetensors file held in memory.
pub struct SafetensorsSource {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsSource {
    /// Reads the file and checks its header (a truncated or corrupt file fails here).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        SafeTensors::deserialize(&bytes).map_err(|e| TransformerError::CorruptWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self { path: path.to_path_buf(), bytes })
    }

    fn view(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| TransformerError::CorruptWeights {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Every tensor name in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.view()?.names().into_iter().map(String::from).collect())
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
        let st = self.view()?;
        for candidate in candidates(name) {
            let Ok(view) = st.tensor(&candidate) else { continue };
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

/// Little-endian F32 / F16 / BF16 bytes to f32; `None` for other dtypes.
fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
        Dtype::F16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}
