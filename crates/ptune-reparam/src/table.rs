//! A direct table of prompt vectors (PEFT `PromptEmbedding`, or `PrefixEncoder` without projection).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// How a fresh table is filled.
#[derive(Config, Debug, PartialEq)]
pub enum TableInit {
    /// `N(0, std²)`; PEFT's `nn.Embedding` default is `std = 1`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros.
    Zeros,
}

/// Config of a [`PromptTable`].
#[derive(Config, Debug)]
pub struct PromptTableConfig {
    /// Rows (virtual tokens).
    pub n_tokens: usize,
    /// Width of each row.
    pub width: usize,
    /// Initialization.
    #[config(default = "TableInit::Normal { std: 1.0 }")]
    pub init: TableInit,
}

/// A trainable `[n_tokens, width]` table.
#[derive(Module, Debug)]
pub struct PromptTable<B: Backend> {
    /// The rows.
    pub weight: Param<Tensor<B, 2>>,
}

impl PromptTableConfig {
    /// A table filled per `init`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptTable<B> {
        let shape = [self.n_tokens, self.width];
        let t = match self.init {
            TableInit::Normal { std } => {
                Tensor::random(shape, Distribution::Normal(0.0, std), device)
            }
            TableInit::Zeros => Tensor::zeros(shape, device),
        };
        PromptTable::from_tensor(t)
    }
}

impl<B: Backend> PromptTable<B> {
    /// A trainable table holding `values` `[n_tokens, width]`.
    ///
    /// # Shapes
    /// - table: `[N, width]`
    pub fn from_tensor(values: Tensor<B, 2>) -> Self {
        Self { weight: Param::from_tensor(values) }
    }

    /// # Shapes
    /// - output: `[n_tokens, width]`
    pub fn forward(&self) -> Tensor<B, 2> {
        self.weight.val()
    }
}
