//! PEFT's P-Tuning MLP encoder (`PromptEncoder`, MLP):
//! `Embedding(N, d) → Linear(d, H) → ReLU → Linear(H, H) → ReLU → Linear(H, d)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Config of an [`MlpEncoder`].
#[derive(Config, Debug)]
pub struct MlpEncoderConfig {
    /// Virtual tokens `N`.
    pub n_tokens: usize,
    /// Token width `d` (input and output).
    pub token_dim: usize,
    /// Hidden width `H` (PEFT's `encoder_hidden_size`).
    pub hidden: usize,
}

/// The MLP encoder.
#[derive(Module, Debug)]
pub struct MlpEncoder<B: Backend> {
    /// `embedding` `[N, d]`: the encoder's input, one row per virtual token.
    pub embedding: Embedding<B>,
    /// `mlp_head.0`, `mlp_head.2`, `mlp_head.4`.
    pub layers: Vec<Linear<B>>,
}

impl MlpEncoderConfig {
    /// A freshly initialized encoder (Burn's default inits).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpEncoder<B> {
        let (d, h) = (self.token_dim, self.hidden);
        MlpEncoder {
            embedding: EmbeddingConfig::new(self.n_tokens, d).init(device),
            layers: vec![
                LinearConfig::new(d, h).init(device),
                LinearConfig::new(h, h).init(device),
                LinearConfig::new(h, d).init(device),
            ],
        }
    }
}

impl<B: Backend> MlpEncoder<B> {
    /// # Shapes
    /// - output: `[N, d]`
    pub fn forward(&self) -> Tensor<B, 2> {
        let n = self.embedding.weight.dims()[0];
        let ids = Tensor::<B, 1, Int>::arange(0..n as i64, &self.embedding.weight.device())
            .reshape([1, n]);
        let mut x = self.embedding.forward(ids);
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        let [_, n, w] = x.dims();
        x.reshape([n, w])
    }

    /// Width of the produced rows.
    pub fn output_width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.weight.dims()[1])
    }
}
