//! The attention pieces both families share: per-layer prefix keys/values ([`PrefixKv`]), the one
//! place that builds attention masks (padding + prefix slots + causal with `s_q != s_k`) and their
//! additive bias. The attention itself is [`crate::frozen::attention`].

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::config::BackboneDims;
use crate::error::{Result, TransformerError};

/// Key and value prefix of one layer, each `[b | 1, n_kv_heads, n_prefix, head_dim]`. A batch
/// dimension of 1 is broadcast over the batch.
#[derive(Debug, Clone)]
pub struct LayerPrefix<B: Backend> {
    /// Prefix keys (not rotated by RoPE).
    pub key: Tensor<B, 4>,
    /// Prefix values.
    pub value: Tensor<B, 4>,
}

/// Prefix keys/values for every layer (`None` for layers without a prefix), all with the same
/// number of slots `n`, plus optional per-row lengths for batches that mix adapters of different
/// lengths: row `r` uses slots `0..row_lengths[r]`; later slots are masked like padding, and under
/// [`PositionPolicy::Shift`](crate::PositionPolicy) its real tokens start at `row_lengths[r]`.
#[derive(Debug, Clone)]
pub struct PrefixKv<B: Backend> {
    /// One entry per backbone layer.
    pub layers: Vec<Option<LayerPrefix<B>>>,
    /// Slots used by each row (`None`: every row uses all `n`).
    pub row_lengths: Option<Vec<usize>>,
}

impl<B: Backend> PrefixKv<B> {
    /// Number of prefix slots (0 when no layer has a prefix).
    pub fn len(&self) -> usize {
        self.layers.iter().flatten().map(|p| p.key.dims()[2]).next().unwrap_or(0)
    }

    /// Whether no layer has a prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the layer count and every shape against the backbone and the batch size.
    pub fn validate(&self, dims: &BackboneDims, batch: usize) -> Result<()> {
        if self.layers.len() != dims.num_layers {
            return Err(TransformerError::Input(format!(
                "prefix has {} layers, the model has {}",
                self.layers.len(),
                dims.num_layers
            )));
        }
        let n = self.len();
        for (layer, p) in self.layers.iter().enumerate() {
            let Some(p) = p else { continue };
            for (what, t) in [("key", &p.key), ("value", &p.value)] {
                let [b, h, s, d] = t.dims();
                if (b != batch && b != 1) || h != dims.num_kv_heads || s != n || d != dims.head_dim
                {
                    return Err(TransformerError::Input(format!(
                        "prefix {what} of layer {layer} has shape [{b}, {h}, {s}, {d}], expected \
                         [{batch} or 1, {}, {n}, {}]",
                        dims.num_kv_heads, dims.head_dim
                    )));
                }
            }
        }
        if let Some(lengths) = &self.row_lengths {
            if lengths.len() != batch || lengths.iter().any(|&l| l > n) {
                return Err(TransformerError::Input(format!(
                    "prefix row lengths {lengths:?} must be {batch} values of at most {n}"
                )));
            }
        }
        Ok(())
    }

    /// Slots used by row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.row_lengths.as_ref().and_then(|l| l.get(r).copied()).unwrap_or_else(|| self.len())
    }

    /// `[b, n]` mask of unused slots (`true` = unused), or `None` when every row uses every slot.
    ///
    /// # Shapes
    /// - output: `[batch, n]`
    pub fn slot_mask(&self, batch: usize, device: &B::Device) -> Option<Tensor<B, 2, Bool>> {
        let lengths = self.row_lengths.as_ref()?;
        let n = self.len();
        let values: Vec<bool> =
            (0..batch).flat_map(|r| (0..n).map(move |j| j >= lengths[r])).collect();
        Some(Tensor::from_bool(TensorData::new(values, [batch, n]), device))
    }
}

/// Builds the boolean attention mask `[b, 1, s_q, n_prefix + n_past + s_q]` (`true` = masked), or
/// `None` when nothing is masked.
///
/// Keys are ordered `[prefix slots | cached tokens | current tokens]`. Prefix slots are visible to
/// every query unless `slot_mask` hides them; `key_padding` (`[b, n_past + s_q]`, `true` = padding)
/// hides padded tokens; with `causal`, query `i` (absolute token index `n_past + i`) sees real keys
/// up to and including itself.
///
/// # Shapes
/// - key_padding: `[b, n_past + s_q]`, slot_mask: `[b, n_prefix]` → `[b, 1, s_q, n_prefix + n_past + s_q]`
#[allow(clippy::too_many_arguments)]
pub fn attention_mask<B: Backend>(
    batch: usize,
    s_q: usize,
    n_prefix: usize,
    n_past: usize,
    key_padding: Option<Tensor<B, 2, Bool>>,
    slot_mask: Option<Tensor<B, 2, Bool>>,
    causal: bool,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    let s_k = n_prefix + n_past + s_q;
    let causal_mask = causal.then(|| {
        let values: Vec<bool> = (0..s_q)
            .flat_map(|i| (0..s_k).map(move |j| j >= n_prefix && j - n_prefix > n_past + i))
            .collect();
        Tensor::<B, 2, Bool>::from_bool(TensorData::new(values, [s_q, s_k]), device)
            .reshape([1, 1, s_q, s_k])
            .expand([batch, 1, s_q, s_k])
    });
    let padding = match (key_padding, slot_mask) {
        (None, None) => None,
        (tokens, slots) => {
            let slots = slots.unwrap_or_else(|| {
                Tensor::<B, 2, Bool>::from_bool(
                    TensorData::new(vec![false; batch * n_prefix], [batch, n_prefix]),
                    device,
                )
            });
            let tokens = tokens.unwrap_or_else(|| {
                Tensor::<B, 2, Bool>::from_bool(
                    TensorData::new(vec![false; batch * (s_k - n_prefix)], [batch, s_k - n_prefix]),
                    device,
                )
            });
            Some(
                Tensor::cat(vec![slots, tokens], 1)
                    .reshape([batch, 1, 1, s_k])
                    .expand([batch, 1, s_q, s_k]),
            )
        }
    };
    match (causal_mask, padding) {
        (Some(c), Some(p)) => Some(c.bool_or(p)),
        (c, p) => c.or(p),
    }
}

/// The additive attention bias of a boolean mask (`true` = masked): 0 where visible, the most
/// negative f32 where masked, as HF adds its extended attention mask to the scores. Built once
/// per forward and shared by every layer.
///
/// # Shapes
/// - mask: `[b, 1, s_q, s_k]` → `[b, 1, s_q, s_k]`, of `dtype` (the activations' own: the device's
///   default may differ, e.g. when ndarray f64 and f32 share the CPU device)
pub fn attention_bias<B: Backend>(
    mask: Option<Tensor<B, 4, Bool>>,
    dtype: burn::tensor::DType,
) -> Option<Tensor<B, 4>> {
    let mask = mask?;
    // 1 → the most negative f32, 0 → 0 (a product rather than a fill into fresh zeros: the mask is
    // an expanded view, and filling through it is not reliable on every backend).
    Some(mask.float().cast(dtype).mul_scalar(f32::MIN).add_scalar(0.0))
}

/// The attention bias of one layer: layers without a prefix (when only some layers have one)
/// drop the prefix columns, since their keys are only the real tokens.
///
/// # Shapes
/// - bias: `[b, 1, s_q, n_prefix + s_k]` → same, or `[b, 1, s_q, s_k]` without a prefix
pub fn layer_bias<B: Backend>(
    bias: Option<&Tensor<B, 4>>,
    has_prefix: bool,
    n_prefix: usize,
) -> Option<Tensor<B, 4>> {
    let bias = bias?.clone();
    if has_prefix || n_prefix == 0 {
        return Some(bias);
    }
    let s_k = bias.dims()[3];
    Some(bias.narrow(3, n_prefix, s_k - n_prefix))
}

/// Concatenates a layer's prefix (broadcast over the batch) before its real keys/values.
///
/// # Shapes
/// - key, value: `[b, n_kv_heads, s, head_dim]` → `[b, n_kv_heads, n_prefix + s, head_dim]`
pub fn with_prefix<B: Backend>(
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    prefix: Option<&LayerPrefix<B>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let Some(p) = prefix else { return (key, value) };
    let [b, h, _, d] = key.dims();
    let n = p.key.dims()[2];
    let pk = p.key.clone().expand([b, h, n, d]);
    let pv = p.value.clone().expand([b, h, n, d]);
    (Tensor::cat(vec![pk, key], 2), Tensor::cat(vec![pv, value], 2))
}

/// Position of each row's first new token (`[b]`), checked against the position table: its prefix
/// shift plus `past[r]`, the real tokens the row has seen before (missing rows: none).
pub fn position_offsets<B: Backend>(
    policy: crate::config::PositionPolicy,
    prefix: Option<&PrefixKv<B>>,
    batch: usize,
    past: &[usize],
    tokens: usize,
    max_positions: usize,
) -> Result<Vec<usize>> {
    (0..batch)
        .map(|r| {
            let shift = match (policy, prefix) {
                (crate::config::PositionPolicy::Shift, Some(p)) => p.row_len(r),
                _ => 0,
            };
            let offset = shift + past.get(r).copied().unwrap_or(0);
            if offset + tokens > max_positions {
                return Err(TransformerError::TooManyPositions {
                    prefix: offset,
                    tokens,
                    max: max_positions,
                });
            }
            Ok(offset)
        })
        .collect()
}
