//! Llama-family decoder mirroring HF `LlamaForCausalLM` (transformers 4.57 `modeling_llama.py`):
//! RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU, tied or untied LM head, KV cache.
//! Qwen2 (`modeling_qwen2.py`, full attention) is the same network with q/k/v biases.

mod load;
mod rope;

pub use load::load_llama;
pub use rope::{inv_freq, rope_tables};

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::attention::{
    attention_bias, attention_mask, layer_bias, position_offsets, with_prefix, LayerPrefix,
};
use crate::cache::KvCache;
use crate::config::{BackboneDims, LlamaConfig, ModelConfig};
use crate::dense::{dense, project};
use crate::error::{Result, TransformerError};
use crate::frozen::{self, FrozenOps, NormKind};
use crate::input::{rows_at, Backbone, BackboneInput, Decoder};

/// HF `LlamaAttention` (biases where the config has them: Qwen2 `Qwen2Attention` has them on q/k/v).
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// `q_proj` `[d → heads·head_dim]`.
    pub q_proj: Linear<B>,
    /// `k_proj` `[d → kv_heads·head_dim]`.
    pub k_proj: Linear<B>,
    /// `v_proj` `[d → kv_heads·head_dim]`.
    pub v_proj: Linear<B>,
    /// `o_proj` `[heads·head_dim → d]`.
    pub o_proj: Linear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

/// HF `LlamaMLP`: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: Linear<B>,
    /// `up_proj`.
    pub up_proj: Linear<B>,
    /// `down_proj`.
    pub down_proj: Linear<B>,
}

/// HF `LlamaDecoderLayer` (pre-norm).
#[derive(Module, Debug)]
pub struct LlamaLayer<B: Backend> {
    /// `input_layernorm`.
    pub input_norm: RmsNorm<B>,
    /// `self_attn`.
    pub attention: LlamaAttention<B>,
    /// `post_attention_layernorm`.
    pub post_norm: RmsNorm<B>,
    /// `mlp`.
    pub mlp: LlamaMlp<B>,
}

/// HF `LlamaForCausalLM` without dropout.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding<B>,
    /// `model.layers`.
    pub layers: Vec<LlamaLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// The HF config.
    #[module(skip)]
    pub config: LlamaConfig,
    /// RoPE inverse frequencies (`head_dim / 2`), scaling applied ([`rope::inv_freq`]).
    #[module(skip)]
    pub inv_freq: Vec<f32>,
}

/// Concatenates two optional `[b, *]` padding masks (missing parts are "not padded").
///
/// # Shapes
/// - past: `[b, n_past]`, current: `[b, s]` → `[b, n_past + s]`
fn cat_padding<B: Backend>(
    past: Option<Tensor<B, 2, Bool>>,
    n_past: usize,
    current: Option<Tensor<B, 2, Bool>>,
    b: usize,
    s: usize,
    device: &B::Device,
) -> Option<Tensor<B, 2, Bool>> {
    if past.is_none() && current.is_none() {
        return None;
    }
    let none = |n: usize| {
        Tensor::<B, 2, Bool>::from_bool(TensorData::new(vec![false; b * n], [b, n]), device)
    };
    let past = past.unwrap_or_else(|| none(n_past));
    let current = current.unwrap_or_else(|| none(s));
    Some(if n_past == 0 { current } else { Tensor::cat(vec![past, current], 1) })
}

/// An RMSNorm through the fused frozen op.
///
/// # Shapes
/// - x: `[b, s, d]` → `[b, s, d]`
fn rms_norm<B: FrozenOps>(norm: &RmsNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    frozen::norm(x, norm.gamma.val(), None, norm.epsilon, NormKind::Rms)
}

impl<B: FrozenOps> LlamaAttention<B> {
    /// # Shapes
    /// - x: `[b, s, d]`, cos/sin: `[b, 1, s, head_dim]`, bias: `[b, 1, s, n_prefix + n_past + s]` → `[b, s, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        prefix: Option<&LayerPrefix<B>>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let hd = self.head_dim;
        let q = dense(&self.q_proj, x.clone()).reshape([b, s, self.num_heads, hd]).swap_dims(1, 2);
        let k =
            dense(&self.k_proj, x.clone()).reshape([b, s, self.num_kv_heads, hd]).swap_dims(1, 2);
        let v = dense(&self.v_proj, x).reshape([b, s, self.num_kv_heads, hd]).swap_dims(1, 2);
        let q = frozen::rope(q, cos, sin);
        let k = frozen::rope(k, cos, sin);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let (k, v) = with_prefix(k, v, prefix);
        let context =
            frozen::attention(q, k, v, bias).swap_dims(1, 2).reshape([b, s, self.num_heads * hd]);
        dense(&self.o_proj, context)
    }
}

impl<B: FrozenOps> LlamaLayer<B> {
    /// HF `LlamaDecoderLayer.forward`: pre-norm attention and MLP, each added to the residual.
    /// Appends this pass's keys and values to `cache`.
    ///
    /// # Shapes
    /// - x: `[b, s, d]`, cos/sin: `[b, 1, s, head_dim]`, bias: `[b, 1, s, n_prefix + n_past + s]`
    ///   → `[b, s, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        prefix: Option<&LayerPrefix<B>>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let h = self.attention.forward(
            rms_norm(&self.input_norm, x.clone()),
            cos,
            sin,
            prefix,
            cache,
            bias,
        );
        let x_attn = x + h;
        let m = &self.mlp;
        let normed = rms_norm(&self.post_norm, x_attn.clone());
        let gated = frozen::swiglu(dense(&m.gate_proj, normed.clone()), dense(&m.up_proj, normed));
        x_attn + dense(&m.down_proj, gated)
    }
}

impl<B: FrozenOps> Llama<B> {
    /// The decoder pass over `input.layers`, reading and extending `cache`.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → `[b, s, d]`
    fn run(&self, input: BackboneInput<B>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        let dims = self.dims();
        let [b, s] = input.validate(&dims)?;
        let (start, end) = input.layer_range(self.layers.len())?;
        if cache.layers.len() != dims.num_layers {
            return Err(TransformerError::Input(format!(
                "KV cache has {} layers, the model has {}",
                cache.layers.len(),
                dims.num_layers
            )));
        }
        let n_prefix = input.prefix_len();
        let n_past = cache.len;
        if n_past > 0 && cache.rows() != b {
            return Err(TransformerError::Input(format!(
                "KV cache holds {} rows, the input has {b}",
                cache.rows()
            )));
        }
        // Real tokens before each row's new ones: padded cache slots hold no position.
        let past: Vec<usize> =
            cache.padded_per_row().iter().map(|p| n_past.saturating_sub(*p)).collect();
        let offsets = position_offsets(
            input.positions,
            input.prefix.as_ref(),
            b,
            &past,
            s,
            dims.max_positions,
        )?;
        let device = input.embeds.device();
        let (cos, sin) = rope_tables::<B>(&self.inv_freq, &offsets, s, &device);
        let padding = cat_padding(cache.padding.take(), n_past, input.padding_mask, b, s, &device);
        let slot_mask = input.prefix.as_ref().and_then(|p| p.slot_mask(b, &device));
        let prefix_layers = input.prefix.map(|p| p.layers).unwrap_or_default();
        let bias = attention_bias(
            attention_mask(b, s, n_prefix, n_past, padding.clone(), slot_mask, true, &device),
            input.embeds.dtype(),
        );
        let mut x = input.embeds;
        for (i, layer) in self.layers.iter().enumerate().take(end).skip(start) {
            let prefix = prefix_layers.get(i).and_then(Option::as_ref);
            let bias = layer_bias(bias.as_ref(), prefix.is_some(), n_prefix);
            if let Some(slot) = cache.layers.get_mut(i) {
                x = layer.forward(x, &cos, &sin, prefix, slot, bias);
            }
        }
        cache.padding = padding;
        cache.len += s;
        if end < self.layers.len() {
            return Ok(x);
        }
        Ok(rms_norm(&self.norm, x))
    }
}

impl<B: FrozenOps> Decoder<B> for Llama<B> {
    fn forward_cached(
        &self,
        input: BackboneInput<B>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        if input.layer_range(self.layers.len())? != (0, self.layers.len()) {
            return Err(TransformerError::Input(
                "a cached forward runs every layer: a layer range is for `Backbone::forward`"
                    .into(),
            ));
        }
        self.run(input, cache)
    }

    /// The LM head, tied to the embeddings when the checkpoint has no `lm_head`.
    fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => dense(head, hidden),
            None => project(hidden, self.embed_tokens.weight.val().transpose(), None),
        }
    }

    fn loss_at(
        &self,
        hidden: Tensor<B, 3>,
        positions: &[usize],
        targets: &[usize],
    ) -> Tensor<B, 1> {
        let rows = rows_at(hidden, positions);
        match &self.lm_head {
            Some(head) => frozen::linear_cross_entropy(
                rows,
                head.weight.val(),
                head.bias.as_ref().map(|b| b.val()),
                targets,
            ),
            None => frozen::linear_cross_entropy(
                rows,
                self.embed_tokens.weight.val().transpose(),
                None,
                targets,
            ),
        }
    }

    fn eos_token_id(&self) -> Option<u32> {
        self.config.eos_token_id.map(|e| e as u32)
    }
}

impl<B: FrozenOps> Backbone<B> for Llama<B> {
    fn family(&self) -> &'static str {
        "llama"
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }

    fn dims(&self) -> BackboneDims {
        ModelConfig::Llama(self.config.clone()).dims()
    }

    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(ids)
    }

    fn embedding_matrix(&self) -> Tensor<B, 2> {
        self.embed_tokens.weight.val()
    }

    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>> {
        self.run(input, &mut self.new_cache())
    }

    fn key_values(&self, input: BackboneInput<B>) -> Result<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
        let mut cache = self.new_cache();
        self.forward_cached(input, &mut cache)?;
        cache.into_layers()
    }

    fn as_decoder(&self) -> Option<&dyn Decoder<B>> {
        Some(self)
    }
}
