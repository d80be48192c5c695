//! BERT-family encoder mirroring HF `BertModel` (transformers 4.57 `modeling_bert.py`):
//! word + position + token-type embeddings → LayerNorm, post-LN blocks with exact GELU, pooler.
//! RoBERTa and XLM-R (`modeling_roberta.py`, `modeling_xlm_roberta.py`) are the same network with
//! positions counted from `pad_token_id + 1`.

mod load;

pub use load::load_bert;

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::attention::{
    attention_bias, attention_mask, layer_bias, position_offsets, with_prefix, LayerPrefix,
};
use crate::config::{BackboneDims, BertConfig, ModelConfig};
use crate::dense::dense;
use crate::error::Result;
use crate::frozen::{self, FrozenOps, NormKind};
use crate::input::{Backbone, BackboneInput, Encoder};

/// HF `BertEmbeddings`.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// `word_embeddings` `[vocab, d]`.
    pub word: Embedding<B>,
    /// `position_embeddings` `[max_positions, d]`.
    pub position: Embedding<B>,
    /// `token_type_embeddings` `[type_vocab, d]`.
    pub token_type: Embedding<B>,
    /// `LayerNorm`.
    pub norm: LayerNorm<B>,
}

/// HF `BertSelfAttention` + `BertSelfOutput`.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// `attention.self.query`.
    pub query: Linear<B>,
    /// `attention.self.key`.
    pub key: Linear<B>,
    /// `attention.self.value`.
    pub value: Linear<B>,
    /// `attention.output.dense`.
    pub output: Linear<B>,
    /// `attention.output.LayerNorm`.
    pub norm: LayerNorm<B>,
    /// Attention heads.
    pub num_heads: usize,
}

/// HF `BertLayer`: attention, then `intermediate` (dense + GELU) and `output` (dense + LayerNorm).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Self-attention block.
    pub attention: BertAttention<B>,
    /// `intermediate.dense`.
    pub intermediate: Linear<B>,
    /// `output.dense`.
    pub output: Linear<B>,
    /// `output.LayerNorm`.
    pub norm: LayerNorm<B>,
}

/// HF `BertModel` without dropout (a frozen backbone runs in eval mode).
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// Embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// Encoder layers.
    pub layers: Vec<BertLayer<B>>,
    /// `pooler.dense` (first token → dense → tanh), absent in some checkpoints.
    pub pooler: Option<Linear<B>>,
    /// The HF config.
    #[module(skip)]
    pub config: BertConfig,
}

/// A BERT LayerNorm through the fused frozen op.
///
/// # Shapes
/// - x: `[b, s, d]` → `[b, s, d]`
fn layer_norm<B: FrozenOps>(norm: &LayerNorm<B>, eps: f64, x: Tensor<B, 3>) -> Tensor<B, 3> {
    frozen::norm(x, norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()), eps, NormKind::Layer)
}

impl<B: FrozenOps> BertAttention<B> {
    /// # Shapes
    /// - x: `[b, s, d]`, bias: `[b, 1, s, n_prefix + s]` → `[b, s, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        prefix: Option<&LayerPrefix<B>>,
        bias: Option<Tensor<B, 4>>,
        eps: f64,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, d] = x.dims();
        let heads =
            |t: Tensor<B, 3>| t.reshape([b, s, self.num_heads, d / self.num_heads]).swap_dims(1, 2);
        let q = heads(dense(&self.query, x.clone()));
        let (key, value) =
            (heads(dense(&self.key, x.clone())), heads(dense(&self.value, x.clone())));
        let (k, v) = with_prefix(key.clone(), value.clone(), prefix);
        let context = frozen::attention(q, k, v, bias).swap_dims(1, 2).reshape([b, s, d]);
        (layer_norm(&self.norm, eps, dense(&self.output, context) + x), key, value)
    }
}

impl<B: FrozenOps> BertLayer<B> {
    /// Returns the layer output and the layer's own (unprefixed) keys and values.
    ///
    /// # Shapes
    /// - x: `[b, s, d]`, bias: `[b, 1, s, n_prefix + s]` → `[b, s, d]`, keys/values
    ///   `[b, heads, s, head_dim]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        prefix: Option<&LayerPrefix<B>>,
        bias: Option<Tensor<B, 4>>,
        eps: f64,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let (attended, key, value) = self.attention.forward(x, prefix, bias, eps);
        // HF's exact GELU, `0.5·x·(1 + erf(x/√2))`, with its exact derivative.
        let hidden = frozen::gelu(dense(&self.intermediate, attended.clone()));
        (layer_norm(&self.norm, eps, dense(&self.output, hidden) + attended), key, value)
    }
}

impl<B: FrozenOps> Encoder<B> for Bert<B> {
    /// HF `BertPooler`: dense + tanh on the first position.
    fn pooler(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        let [b, _, d] = hidden.dims();
        let first = hidden.narrow(1, 0, 1).reshape([b, d]);
        Some(pooler.forward(first).tanh())
    }
}

impl<B: FrozenOps> Backbone<B> for Bert<B> {
    fn family(&self) -> &'static str {
        "bert"
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }

    fn as_encoder(&self) -> Option<&dyn Encoder<B>> {
        Some(self)
    }

    fn dims(&self) -> BackboneDims {
        ModelConfig::Bert(self.config.clone()).dims()
    }

    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embeddings.word.forward(ids)
    }

    fn embedding_matrix(&self) -> Tensor<B, 2> {
        self.embeddings.word.weight.val()
    }

    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>> {
        Ok(self.run(input, false)?.0)
    }

    fn key_values(&self, input: BackboneInput<B>) -> Result<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
        Ok(self.run(input, true)?.1)
    }
}

impl<B: FrozenOps> Bert<B> {
    /// The encoder pass; with `collect`, also every layer's keys and values.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        input: BackboneInput<B>,
        collect: bool,
    ) -> Result<(Tensor<B, 3>, Vec<(Tensor<B, 4>, Tensor<B, 4>)>)> {
        let dims = self.dims();
        let [b, s] = input.validate(&dims)?;
        let n_prefix = input.prefix_len();
        let offsets = position_offsets(
            input.positions,
            input.prefix.as_ref(),
            b,
            &[],
            s,
            dims.max_positions,
        )?;
        let (start, end) = input.layer_range(self.layers.len())?;
        let device = input.embeds.device();
        let eps = self.config.layer_norm_eps;
        let mut x = if start == 0 {
            // RoBERTa / XLM-R count from `pad_token_id + 1` (HF `create_position_ids_from_input_ids`).
            let first = self.config.position_offset();
            let positions: Vec<i64> = offsets
                .iter()
                .flat_map(|&o| (first + o..first + o + s).map(|p| p as i64))
                .collect();
            let positions =
                Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [b, s]), &device);
            let types =
                input.token_types.unwrap_or_else(|| Tensor::<B, 2, Int>::zeros([b, s], &device));
            let e = &self.embeddings;
            let x = input.embeds + e.position.forward(positions) + e.token_type.forward(types);
            layer_norm(&e.norm, eps, x)
        } else {
            input.embeds
        };
        let slot_mask = input.prefix.as_ref().and_then(|p| p.slot_mask(b, &device));
        let prefix_layers = input.prefix.map(|p| p.layers).unwrap_or_default();
        let mask = attention_mask(b, s, n_prefix, 0, input.padding_mask, slot_mask, false, &device);
        let bias = attention_bias(mask, x.dtype());
        let mut key_values = Vec::new();
        for (i, layer) in self.layers.iter().enumerate().take(end).skip(start) {
            let prefix = prefix_layers.get(i).and_then(Option::as_ref);
            let bias = layer_bias(bias.as_ref(), prefix.is_some(), n_prefix);
            let (out, key, value) = layer.forward(x, prefix, bias, eps);
            x = out;
            if collect {
                key_values.push((key, value));
            }
        }
        Ok((x, key_values))
    }
}
