//! The ops of [`FrozenOps`] composed from Burn primitives: the defaults every
//! backend gets, the reference the fused kernels are tested against, and the path the autodiff
//! impl falls back to when a weight requires gradients.

use burn::tensor::activation::{sigmoid, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor, TensorData};

use super::{prim, tensor, FrozenOps, NormKind, NormSaved};

/// `1/x` by an exact division. (Burn's `recip` is not exact on every backend: burn-ndarray's SIMD
/// path uses the CPU's approximate reciprocal, ~1e-4 relative, and only for aligned buffers.)
///
/// # Shapes
/// - x: `[n, d]` → `[n, d]`
fn reciprocal<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.ones_like() / x
}

/// Burn's `linear`: `x·weight (+ bias)`.
///
/// # Shapes
/// - x: `[n, d_in]`, weight: `[d_in, d_out]`, bias: `[d_out]` → `[n, d_out]`
pub fn linear<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    prim(burn::tensor::module::linear(
        tensor::<B, 2>(x),
        tensor::<B, 2>(weight),
        bias.map(tensor::<B, 1>),
    ))
}

/// `grad·weightᵀ`.
///
/// # Shapes
/// - grad: `[n, d_out]`, weight: `[d_in, d_out]` → `[n, d_in]`
pub fn linear_backward<B: Backend>(grad: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    prim(tensor::<B, 2>(grad).matmul(tensor::<B, 2>(weight).transpose()))
}

/// `labels` as an int column `[n, 1]` on `device`.
fn label_column<B: Backend>(labels: &[usize], device: &B::Device) -> Tensor<B, 2, Int> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(values, [labels.len(), 1]), device)
}

/// Mean cross-entropy and each row's `logsumexp`.
///
/// # Shapes
/// - logits: `[n, c]` → (`[1]`, `[n, 1]`)
pub fn cross_entropy_train<B: Backend>(
    logits: FloatTensor<B>,
    labels: &[usize],
) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = tensor::<B, 2>(logits);
    let max = x.clone().max_dim(1).detach();
    let lse = (x.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let picked = x.clone().gather(1, label_column::<B>(labels, &x.device()));
    let loss = (lse.clone() - picked).mean();
    (prim(loss), prim(lse))
}

/// The loss of [`linear_cross_entropy_train`] alone.
///
/// # Shapes
/// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` → `[1]`
pub fn linear_cross_entropy<B: FrozenOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    labels: &[usize],
) -> FloatTensor<B> {
    prim(loss_chunks::<B>(tensor(x), weight, bias, labels, false).0)
}

/// `FrozenOps::frozen_linear_cross_entropy_train` from the backend's own frozen ops (product,
/// cross-entropy and their backwards), chunk by chunk of rows.
///
/// # Shapes
/// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` → (loss `[1]`, dx `[n, d]`)
pub fn linear_cross_entropy_train<B: FrozenOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    labels: &[usize],
) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = tensor::<B, 2>(x);
    let (dims, device, dtype) = (x.dims(), x.device(), x.dtype());
    let (loss, grads) = loss_chunks::<B>(x, weight, bias, labels, true);
    let dx = if grads.is_empty() {
        Tensor::<B, 2>::zeros(dims, &device).cast(dtype)
    } else {
        Tensor::cat(grads, 0)
    };
    (prim(loss), prim(dx))
}

/// The chunked loss (each chunk's mean weighted by its share of the rows) and, with `want_grad`,
/// each chunk's input gradient in order.
///
/// # Shapes
/// - x: `[n, d]`, weight: `[d, c]`, bias: `[c]`, labels: `n` → (`[1]`, chunks of `[rows, d]`)
fn loss_chunks<B: FrozenOps>(
    x: Tensor<B, 2>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    labels: &[usize],
    want_grad: bool,
) -> (Tensor<B, 1>, Vec<Tensor<B, 2>>) {
    let n = x.dims()[0];
    let classes = tensor::<B, 2>(weight.clone()).dims()[1].max(1);
    let rows = (super::LOSS_CHUNK_FLOATS / classes).clamp(1, n.max(1));
    let device = x.device();
    let mut loss = Tensor::<B, 1>::zeros([1], &device).cast(x.dtype());
    let mut grads = Vec::new();
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        let chunk = prim(x.clone().narrow(0, start, len));
        let part = &labels[start..start + len];
        let logits = B::frozen_linear(chunk, weight.clone(), bias.clone());
        let (chunk_loss, lse) = B::frozen_cross_entropy_train(logits.clone(), part);
        let share = len as f64 / n as f64;
        loss = loss + tensor::<B, 1>(chunk_loss).mul_scalar(share);
        if want_grad {
            let g = Tensor::<B, 1>::from_data([share as f32], &device).cast(x.dtype());
            let dlogits = B::frozen_cross_entropy_backward(prim(g), logits, lse, part);
            grads.push(tensor::<B, 2>(B::frozen_linear_backward(dlogits, weight.clone())));
        }
        start += len;
    }
    (loss, grads)
}

/// `(softmax(logits) − onehot(labels))·grad/n`.
///
/// # Shapes
/// - grad: `[1]`, logits: `[n, c]`, lse: `[n, 1]` → `[n, c]`
pub fn cross_entropy_backward<B: Backend>(
    grad: FloatTensor<B>,
    logits: FloatTensor<B>,
    lse: FloatTensor<B>,
    labels: &[usize],
) -> FloatTensor<B> {
    let x = tensor::<B, 2>(logits);
    let n = labels.len().max(1);
    let p = (x - tensor::<B, 2>(lse)).exp();
    let ones = Tensor::<B, 2>::ones([labels.len(), 1], &p.device()).cast(p.dtype());
    let d = p.clone().scatter(
        1,
        label_column::<B>(labels, &p.device()),
        ones.neg(),
        burn::tensor::IndexingUpdateOp::Add,
    );
    let g = tensor::<B, 1>(grad).unsqueeze::<2>().div_scalar(n as f64);
    prim(d * g)
}

/// # Shapes
/// - x: `[n, d]`, gamma/beta: `[d]` → (`[n, d]`, x̂ `[n, d]`, rstd `[n, 1]`)
pub fn norm_train<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: Option<FloatTensor<B>>,
    eps: f64,
    kind: NormKind,
) -> (FloatTensor<B>, NormSaved<B>) {
    let x = tensor::<B, 2>(x);
    let gamma = tensor::<B, 1>(gamma).unsqueeze::<2>();
    let (xhat, rstd) = match kind {
        NormKind::Layer => {
            let centered = x.clone() - x.mean_dim(1);
            let var = centered.clone().square().mean_dim(1);
            let rstd = reciprocal(var.add_scalar(eps).sqrt());
            (centered * rstd.clone(), rstd)
        }
        NormKind::Rms => {
            let rstd = reciprocal(x.clone().square().mean_dim(1).add_scalar(eps).sqrt());
            (x * rstd.clone(), rstd)
        }
    };
    let mut y = xhat.clone() * gamma;
    if let Some(beta) = beta {
        y = y + tensor::<B, 1>(beta).unsqueeze::<2>();
    }

    (prim(y), NormSaved { xhat: prim(xhat), rstd: prim(rstd) })
}

/// # Shapes
/// - grad: `[n, d]`, gamma: `[d]` → `[n, d]`
pub fn norm_backward<B: Backend>(
    grad: FloatTensor<B>,
    saved: NormSaved<B>,
    gamma: FloatTensor<B>,
    kind: NormKind,
) -> FloatTensor<B> {
    let gg = tensor::<B, 2>(grad) * tensor::<B, 1>(gamma).unsqueeze::<2>();
    let xhat = tensor::<B, 2>(saved.xhat);
    let rstd = tensor::<B, 2>(saved.rstd);
    let proj = (gg.clone() * xhat.clone()).mean_dim(1);
    let inner = match kind {
        NormKind::Layer => gg.clone() - gg.mean_dim(1) - xhat * proj,
        NormKind::Rms => gg - xhat * proj,
    };
    prim(inner * rstd)
}

/// # Shapes
/// - x: `[n]` → `[n]`
pub fn gelu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let x = tensor::<B, 1>(x);
    prim(x.clone() * (x / std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5))
}

/// # Shapes
/// - grad, x: `[n]` → `[n]`
pub fn gelu_backward<B: Backend>(grad: FloatTensor<B>, x: FloatTensor<B>) -> FloatTensor<B> {
    let x = tensor::<B, 1>(x);
    let cdf = (x.clone() / std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5);
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let pdf = x.clone().square().mul_scalar(-0.5).exp().mul_scalar(inv_sqrt_2pi);
    prim(tensor::<B, 1>(grad) * (cdf + x * pdf))
}

/// # Shapes
/// - gate, up: `[n]` → `[n]`
pub fn swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    prim(silu(tensor::<B, 1>(gate)) * tensor::<B, 1>(up))
}

/// # Shapes
/// - grad, gate, up: `[n]` → (`[n]`, `[n]`)
pub fn swiglu_backward<B: Backend>(
    grad: FloatTensor<B>,
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (grad, gate, up) = (tensor::<B, 1>(grad), tensor::<B, 1>(gate), tensor::<B, 1>(up));
    let s = sigmoid(gate.clone());
    let d_up = grad.clone() * gate.clone() * s.clone();
    let d_gate = grad * up * s.clone() * (gate * s.neg().add_scalar(1.0)).add_scalar(1.0);
    (prim(d_gate), prim(d_up))
}

/// Repeats each key/value head `n_heads / n_kv_heads` times (HF `repeat_kv`).
///
/// # Shapes
/// - x: `[b, n_kv_heads, s, head_dim]` → `[b, n_heads, s, head_dim]`
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_heads: usize) -> Tensor<B, 4> {
    let [b, n_kv, s, d] = x.dims();
    if n_kv == n_heads {
        return x;
    }
    let rep = n_heads / n_kv;
    x.unsqueeze_dim::<5>(2).expand([b, n_kv, rep, s, d]).reshape([b, n_heads, s, d])
}

/// The transpose of [`repeat_kv`]: sums each group of query heads' gradients into its key/value
/// head.
///
/// # Shapes
/// - x: `[b, n_heads, s, head_dim]` → `[b, n_kv_heads, s, head_dim]`
pub fn sum_groups<B: Backend>(x: Tensor<B, 4>, n_kv: usize) -> Tensor<B, 4> {
    let [b, n_heads, s, d] = x.dims();
    if n_kv == n_heads {
        return x;
    }
    x.reshape([b, n_kv, n_heads / n_kv, s, d]).sum_dim(2).reshape([b, n_kv, s, d])
}

/// # Shapes
/// - q: `[b, h, s_q, hd]`, k/v: `[b, kv, s_k, hd]`, bias: `[b, 1, s_q, s_k]`
///   → (`[b, h, s_q, hd]`, probabilities `[b, h, s_q, s_k]`)
pub fn attention_train<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let q = tensor::<B, 4>(q);
    let n_heads = q.dims()[1];
    let k = repeat_kv(tensor::<B, 4>(k), n_heads);
    let v = repeat_kv(tensor::<B, 4>(v), n_heads);
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if let Some(bias) = bias {
        scores = scores + tensor::<B, 4>(bias);
    }
    let p = softmax(scores, 3);
    (prim(p.clone().matmul(v)), prim(p))
}

/// # Shapes
/// - grad: `[b, h, s_q, hd]`, q: `[b, h, s_q, hd]`, k/v: `[b, kv, s_k, hd]`, p: `[b, h, s_q, s_k]`
///   → dq `[b, h, s_q, hd]`, dk/dv `[b, kv, s_k, hd]`
pub fn attention_backward<B: Backend>(
    grad: FloatTensor<B>,
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    p: FloatTensor<B>,
    scale: f64,
    need: [bool; 3],
) -> [Option<FloatTensor<B>>; 3] {
    let grad = tensor::<B, 4>(grad);
    let p = tensor::<B, 4>(p);
    let q = tensor::<B, 4>(q);
    let n_heads = q.dims()[1];
    let k = tensor::<B, 4>(k);
    let n_kv = k.dims()[1];
    let dv =
        need[2].then(|| prim(sum_groups(p.clone().swap_dims(2, 3).matmul(grad.clone()), n_kv)));
    if !need[0] && !need[1] {
        return [None, None, dv];
    }
    let v = repeat_kv(tensor::<B, 4>(v), n_heads);
    let dp = grad.matmul(v.swap_dims(2, 3));
    let ds = p.clone() * (dp.clone() - (p * dp).sum_dim(3));
    let dq = need[0].then(|| prim(ds.clone().matmul(repeat_kv(k, n_heads)).mul_scalar(scale)));
    let dk =
        need[1].then(|| prim(sum_groups(ds.swap_dims(2, 3).matmul(q).mul_scalar(scale), n_kv)));
    [dq, dk, dv]
}

/// `x·cos + rotate_half(x)·sin` (forward), or its transpose `x·cos + rotate_halfᵀ(x·sin)`
/// (`transpose`, the backward), with `rotate_half(x) = cat(−x₂, x₁)` and
/// `rotate_halfᵀ(u) = cat(u₂, −u₁)`.
///
/// # Shapes
/// - x: `[b, heads, s, head_dim]`, cos/sin: `[b, 1, s, head_dim]` → `[b, heads, s, head_dim]`
pub fn rope<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    transpose: bool,
) -> FloatTensor<B> {
    let x = tensor::<B, 4>(x);
    let (cos, sin) = (tensor::<B, 4>(cos), tensor::<B, 4>(sin));
    let half = x.dims()[3] / 2;
    if transpose {
        let u = x.clone() * sin;
        let rotated =
            Tensor::cat(vec![u.clone().narrow(3, half, half), u.narrow(3, 0, half).neg()], 3);
        prim(x * cos + rotated)
    } else {
        let rotated = Tensor::cat(
            vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)],
            3,
        );
        prim(x * cos + rotated * sin)
    }
}
