//! Fused ops of the frozen backbone, as a Burn backend extension.
//!
//! [`FrozenOps`] is a trait on the backend (the pattern of Burn's own custom-kernel examples): each
//! op has a forward for inference, a forward that also returns what its backward needs, and a
//! hand-written backward. Every method has a default composed from Burn primitives, so any backend
//! gets the ops from a one-line `impl FrozenOps for MyBackend {}`; a backend overrides the methods
//! where a fused kernel is measured to pay (burn-flex, `flex.rs`). The autodiff backend implements
//! the trait once for every inner backend (`autodiff.rs`): its forward runs the inner backend's op
//! and records ONE graph node whose backward calls the inner backend's backward, instead of the
//! dozens of tracked nodes the composed form would record (softmax, LayerNorm and GELU are ~45
//! nodes a layer), and without recomputing `exp` in the backward.
//!
//! The ops treat their weights (norm scales and shifts, RoPE tables, the attention bias) as
//! constants: frozen weights get no gradients and no weight-gradient work. When a weight does
//! require gradients (full fine-tuning), the autodiff impl falls back to the composed form, which
//! Burn differentiates as usual.
//!
//! The model code calls the free functions of this module ([`linear`], [`norm`], [`gelu`],
//! [`swiglu`], [`attention`], [`rope`]); nothing else knows which backend it runs on.

mod autodiff;
mod backends;
pub mod composed;
#[cfg(feature = "flex")]
mod fastmath;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gemm;

/// The products of the flex kernels, recorded and timed alone: what `ptune-bench` measures its
/// product-bound limit with.
#[cfg(feature = "flex")]
pub mod products {
    pub use super::gemm::{record_products, recorded_products, time_product, ProductShape};
}

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// What a norm's backward needs: the normalized input `x̂` `[n, d]` and `1/σ` per row `[n, 1]`.
#[derive(Debug, Clone)]
pub struct NormSaved<B: Backend> {
    /// `x̂ = (x − μ)·rstd` (LayerNorm) or `x·rstd` (RMSNorm), `[n, d]`.
    pub xhat: FloatTensor<B>,
    /// `1/sqrt(var + eps)` (LayerNorm) or `1/sqrt(mean(x²) + eps)` (RMSNorm), `[n, 1]`.
    pub rstd: FloatTensor<B>,
}

/// Which normalization [`FrozenOps::frozen_norm`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `(x − mean)/sqrt(var + eps)·γ + β` (HF `nn.LayerNorm`, biased variance).
    Layer,
    /// `x/sqrt(mean(x²) + eps)·γ` (HF `LlamaRMSNorm`).
    Rms,
}

/// The fused frozen-backbone ops of a backend. All methods have composed defaults
/// ([`composed`]); see the module docs.
pub trait FrozenOps: Backend {
    /// A frozen dense layer, `x·weight + bias`.
    ///
    /// # Shapes
    /// - x: `[n, d_in]`, weight: `[d_in, d_out]`, bias: `[d_out]` → `[n, d_out]`
    fn frozen_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        composed::linear::<Self>(x, weight, bias)
    }

    /// Gradient of the dense layer's input, `grad·weightᵀ` (the weight and bias get none).
    ///
    /// # Shapes
    /// - grad: `[n, d_out]`, weight: `[d_in, d_out]` → `[n, d_in]`
    fn frozen_linear_backward(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::linear_backward::<Self>(grad, weight)
    }

    /// Normalizes each row of `x` and scales (and shifts) it.
    ///
    /// # Shapes
    /// - x: `[n, d]`, gamma: `[d]`, beta: `[d]` (LayerNorm only) → `[n, d]`
    fn frozen_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
        kind: NormKind,
    ) -> FloatTensor<Self> {
        Self::frozen_norm_train(x, gamma, beta, eps, kind).0
    }

    /// [`frozen_norm`](Self::frozen_norm) plus what its backward needs.
    ///
    /// # Shapes
    /// - x: `[.., d]`, gamma/beta: `[d]` → (output like x, saved `x̂` like x and `1/σ` `[.., 1]`)
    fn frozen_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
        kind: NormKind,
    ) -> (FloatTensor<Self>, NormSaved<Self>) {
        composed::norm_train::<Self>(x, gamma, beta, eps, kind)
    }

    /// Gradient of the norm's input: `rstd·(g·γ − mean(g·γ) − x̂·mean(g·γ·x̂))` (LayerNorm; RMSNorm
    /// without the first mean).
    ///
    /// # Shapes
    /// - grad: `[n, d]`, gamma: `[d]` → `[n, d]`
    fn frozen_norm_backward(
        grad: FloatTensor<Self>,
        saved: NormSaved<Self>,
        gamma: FloatTensor<Self>,
        kind: NormKind,
    ) -> FloatTensor<Self> {
        composed::norm_backward::<Self>(grad, saved, gamma, kind)
    }

    /// HF's exact GELU, `0.5·x·(1 + erf(x/√2))`.
    ///
    /// # Shapes
    /// - x: `[n]` → `[n]`
    fn frozen_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::gelu::<Self>(x)
    }

    /// Gradient of the GELU's input: `g·(Φ(x) + x·φ(x))`.
    ///
    /// # Shapes
    /// - grad, x: `[n]` → `[n]`
    fn frozen_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::gelu_backward::<Self>(grad, x)
    }

    /// SwiGLU's gate: `silu(gate)·up`.
    ///
    /// # Shapes
    /// - gate, up: `[n]` → `[n]`
    fn frozen_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::swiglu::<Self>(gate, up)
    }

    /// Gradients of SwiGLU's inputs `(d gate, d up)`.
    ///
    /// # Shapes
    /// - grad, gate, up: `[n]` → `([n], [n])`
    fn frozen_swiglu_backward(
        grad: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::swiglu_backward::<Self>(grad, gate, up)
    }

    /// Scaled dot-product attention with grouped-query heads and an additive bias:
    /// `softmax(q·kᵀ·scale + bias)·v`, softmax in f32, each group of `n_heads / n_kv_heads` query
    /// heads reading one key/value head (never materialised `n_heads` times by the fused kernels).
    ///
    /// # Shapes
    /// - q: `[b, n_heads, s_q, head_dim]`
    /// - k, v: `[b, n_kv_heads, s_k, head_dim]`
    /// - bias: `[b, 1, s_q, s_k]` (0 where visible, `f32::MIN` where masked)
    /// - output: `[b, n_heads, s_q, head_dim]`
    fn frozen_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::frozen_attention_train(q, k, v, bias, scale).0
    }

    /// [`frozen_attention`](Self::frozen_attention) plus the attention probabilities
    /// `[b, n_heads, s_q, s_k]`, all its backward needs besides `q`, `k` and `v`.
    ///
    /// # Shapes
    /// - q: `[b, n_heads, s_q, hd]`, k/v: `[b, n_kv, s_k, hd]` → (`[b, n_heads, s_q, hd]`, p `[b, n_heads, s_q, s_k]`)
    fn frozen_attention_train(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::attention_train::<Self>(q, k, v, bias, scale)
    }

    /// Gradients `(dq, dk, dv)` from the saved probabilities `p`:
    /// `dv = pᵀ·g`, `ds = p ⊙ (g·vᵀ − rowsum(p ⊙ g·vᵀ))`, `dq = ds·k·scale`, `dk = dsᵀ·q·scale`
    /// (key/value gradients summed over each head group). `need` says which of the three are
    /// wanted; the others come back as `None` without being computed.
    ///
    /// # Shapes
    /// - grad: `[b, n_heads, s_q, hd]`, p: `[b, n_heads, s_q, s_k]` → dq like q, dk/dv like k/v
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn frozen_attention_backward(
        grad: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        need: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        composed::attention_backward::<Self>(grad, q, k, v, p, scale, need)
    }

    /// Mean cross-entropy of the rows of `logits` against `labels` (one class index per row).
    ///
    /// # Shapes
    /// - logits: `[n, c]`, labels: `n` indices → `[1]`
    fn frozen_cross_entropy(logits: FloatTensor<Self>, labels: &[usize]) -> FloatTensor<Self> {
        Self::frozen_cross_entropy_train(logits, labels).0
    }

    /// [`frozen_cross_entropy`](Self::frozen_cross_entropy) plus each row's `logsumexp`, all
    /// its backward needs besides the logits.
    ///
    /// # Shapes
    /// - logits: `[n, c]`, labels: `n` indices → (loss `[1]`, logsumexp `[n, 1]`)
    fn frozen_cross_entropy_train(
        logits: FloatTensor<Self>,
        labels: &[usize],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::cross_entropy_train::<Self>(logits, labels)
    }

    /// Gradient of the logits: `(softmax(logits) − onehot(labels))·grad/n`.
    ///
    /// # Shapes
    /// - grad: `[1]`, logits: `[n, c]`, lse: `[n, 1]` → `[n, c]`
    fn frozen_cross_entropy_backward(
        grad: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        labels: &[usize],
    ) -> FloatTensor<Self> {
        composed::cross_entropy_backward::<Self>(grad, logits, lse, labels)
    }

    /// Mean cross-entropy of `x·weight + bias` against `labels` and its gradient with respect to
    /// `x`, without ever holding the whole
    /// `[n, c]` logits: the rows go through in chunks of about [`LOSS_CHUNK_FLOATS`] logits each,
    /// and each chunk's input gradient `(softmax − onehot)·weightᵀ / n` is
    /// computed while its logits exist (the gradient of the mean loss itself; the autodiff node
    /// scales it by the incoming gradient). The LM head of a large vocabulary is where a decoder's
    /// training step holds its largest tensors; this keeps one chunk of them.
    ///
    /// # Shapes
    /// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` indices below `c`
    ///   → (loss `[1]`, `d loss / d x` `[n, d]`)
    fn frozen_linear_cross_entropy_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        labels: &[usize],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::linear_cross_entropy_train::<Self>(x, weight, bias, labels)
    }

    /// The loss of [`frozen_linear_cross_entropy_train`](Self::frozen_linear_cross_entropy_train)
    /// alone, as one graph op (on autodiff, a node that keeps only the input gradient).
    ///
    /// # Shapes
    /// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` indices → `[1]`
    fn frozen_linear_cross_entropy(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        labels: &[usize],
    ) -> FloatTensor<Self> {
        composed::linear_cross_entropy::<Self>(x, weight, bias, labels)
    }

    /// Rotary embedding in the rotate-half layout: `x·cos + rotate_half(x)·sin`.
    ///
    /// # Shapes
    /// - x: `[b, heads, s, head_dim]`, cos/sin: `[b, 1, s, head_dim]` → `[b, heads, s, head_dim]`
    fn frozen_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::rope::<Self>(x, cos, sin, false)
    }

    /// Gradient of the rotary embedding's input: the inverse rotation of the gradient,
    /// `g·cos − rotate_half(g·sin)`… written as `g·cos + rotate_halfᵀ(g·sin)`.
    ///
    /// # Shapes
    /// - grad: `[b, heads, s, head_dim]`, cos/sin: `[b, 1, s, head_dim]` → like grad
    fn frozen_rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::rope::<Self>(grad, cos, sin, true)
    }
}

pub(crate) fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub(crate) fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// A frozen dense layer over rows, `x·weight (+ bias)`.
///
/// # Shapes
/// - x: `[n, d_in]`, weight: `[d_in, d_out]`, bias: `[d_out]` → `[n, d_out]`
pub fn linear<B: FrozenOps>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    tensor(B::frozen_linear(prim(x), prim(weight), bias.map(prim)))
}

/// How many logits [`FrozenOps::frozen_linear_cross_entropy`] holds at a time (16 MiB of f32):
/// a few hundred rows of a 50k vocabulary, enough for the products to run at full speed.
pub const LOSS_CHUNK_FLOATS: usize = 1 << 22;

/// Mean cross-entropy of `x·weight + bias` against class indices, as one op that never holds the
/// `[n, c]` logits (see [`FrozenOps::frozen_linear_cross_entropy`]); the same value and gradient as
/// [`cross_entropy`] of [`linear`]. Labels must be below `c`.
///
/// # Shapes
/// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` indices → `[1]`
pub fn linear_cross_entropy<B: FrozenOps>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    labels: &[usize],
) -> Tensor<B, 1> {
    tensor(B::frozen_linear_cross_entropy(prim(x), prim(weight), bias.map(prim), labels))
}

/// Mean cross-entropy of `logits` against class indices (PyTorch's `F.cross_entropy`, mean
/// reduction), as one op: the backward keeps only the logits and one `logsumexp` per row, where
/// the composed `log_softmax` keeps several tensors of the logits' size (for an LM head, rows ×
/// vocabulary each). Labels must be below `c` (checked by the callers that read them from data).
///
/// # Shapes
/// - logits: `[n, c]`, labels: `n` indices → `[1]`
pub fn cross_entropy<B: FrozenOps>(logits: Tensor<B, 2>, labels: &[usize]) -> Tensor<B, 1> {
    tensor(B::frozen_cross_entropy(prim(logits), labels))
}

/// LayerNorm or RMSNorm over the last dimension.
///
/// # Shapes
/// - x: `[b, s, d]`, gamma: `[d]`, beta: `[d]` → `[b, s, d]`
pub fn norm<B: FrozenOps>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
    kind: NormKind,
) -> Tensor<B, 3> {
    let [b, s, d] = x.dims();
    let y = B::frozen_norm(prim(x.reshape([b * s, d])), prim(gamma), beta.map(prim), eps, kind);
    tensor::<B, 2>(y).reshape([b, s, d])
}

/// HF's exact GELU (`0.5·x·(1 + erf(x/√2))`) with its exact derivative.
///
/// # Shapes
/// - x: any → same
pub fn gelu<B: FrozenOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let shape = x.shape();
    let n = shape.num_elements();
    tensor::<B, 1>(B::frozen_gelu(prim(x.reshape([n])))).reshape(shape)
}

/// `silu(gate)·up`.
///
/// # Shapes
/// - gate, up: any (the same) → same
pub fn swiglu<B: FrozenOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let shape = gate.shape();
    let n = shape.num_elements();
    tensor::<B, 1>(B::frozen_swiglu(prim(gate.reshape([n])), prim(up.reshape([n])))).reshape(shape)
}

/// Scaled dot-product attention (scale `1/√head_dim`) with grouped-query heads and an additive
/// bias, mirroring HF `eager_attention_forward` (masked scores at the most negative f32, softmax
/// in f32).
///
/// # Shapes
/// - query: `[b, n_heads, s_q, head_dim]`
/// - key, value: `[b, n_kv_heads, s_k, head_dim]` (`n_heads` a multiple of `n_kv_heads`)
/// - bias: `[b, 1, s_q, s_k]`
/// - output: `[b, n_heads, s_q, head_dim]`
pub fn attention<B: FrozenOps>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let head_dim = query.dims()[3];
    let scale = (head_dim as f64).powf(-0.5);
    tensor(B::frozen_attention(prim(query), prim(key), prim(value), bias.map(prim), scale))
}

/// `x·cos + rotate_half(x)·sin`, with `rotate_half(x) = cat(−x[.., half..], x[.., ..half])`.
///
/// # Shapes
/// - x: `[b, heads, s, head_dim]`, cos/sin: `[b, 1, s, head_dim]` → `[b, heads, s, head_dim]`
pub fn rope<B: FrozenOps>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    tensor(B::frozen_rope(prim(x), prim(cos.clone()), prim(sin.clone())))
}
