//! BERT-family encoder mirroring HF `BertModel` (transformers 4.57 `modeling_bert.py`):
//! word + position + token-type embeddings → LayerNorm, post-LN blocks with exact GELU, pooler.

mod load;

pub use load::load_bert;

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::attention::{
    attention_mask, position_offset, scaled_dot_product, with_prefix, LayerPrefix,
};
use crate::config::{BackboneDims, BertConfig, ModelConfig};
use crate::error::Result;
use crate::input::{Backbone, BackboneInput};

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

impl<B: Backend> BertAttention<B> {
    /// # Shapes
    /// - x: `[b, s, d]`, mask: `[b, 1, s, n_prefix + s]` → `[b, s, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        prefix: Option<&LayerPrefix<B>>,
        mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let heads =
            |t: Tensor<B, 3>| t.reshape([b, s, self.num_heads, d / self.num_heads]).swap_dims(1, 2);
        let q = heads(self.query.forward(x.clone()));
        let (k, v) = with_prefix(
            heads(self.key.forward(x.clone())),
            heads(self.value.forward(x.clone())),
            prefix,
        );
        let context = scaled_dot_product(q, k, v, mask).swap_dims(1, 2).reshape([b, s, d]);
        self.norm.forward(self.output.forward(context) + x)
    }
}

impl<B: Backend> BertLayer<B> {
    /// # Shapes
    /// - x: `[b, s, d]` → `[b, s, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        prefix: Option<&LayerPrefix<B>>,
        mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Tensor<B, 3> {
        let attended = self.attention.forward(x, prefix, mask);
        let hidden = gelu(self.intermediate.forward(attended.clone()));
        self.norm.forward(self.output.forward(hidden) + attended)
    }
}

impl<B: Backend> Bert<B> {
    /// HF `BertPooler`: dense + tanh on the first position. `None` if the checkpoint has no pooler.
    ///
    /// # Shapes
    /// - hidden: `[b, s, d]` → `[b, d]`
    pub fn pool(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        let [b, _, d] = hidden.dims();
        let first = hidden.narrow(1, 0, 1).reshape([b, d]);
        Some(pooler.forward(first).tanh())
    }
}

impl<B: Backend> Backbone<B> for Bert<B> {
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
        let dims = self.dims();
        let [b, s] = input.validate(&dims)?;
        let n_prefix = input.prefix_len();
        let offset = position_offset(input.positions, n_prefix, 0, s, dims.max_positions)?;
        let device = input.embeds.device();
        let positions = Tensor::<B, 1, Int>::arange(offset as i64..(offset + s) as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let types =
            input.token_types.unwrap_or_else(|| Tensor::<B, 2, Int>::zeros([b, s], &device));
        let e = &self.embeddings;
        let x = input.embeds + e.position.forward(positions) + e.token_type.forward(types);
        let mut x = e.norm.forward(x);
        let (prefix_layers, slot_mask) = match input.prefix {
            Some(p) => (p.layers, p.slot_mask),
            None => (Vec::new(), None),
        };
        let mask = attention_mask(b, s, n_prefix, 0, input.padding_mask, slot_mask, false, &device);
        for (i, layer) in self.layers.iter().enumerate() {
            let prefix = prefix_layers.get(i).and_then(Option::as_ref);
            x = layer.forward(x, prefix, mask.clone());
        }
        Ok(x)
    }
}
