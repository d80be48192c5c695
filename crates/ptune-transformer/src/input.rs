//! What a backbone runs on: input embeddings plus the hooks soft-prompt methods need.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::attention::PrefixKv;
use crate::cache::KvCache;
use crate::config::{BackboneDims, PositionPolicy};
use crate::error::{Result, TransformerError};

/// Input of [`Backbone::forward`].
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
    /// The layers to run (default: all). When it starts after layer 0, `embeds` is the hidden
    /// state entering layer `layers.start` and the embedding stage (BERT: positions, segments,
    /// LayerNorm) is skipped; when it ends before the last layer, the output is the hidden state
    /// after layer `layers.end - 1` (Llama: without the final norm). `0..0` runs the embedding
    /// stage alone, `n..n` the final norm alone. Gradient checkpointing and the lower-layer cache
    /// run the backbone in such pieces.
    pub layers: Range<usize>,
}

impl<B: Backend> BackboneInput<B> {
    /// Input from embeddings `[b, s, d]`, no mask, no prefix, `shift` positions.
    ///
    /// # Shapes
    /// - embeds: `[b, s, d]`
    pub fn new(embeds: Tensor<B, 3>) -> Self {
        Self {
            embeds,
            padding_mask: None,
            token_types: None,
            prefix: None,
            positions: PositionPolicy::Shift,
            layers: 0..usize::MAX,
        }
    }

    /// Sets the padding mask `[b, s]` (`true` = padding).
    ///
    /// # Shapes
    /// - mask: `[b, s]`
    pub fn with_padding_mask(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.padding_mask = Some(mask);
        self
    }

    /// Sets segment ids `[b, s]`.
    ///
    /// # Shapes
    /// - types: `[b, s]`
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

    /// Runs only `layers` (see the field).
    pub fn with_layers(mut self, layers: Range<usize>) -> Self {
        self.layers = layers;
        self
    }

    /// `self.layers` within a model of `n` layers: `(start, end)`, checked.
    pub fn layer_range(&self, n: usize) -> Result<(usize, usize)> {
        let end = self.layers.end.min(n);
        if self.layers.start > end {
            return Err(TransformerError::Input(format!(
                "layer range {}..{} is empty or outside the model's {n} layers",
                self.layers.start, self.layers.end
            )));
        }
        Ok((self.layers.start, end))
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
///
/// The trait is object-safe: tasks, training, generation and evaluation take `&dyn Backbone<B>`
/// and ask for a family's extra capabilities with [`Backbone::as_encoder`] and
/// [`Backbone::as_decoder`]. A new model family implements this trait plus [`Encoder`] or
/// [`Decoder`] (or both) and nothing above `ptune-transformer` changes.
pub trait Backbone<B: Backend> {
    /// The family's name as HF's `model_type` spells it (`"bert"`, `"llama"`, …), for messages.
    fn family(&self) -> &'static str;

    /// Number of (frozen) parameters.
    fn num_params(&self) -> usize;

    /// This backbone as an encoder (pooling), if it is one.
    fn as_encoder(&self) -> Option<&dyn Encoder<B>> {
        None
    }

    /// This backbone as a decoder (LM head, KV cache), if it is one.
    fn as_decoder(&self) -> Option<&dyn Decoder<B>> {
        None
    }

    /// Shape facts (layers, heads, KV heads, widths, positions).
    fn dims(&self) -> BackboneDims;

    /// Token embeddings of ids.
    ///
    /// # Shapes
    /// - ids: `[b, s]` → `[b, s, d]`
    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3>;

    /// The vocabulary embedding matrix `[vocab, d]`.
    ///
    /// # Shapes
    /// - output: `[vocab, d]`
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

/// What an encoder adds to [`Backbone`]: its own pooling of a sequence into one vector.
pub trait Encoder<B: Backend>: Backbone<B> {
    /// HF's pooler (BERT: dense + tanh on the first position). `None` if the checkpoint has none.
    ///
    /// # Shapes
    /// - hidden: `[b, s, d]` → `[b, d]`
    fn pooler(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>>;
}

/// What a decoder adds to [`Backbone`]: a forward pass that reads and extends a [`KvCache`], an LM
/// head, and its end-of-sequence token.
pub trait Decoder<B: Backend>: Backbone<B> {
    /// Runs new tokens through the decoder, reading and extending `cache`.
    ///
    /// `input.padding_mask` covers only the new tokens; the cache remembers earlier ones. The
    /// prefix (if any) must be passed on every call; it is not cached.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → `[b, s, d]` (after the final norm)
    fn forward_cached(
        &self,
        input: BackboneInput<B>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>>;

    /// The LM head on hidden states.
    ///
    /// # Shapes
    /// - hidden: `[b, s, d]` → `[b, s, vocab]`
    fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3>;

    /// The LM head on chosen positions only: `positions` are flat indices `r * s + i` into
    /// `hidden` (row `r`, position `i`). Training and cloze scoring need a few positions of each
    /// row, and the head is the widest product of a small decoder.
    ///
    /// # Shapes
    /// - hidden: `[b, s, d]`, positions: `n` → `[n, vocab]`
    fn logits_at(&self, hidden: Tensor<B, 3>, positions: &[usize]) -> Tensor<B, 2> {
        let rows = rows_at(hidden, positions);
        let [n, d] = rows.dims();
        let logits = self.logits(rows.reshape([1, n, d]));
        let vocab = logits.dims()[2];
        logits.reshape([n, vocab])
    }

    /// Mean cross-entropy of the LM head's logits at chosen positions (as in
    /// [`logits_at`](Self::logits_at)) against one target id each, the training loss of the LM
    /// tasks. Implementations go through
    /// [`frozen::linear_cross_entropy`](crate::frozen::linear_cross_entropy), which never holds
    /// the `[n, vocab]` logits. Targets must be below the vocabulary size.
    ///
    /// # Shapes
    /// - hidden: `[b, s, d]`, positions and targets: `n` each → `[1]`
    fn loss_at(&self, hidden: Tensor<B, 3>, positions: &[usize], targets: &[usize])
        -> Tensor<B, 1>;

    /// The checkpoint's end-of-sequence token, if its config names one.
    fn eos_token_id(&self) -> Option<u32>;

    /// An empty cache for this decoder.
    fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.dims().num_layers)
    }

    /// Greedy decoding of one prompt with the KV cache: the `max_tokens` (or fewer, on `eos`) new
    /// ids.
    fn generate_greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        let dims = self.dims();
        check_ids(prompt, dims.vocab_size)?;
        if prompt.is_empty() {
            return Err(TransformerError::Input("empty prompt".into()));
        }
        let device = self.embedding_matrix().device();
        let mut cache = self.new_cache();
        let mut next_input: Vec<u32> = prompt.to_vec();
        let mut out = Vec::with_capacity(max_tokens.min(4096));
        for _ in 0..max_tokens {
            let n = next_input.len();
            let hidden = self.forward_cached(
                BackboneInput::new(self.embed(ids_tensor(&next_input, &device))),
                &mut cache,
            )?;
            let logits = self.logits(hidden.narrow(1, n - 1, 1)).reshape([dims.vocab_size]);
            let next = logits
                .argmax(0)
                .into_data()
                .iter::<i64>()
                .next()
                .ok_or_else(|| TransformerError::Input("empty logits".into()))?
                as u32;
            out.push(next);
            if Some(next) == eos {
                break;
            }
            next_input = vec![next];
        }
        Ok(out)
    }
}

/// One row of token ids as a `[1, n]` tensor.
///
/// # Shapes
/// - ids: `n` → `[1, n]`
pub fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, ids.len()]),
        device,
    )
}

/// Row or position indices as a `[n]` tensor (for `select`).
///
/// # Shapes
/// - index: `n` → `[n]`
pub fn index_tensor<B: Backend>(index: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(
        TensorData::new(index.iter().map(|&i| i as i64).collect::<Vec<_>>(), [index.len()]),
        device,
    )
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

/// The rows of `hidden` at flat indices `r * s + i` (row `r`, position `i`).
///
/// # Shapes
/// - hidden: `[b, s, d]`, positions: `n` → `[n, d]`
pub fn rows_at<B: Backend>(hidden: Tensor<B, 3>, positions: &[usize]) -> Tensor<B, 2> {
    let [b, s, d] = hidden.dims();
    let index = index_tensor(positions, &hidden.device());
    hidden.reshape([b * s, d]).select(0, index)
}

/// The [`Backbone`] methods of a type that wraps another backbone and changes only `forward`:
/// every other method calls the inner backbone, reached as `self` followed by the given tokens
/// (`.backbone`, `.as_dyn()`). The wrapper writes its own `forward`.
macro_rules! delegate_backbone {
    ($($inner:tt)+) => {
        fn family(&self) -> &'static str {
            self$($inner)+.family()
        }
        fn num_params(&self) -> usize {
            self$($inner)+.num_params()
        }
        fn as_encoder(&self) -> Option<&dyn $crate::input::Encoder<B>> {
            self$($inner)+.as_encoder()
        }
        fn as_decoder(&self) -> Option<&dyn $crate::input::Decoder<B>> {
            self$($inner)+.as_decoder()
        }
        fn dims(&self) -> $crate::config::BackboneDims {
            self$($inner)+.dims()
        }
        fn embed(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3> {
            self$($inner)+.embed(ids)
        }
        fn embedding_matrix(&self) -> Tensor<B, 2> {
            self$($inner)+.embedding_matrix()
        }
        fn key_values(
            &self,
            input: $crate::input::BackboneInput<B>,
        ) -> $crate::error::Result<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
            self$($inner)+.key_values(input)
        }
    };
}
pub(crate) use delegate_backbone;
