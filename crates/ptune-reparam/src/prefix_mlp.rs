//! Prefix-Tuning's reparameterization (PEFT `PrefixEncoder` with `prefix_projection=True`):
//! `Embedding(N, d) → Linear(d, H) → Tanh → Linear(H, layers·2·kv_dim)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Config of a [`PrefixMlp`].
#[derive(Config, Debug)]
pub struct PrefixMlpConfig {
    /// Virtual tokens `N`.
    pub n_tokens: usize,
    /// Input width `d` (PEFT's `token_dim`: `kv_heads·head_dim`).
    pub token_dim: usize,
    /// Hidden width `H`.
    pub hidden: usize,
    /// Output width (`layers·2·kv_dim`).
    pub out_width: usize,
}

/// The prefix MLP.
#[derive(Module, Debug)]
pub struct PrefixMlp<B: Backend> {
    /// `embedding` `[N, d]`.
    pub embedding: Embedding<B>,
    /// `transform.0`.
    pub up: Linear<B>,
    /// `transform.2`.
    pub down: Linear<B>,
}

impl PrefixMlpConfig {
    /// A freshly initialized prefix MLP.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PrefixMlp<B> {
        PrefixMlp {
            embedding: EmbeddingConfig::new(self.n_tokens, self.token_dim).init(device),
            up: LinearConfig::new(self.token_dim, self.hidden).init(device),
            down: LinearConfig::new(self.hidden, self.out_width).init(device),
        }
    }
}

impl<B: Backend> PrefixMlp<B> {
    /// # Shapes
    /// - output: `[N, out_width]`
    pub fn forward(&self) -> Tensor<B, 2> {
        let n = self.embedding.weight.dims()[0];
        let ids = Tensor::<B, 1, Int>::arange(0..n as i64, &self.embedding.weight.device())
            .reshape([1, n]);
        let x = self.down.forward(self.up.forward(self.embedding.forward(ids)).tanh());
        let [_, n, w] = x.dims();
        x.reshape([n, w])
    }

    /// Width of the produced rows.
    pub fn output_width(&self) -> usize {
        self.down.weight.dims()[1]
    }
}
