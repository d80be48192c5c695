//! Weight loading: a [`TensorSource`] yields host tensors by their **Hugging Face name**, whatever the
//! file format; a [`ParamLoader`] turns them into frozen Burn parameters, checking each shape against
//! the config and counting what it loaded. Family loaders (`bert::load`, `llama::load`) open with a
//! table mapping HF names to our field paths.

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

pub mod gguf;
pub mod safetensors;

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, TransformerError};

/// A tensor in host memory, row-major, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Anything that can hand out tensors by HF name (safetensors file, GGUF file, …).
pub trait TensorSource {
    /// Returns the tensor called `name` (HF naming), or `Ok(None)` if the source does not hold it.
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>>;
    /// Describes the source in error messages.
    fn origin(&self) -> &std::path::Path;
}

/// Builds frozen Burn modules from a [`TensorSource`], checking shapes and counting loaded values.
pub struct ParamLoader<'a, B: Backend> {
    source: &'a dyn TensorSource,
    device: &'a B::Device,
    loaded: Vec<String>,
    loaded_values: usize,
}

impl<'a, B: Backend> ParamLoader<'a, B> {
    /// A loader reading from `source` onto `device`.
    pub fn new(source: &'a dyn TensorSource, device: &'a B::Device) -> Self {
        Self { source, device, loaded: Vec::new(), loaded_values: 0 }
    }

    /// HF names of every tensor loaded so far.
    pub fn loaded_names(&self) -> &[String] {
        &self.loaded
    }

    /// Number of scalar values loaded so far.
    pub fn loaded_values(&self) -> usize {
        self.loaded_values
    }

    /// Whether the source has a tensor of this name.
    pub fn has(&self, name: &str) -> Result<bool> {
        Ok(self.source.tensor(name)?.is_some())
    }

    /// Loads `name`, requiring `shape`.
    pub fn host(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.source.tensor(name)?.ok_or_else(|| TransformerError::MissingTensor {
            name: name.into(),
            path: self.source.origin().to_path_buf(),
        })?;
        if t.shape != shape {
            return Err(TransformerError::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TransformerError::NonFiniteWeight { name: name.into(), index, value });
        }
        self.loaded.push(name.into());
        self.loaded_values += t.data.len();
        Ok(t)
    }

    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let t = self.host(name, &shape)?;
        // In the backend's float type (f32 files load as f64 on an f64 backend).
        Ok(Tensor::from_data(TensorData::new(t.data, shape).convert::<B::FloatElem>(), self.device))
    }

    fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(frozen(self.tensor(name, shape)?))
    }

    /// HF `nn.Linear` `{prefix}.weight` `[out, in]` (+ `{prefix}.bias`) as a Burn `Linear` (`[in, out]`).
    /// The transpose is done once here, on the host, so the matmuls read a contiguous weight.
    pub fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear<B>> {
        let t = self.host(&format!("{prefix}.weight"), &[d_out, d_in])?;
        // `host` checked the shape: `data` holds `d_out` rows of `d_in`.
        let transposed: Vec<f32> =
            (0..d_in).flat_map(|i| t.data.iter().skip(i).step_by(d_in.max(1)).copied()).collect();
        let data = TensorData::new(transposed, [d_in, d_out]).convert::<B::FloatElem>();
        let mut linear = LinearConfig::new(d_in, d_out).with_bias(false).init::<B>(self.device);
        linear.weight = frozen(Tensor::from_data(data, self.device));
        if bias {
            linear.bias = Some(self.param(&format!("{prefix}.bias"), [d_out])?);
        }
        Ok(linear)
    }

    /// HF `nn.Embedding` `{prefix}.weight` `[n, d]`.
    pub fn embedding(&mut self, prefix: &str, n: usize, d: usize) -> Result<Embedding<B>> {
        let mut emb = EmbeddingConfig::new(1, 1).init::<B>(self.device);
        emb.weight = self.param(&format!("{prefix}.weight"), [n, d])?;
        Ok(emb)
    }

    /// HF `nn.LayerNorm` `{prefix}.weight`/`.bias` `[d]`.
    pub fn layer_norm(&mut self, prefix: &str, d: usize, eps: f64) -> Result<LayerNorm<B>> {
        let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init::<B>(self.device);
        norm.gamma = self.param(&format!("{prefix}.weight"), [d])?;
        norm.beta = Some(self.param(&format!("{prefix}.bias"), [d])?);
        Ok(norm)
    }

    /// HF `LlamaRMSNorm` `{prefix}.weight` `[d]`.
    pub fn rms_norm(&mut self, prefix: &str, d: usize, eps: f64) -> Result<RmsNorm<B>> {
        let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init::<B>(self.device);
        norm.gamma = self.param(&format!("{prefix}.weight"), [d])?;
        Ok(norm)
    }
}

/// A parameter that never requires a gradient: loaded backbones are frozen by construction.
fn frozen<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(tensor).set_require_grad(false)
}

/// Reads a whole file, mapping the error to [`TransformerError::Io`].
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TransformerError::Io { path: path.to_path_buf(), source })
}
