//! # ptune-reparam
//!
//! Encoders that produce a table of soft-prompt vectors `[n_tokens, width]` from trainable
//! parameters, as PEFT builds them:
//!
//! | encoder | PEFT module | parameters |
//! |---|---|---|
//! | [`PromptTable`] | `PromptEmbedding` / `PrefixEncoder` without projection | `N·w` |
//! | [`MlpEncoder`] | `PromptEncoder` (MLP) | `N·d + (d·H+H) + (H·H+H) + (H·d+d)` |
//! | [`LstmEncoder`] | `PromptEncoder` (LSTM), or the P-Tuning paper's variant | embedding + BiLSTM + MLP |
//! | [`PrefixMlp`] | `PrefixEncoder` with `prefix_projection` | `N·d + (d·H+H) + (H·out+out)` |
//!
//! Each runs once per step (not once per row) and [`Reparam::materialize`] turns any of them into a
//! plain [`PromptTable`]: the encoder is discarded for inference.

mod lstm;
mod mlp;
mod prefix_mlp;
mod table;

pub use lstm::{LstmEncoder, LstmEncoderConfig, LstmVariant};
pub use mlp::{MlpEncoder, MlpEncoderConfig};
pub use prefix_mlp::{PrefixMlp, PrefixMlpConfig};
pub use table::{PromptTable, PromptTableConfig, TableInit};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Any reparameterization of a prompt table.
#[derive(Module, Debug)]
pub enum Reparam<B: Backend> {
    /// Direct table (no reparameterization).
    Table(PromptTable<B>),
    /// PEFT's P-Tuning MLP.
    Mlp(MlpEncoder<B>),
    /// BiLSTM + MLP (PEFT/NeMo or paper variant).
    Lstm(LstmEncoder<B>),
    /// Prefix-Tuning's Tanh MLP.
    PrefixMlp(PrefixMlp<B>),
}

impl<B: Backend> Reparam<B> {
    /// The prompt table this encoder currently produces.
    ///
    /// # Shapes
    /// - output: `[n_tokens, width]`
    pub fn forward(&self) -> Tensor<B, 2> {
        match self {
            Reparam::Table(m) => m.forward(),
            Reparam::Mlp(m) => m.forward(),
            Reparam::Lstm(m) => m.forward(),
            Reparam::PrefixMlp(m) => m.forward(),
        }
    }

    /// The encoder's current output as a plain table, detached from the encoder.
    pub fn materialize(&self) -> PromptTable<B> {
        PromptTable::from_tensor(self.forward().detach())
    }

    /// `(n_tokens, width)` of the produced table.
    pub fn output_shape(&self) -> [usize; 2] {
        match self {
            Reparam::Table(m) => m.weight.dims(),
            Reparam::Mlp(m) => [m.embedding.weight.dims()[0], m.output_width()],
            Reparam::Lstm(m) => [m.embedding.weight.dims()[0], m.output_width()],
            Reparam::PrefixMlp(m) => [m.embedding.weight.dims()[0], m.output_width()],
        }
    }

    /// Whether this is a reparameterization (as opposed to a direct table).
    pub fn is_reparameterized(&self) -> bool {
        !matches!(self, Reparam::Table(_))
    }
}
