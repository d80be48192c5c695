//! What a backbone runs on: input embeddings plus the hooks soft-prompt methods need.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::attention::PrefixKv;
use crate::config::{BackboneDims, PositionPolicy};
use crate::error::{Result, TransformerError};

/// Input of [`Backbone::forward`](crate::Backbone::forward).
#[derive(Debug, Clone)]
pub struct BackboneInput<B: Backend> {
    /// Input embeddings `[b, s, d]` (token embeddings, possibly with virtual tokens placed in them).
    pub embeds: Tensor<B, 3>,
    /// `[b, s]`, `true` = padding (masked as a key). `None`: nothing is padded.
    pub padding_mask: Option<Tensor<B, 2, Bool>>,
    /// Segment ids `[b, s]` (BERT only; zeros when `None`).
    pub token_types: Option<Tensor<B, 2, Int>>,
    /// Per-layer key/value prefixes.
    pub prefix: Option<PrefixKv<B>>,
    /// Positions of real tokens when a prefix is present.
    pub positions: PositionPolicy,
}

impl<B: Backend> BackboneInput<B> {
    /// Input from embeddings `[b, s, d]`, no mask, no prefix, `shift` positions.
    pub fn new(embeds: Tensor<B, 3>) -> Self {
        Self {
            embeds,
            padding_mask: None,
            token_types: None,
            prefix: None,
            positions: PositionPolicy::Shift,
        }
    }

    /// Sets the padding mask `[b, s]` (`true` = padding).
    pub fn with_padding_mask(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.padding_mask = Some(mask);
        self
    }

    /// Sets segment ids `[b, s]`.
    pub fn with_token_types(mut self, types: Tensor<B, 2, Int>) -> Self {
        self.token_types = Some(types);
        self
    }

    /// Sets per-layer prefixes.
    pub fn with_prefix(mut self, prefix: PrefixKv<B>) -> Self {
        self.prefix = Some(prefix);
        self
    }

    /// Sets the position policy.
    pub fn with_positions(mut self, positions: PositionPolicy) -> Self {
        self.positions = positions;
        self
    }

    /// Number of prefix slots.
    pub fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixKv::len)
    }

    /// Checks every shape against the backbone; returns `[b, s]`.
    pub fn validate(&self, dims: &BackboneDims) -> Result<[usize; 2]> {
        let [b, s, d] = self.embeds.dims();
        if d != dims.hidden_size {
            return Err(TransformerError::Input(format!(
                "embeddings have width {d}, the model's hidden size is {}",
                dims.hidden_size
            )));
        }
        if b == 0 || s == 0 {
            return Err(TransformerError::Input(format!(
                "empty batch: embeddings [{b}, {s}, {d}]"
            )));
        }
        if let Some(mask) = &self.padding_mask {
            if mask.dims() != [b, s] {
                return Err(TransformerError::Input(format!(
                    "padding mask has shape {:?}, expected [{b}, {s}]",
                    mask.dims()
                )));
            }
        }
        if let Some(types) = &self.token_types {
            if types.dims() != [b, s] {
                return Err(TransformerError::Input(format!(
                    "token types have shape {:?}, expected [{b}, {s}]",
                    types.dims()
                )));
            }
        }
        if let Some(prefix) = &self.prefix {
            prefix.validate(dims, b)?;
        }
        Ok([b, s])
    }
}

/// The hooks every backbone offers to soft-prompt methods. Heads live outside the backbone.
pub trait Backbone<B: Backend> {
    /// Shape facts (layers, heads, KV heads, widths, positions).
    fn dims(&self) -> BackboneDims;

    /// Token embeddings of ids.
    ///
    /// # Shapes
    /// - ids: `[b, s]` → `[b, s, d]`
    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3>;

    /// The vocabulary embedding matrix `[vocab, d]`.
    fn embedding_matrix(&self) -> Tensor<B, 2>;

    /// Runs the transformer from input embeddings to the last hidden state.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → `[b, s, d]`
    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>>;

    /// Each layer's keys and values of the real tokens (after RoPE for decoders), as attention sees
    /// them; used to initialize prefixes from the activations of real text.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → per layer `([b, n_kv_heads, s, head_dim], same)`
    fn key_values(&self, input: BackboneInput<B>) -> Result<Vec<(Tensor<B, 4>, Tensor<B, 4>)>>;
}

/// Checks token ids against the vocabulary (an unknown id is an error, not an out-of-bounds read).
pub fn check_ids(ids: &[u32], vocab_size: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(id) => Err(TransformerError::Input(format!(
            "token id {id} is outside the vocabulary of {vocab_size}"
        ))),
        None => Ok(()),
    }
}
