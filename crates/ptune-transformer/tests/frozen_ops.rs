//! The fused frozen ops against their composed form: outputs, and gradients of a weighted sum of
//! the outputs, on flex (fused kernels + hand-written backward) and ndarray (composed kernels +
//! hand-written backward). The composed form is differentiated by Burn's own autodiff, so the
//! hand-written backwards are checked against Burn's. The composed backwards (the default of every
//! backend) are checked against central differences in f64 in `frozen_ops_f64.rs` (a process of
//! its own: ndarray f64 and f32 share the CPU device's default dtype).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};
use ptune_transformer::frozen::{self, composed, FrozenOps, NormKind};

/// Largest absolute difference, relative to the reference's largest magnitude when that exceeds 1
/// (f32 summation order alone moves large outputs by more than a fixed absolute tolerance).
fn max_diff<B: Backend, const D: usize>(a: Tensor<B, D>, reference: Tensor<B, D>) -> f32 {
    let scale = reference.clone().abs().max().into_scalar().elem_f32().max(1.0);
    (a - reference).abs().max().into_scalar().elem_f32() / scale
}

trait ElemF32 {
    fn elem_f32(self) -> f32;
}
impl<E: burn::tensor::ElementConversion> ElemF32 for E {
    fn elem_f32(self) -> f32 {
        burn::tensor::ElementConversion::elem(self)
    }
}

fn random<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    // The backend's float type explicitly: tests of ndarray f64 share the device's default dtype.
    let dtype = <B::FloatElem as burn::tensor::Element>::dtype();
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), (device, dtype))
}

fn t<B: Backend, const D: usize>(p: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn p<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Output and input gradients of `sum(f(inputs) · w)`.
fn value_and_grads<B: AutodiffBackend, const D: usize, const O: usize>(
    inputs: &[Tensor<B::InnerBackend, D>],
    w: &Tensor<B::InnerBackend, O>,
    f: impl Fn(Vec<Tensor<B, D>>) -> Tensor<B, O>,
) -> (Tensor<B::InnerBackend, O>, Vec<Tensor<B::InnerBackend, D>>) {
    let tracked: Vec<Tensor<B, D>> =
        inputs.iter().map(|x| Tensor::from_inner(x.clone()).require_grad()).collect();
    let out = f(tracked.clone());
    let loss = (out.clone() * Tensor::from_inner(w.clone())).sum();
    let grads = loss.backward();
    // An input the function detached has no gradient: zeros, compared as such.
    let g = tracked
        .iter()
        .map(|x| x.grad(&grads).unwrap_or_else(|| x.clone().inner().zeros_like()))
        .collect();
    (out.inner(), g)
}

/// Tolerance of the comparisons. Relative to the reference's magnitude (see `max_diff`); on
/// ndarray the reference itself is only good to ~1e-4: Burn's autodiff divides through
/// burn-ndarray's SIMD reciprocal, which is the CPU's approximate one (and used only on aligned
/// buffers, so the error moves between runs).
fn tol<B: Backend>() -> f32 {
    if std::any::type_name::<B>().contains("NdArray") {
        3e-4
    } else {
        2e-5
    }
}

fn check_norm<B: AutodiffBackend + FrozenOps>(kind: NormKind)
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 7);
    let (n, d) = (37, 48);
    let x = random::<B::InnerBackend, 2>([n, d], &device).mul_scalar(3.0).add_scalar(0.5);
    let gamma = random::<B::InnerBackend, 1>([d], &device);
    let beta = random::<B::InnerBackend, 1>([d], &device);
    let w = random::<B::InnerBackend, 2>([n, d], &device);
    let beta_for = |kind| (kind == NormKind::Layer).then(|| beta.clone());
    let (fused, fused_g) = value_and_grads::<B, 2, 2>(std::slice::from_ref(&x), &w, |v| {
        let y = frozen::norm(
            v[0].clone().unsqueeze::<3>(),
            Tensor::from_inner(gamma.clone()),
            beta_for(kind).map(Tensor::from_inner),
            1e-5,
            kind,
        );
        y.squeeze::<2>()
    });
    let (reference, ref_g) = value_and_grads::<B, 2, 2>(&[x], &w, |v| {
        t(composed::norm_train::<B>(
            p(v[0].clone()),
            p(Tensor::<B, 1>::from_inner(gamma.clone())),
            beta_for(kind).map(|b| p(Tensor::<B, 1>::from_inner(b))),
            1e-5,
            kind,
        )
        .0)
    });
    let (fd, rd) = (fused.dtype(), reference.dtype());
    let d = max_diff(fused, reference);
    assert!(d < tol::<B>(), "{kind:?} output differs by {d} ({fd:?} / {rd:?})");
    let dg = max_diff(fused_g[0].clone(), ref_g[0].clone());
    assert!(dg < tol::<B>(), "{kind:?} input gradient differs by {dg}");
}

fn check_gelu_swiglu<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 11);
    let x = random::<B::InnerBackend, 1>([5000], &device).mul_scalar(3.0);
    let u = random::<B::InnerBackend, 1>([5000], &device);
    let w = random::<B::InnerBackend, 1>([5000], &device);
    let (fused, fg) =
        value_and_grads::<B, 1, 1>(std::slice::from_ref(&x), &w, |v| frozen::gelu(v[0].clone()));
    let (reference, rg) = value_and_grads::<B, 1, 1>(std::slice::from_ref(&x), &w, |v| {
        let x = v[0].clone();
        x.clone() * (x / std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
    });
    assert!(max_diff(fused, reference) < tol::<B>(), "gelu output");
    assert!(max_diff(fg[0].clone(), rg[0].clone()) < tol::<B>(), "gelu gradient");

    let (fused, fg) = value_and_grads::<B, 1, 1>(&[x.clone(), u.clone()], &w, |v| {
        frozen::swiglu(v[0].clone(), v[1].clone())
    });
    let (reference, rg) = value_and_grads::<B, 1, 1>(&[x, u], &w, |v| {
        burn::tensor::activation::silu(v[0].clone()) * v[1].clone()
    });
    assert!(max_diff(fused, reference) < tol::<B>(), "swiglu output");
    for i in 0..2 {
        assert!(max_diff(fg[i].clone(), rg[i].clone()) < tol::<B>(), "swiglu gradient {i}");
    }
}

/// A `[b, 1, s_q, s_k]` bias hiding the last `r` keys of row `r`.
fn bias<B: Backend>(b: usize, s_q: usize, s_k: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = (0..b)
        .flat_map(|r| (0..s_q * s_k).map(move |i| if i % s_k >= s_k - r { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(values, [b, 1, s_q, s_k]), device)
}

fn check_attention<B: AutodiffBackend + FrozenOps>(heads: usize, kv_heads: usize, track_q: bool)
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 13);
    let (b, s_q, s_k, hd) = (3, 9, 14, 8);
    let q = random::<B::InnerBackend, 4>([b, heads, s_q, hd], &device);
    let k = random::<B::InnerBackend, 4>([b, kv_heads, s_k, hd], &device);
    let v = random::<B::InnerBackend, 4>([b, kv_heads, s_k, hd], &device);
    let w = random::<B::InnerBackend, 4>([b, heads, s_q, hd], &device);
    let bias = bias::<B::InnerBackend>(b, s_q, s_k, &device);
    let scale = (hd as f64).powf(-0.5);
    // With `track_q == false`, q is a constant (as for the first layers of P-Tuning v2).
    let run = |fused: bool| {
        value_and_grads::<B, 4, 4>(&[q.clone(), k.clone(), v.clone()], &w, |x| {
            let q = if track_q { x[0].clone() } else { x[0].clone().detach() };
            let bias = Some(Tensor::from_inner(bias.clone()));
            if fused {
                frozen::attention(q, x[1].clone(), x[2].clone(), bias)
            } else {
                t(composed::attention_train::<B>(
                    p(q),
                    p(x[1].clone()),
                    p(x[2].clone()),
                    bias.map(p),
                    scale,
                )
                .0)
            }
        })
    };
    let (fused, fg) = run(true);
    let (reference, rg) = run(false);
    assert!(max_diff(fused, reference) < tol::<B>(), "attention output");
    for (i, name) in ["q", "k", "v"].iter().enumerate() {
        let d = max_diff(fg[i].clone(), rg[i].clone());
        assert!(d < tol::<B>(), "attention d{name} differs by {d} ({heads}/{kv_heads} heads)");
    }
}

fn check_rope<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 17);
    let (b, h, s, hd) = (2, 3, 5, 8);
    let x = random::<B::InnerBackend, 4>([b, h, s, hd], &device);
    let cos = random::<B::InnerBackend, 4>([b, 1, s, hd], &device);
    let sin = random::<B::InnerBackend, 4>([b, 1, s, hd], &device);
    let w = random::<B::InnerBackend, 4>([b, h, s, hd], &device);
    let (c, sn) = (Tensor::<B, 4>::from_inner(cos), Tensor::<B, 4>::from_inner(sin));
    let (fused, fg) = value_and_grads::<B, 4, 4>(std::slice::from_ref(&x), &w, |v| {
        frozen::rope(v[0].clone(), &c, &sn)
    });
    let (reference, rg) = value_and_grads::<B, 4, 4>(&[x], &w, |v| {
        let x = v[0].clone();
        let half = hd / 2;
        let rotated = Tensor::cat(
            vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)],
            3,
        );
        x * c.clone() + rotated * sn.clone()
    });
    assert!(max_diff(fused, reference) < tol::<B>(), "rope output");
    assert!(max_diff(fg[0].clone(), rg[0].clone()) < tol::<B>(), "rope gradient");
}

/// The dense layer (flex: one gemm call with the bias as its initial value) against Burn's
/// `linear`, with a contiguous weight, a transposed view of one (a tied LM head), and no bias.
fn check_linear<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 5);
    let (n, d_in, d_out) = (45, 33, 70);
    let x = random::<B::InnerBackend, 2>([n, d_in], &device);
    let weight = random::<B::InnerBackend, 2>([d_in, d_out], &device);
    let weight_t = random::<B::InnerBackend, 2>([d_out, d_in], &device).transpose();
    let bias = random::<B::InnerBackend, 1>([d_out], &device);
    let w = random::<B::InnerBackend, 2>([n, d_out], &device);
    for (what, weight, bias) in [
        ("weight + bias", weight.clone(), Some(bias.clone())),
        ("transposed weight view", weight_t, Some(bias)),
        ("no bias", weight, None),
    ] {
        let wt = || Tensor::<B, 2>::from_inner(weight.clone());
        let bt = || bias.clone().map(Tensor::<B, 1>::from_inner);
        let (fused, fused_g) = value_and_grads::<B, 2, 2>(std::slice::from_ref(&x), &w, |v| {
            frozen::linear(v[0].clone(), wt(), bt())
        });
        let (reference, ref_g) = value_and_grads::<B, 2, 2>(std::slice::from_ref(&x), &w, |v| {
            burn::tensor::module::linear(v[0].clone(), wt(), bt())
        });
        let d = max_diff(fused, reference);
        assert!(d < tol::<B>(), "linear ({what}) output differs by {d}");
        let dg = max_diff(fused_g[0].clone(), ref_g[0].clone());
        assert!(dg < tol::<B>(), "linear ({what}) input gradient differs by {dg}");
    }
}

/// A weight that requires gradients (full fine-tuning) takes the composed path and gets its
/// gradient, `xᵀ·g`.
fn check_linear_tracked_weight<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 6);
    let x = random::<B::InnerBackend, 2>([9, 4], &device);
    let weight = Tensor::<B, 2>::from_inner(random([4, 3], &device)).require_grad();
    let g = random::<B::InnerBackend, 2>([9, 3], &device);
    let out = frozen::linear(Tensor::from_inner(x.clone()), weight.clone(), None);
    let grads = (out * Tensor::from_inner(g.clone())).sum().backward();
    let dw = weight.grad(&grads).expect("the tracked weight has a gradient");
    let d = max_diff(dw, x.transpose().matmul(g));
    assert!(d < tol::<B>(), "weight gradient differs by {d}");
}

/// The fused cross-entropy (loss and logit gradients, the backward from the saved logsumexp)
/// against Burn's `log_softmax` + `gather`, on logits with a wide spread (an LM head's scale).
fn check_cross_entropy<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 8);
    let (n, c) = (23, 301);
    let logits = random::<B::InnerBackend, 2>([n, c], &device).mul_scalar(8.0);
    let labels: Vec<usize> = (0..n).map(|r| (r * 37 + 5) % c).collect();
    let w = random::<B::InnerBackend, 1>([1], &device);
    let (fused, fused_g) = value_and_grads::<B, 2, 1>(std::slice::from_ref(&logits), &w, |v| {
        frozen::cross_entropy(v[0].clone(), &labels)
    });
    let (reference, ref_g) = value_and_grads::<B, 2, 1>(std::slice::from_ref(&logits), &w, |v| {
        let device = v[0].device();
        let column = labels.iter().map(|&l| l as i64).collect::<Vec<_>>();
        let t =
            Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(column, [n, 1]), &device);
        burn::tensor::activation::log_softmax(v[0].clone(), 1).gather(1, t).mean().neg()
    });
    let d = max_diff(fused, reference);
    assert!(d < tol::<B>(), "cross-entropy differs by {d}");
    let dg = max_diff(fused_g[0].clone(), ref_g[0].clone());
    assert!(dg < tol::<B>(), "cross-entropy gradient differs by {dg}");
}

/// The chunked LM-head loss (`frozen::linear_cross_entropy`) against `cross_entropy(linear(..))`:
/// value and input gradient, over enough rows for three chunks (the last one short), with a bias
/// and with a tied head's transposed weight view; and a weight that requires gradients gets one.
fn check_linear_cross_entropy<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    let device = Default::default();
    B::seed(&device, 9);
    let c = 4096;
    let rows_per_chunk = frozen::LOSS_CHUNK_FLOATS / c;
    let (n, d) = (2 * rows_per_chunk + 7, 8);
    let x = random::<B::InnerBackend, 2>([n, d], &device);
    let weight = random::<B::InnerBackend, 2>([d, c], &device);
    let weight_t = random::<B::InnerBackend, 2>([c, d], &device).transpose();
    let bias = random::<B::InnerBackend, 1>([c], &device);
    let labels: Vec<usize> = (0..n).map(|r| (r * 131 + 17) % c).collect();
    let w = Tensor::<B::InnerBackend, 1>::from_data([1.7f32], &device);
    for (what, weight, bias) in
        [("weight + bias", weight, Some(bias)), ("tied transposed weight", weight_t, None)]
    {
        let wt = || Tensor::<B, 2>::from_inner(weight.clone());
        let bt = || bias.clone().map(Tensor::<B, 1>::from_inner);
        let (fused, fused_g) = value_and_grads::<B, 2, 1>(std::slice::from_ref(&x), &w, |v| {
            frozen::linear_cross_entropy(v[0].clone(), wt(), bt(), &labels)
        });
        let (reference, ref_g) = value_and_grads::<B, 2, 1>(std::slice::from_ref(&x), &w, |v| {
            frozen::cross_entropy(burn::tensor::module::linear(v[0].clone(), wt(), bt()), &labels)
        });
        let dv = max_diff(fused, reference);
        assert!(dv < tol::<B>(), "linear cross-entropy ({what}) differs by {dv}");
        let dg = max_diff(fused_g[0].clone(), ref_g[0].clone());
        assert!(dg < tol::<B>(), "linear cross-entropy ({what}) gradient differs by {dg}");
    }
    let tracked = Tensor::<B, 2>::from_inner(random([d, 5], &device)).require_grad();
    let small: Vec<usize> = (0..n).map(|r| r % 5).collect();
    let loss = frozen::linear_cross_entropy(Tensor::from_inner(x), tracked.clone(), None, &small);
    let grads = loss.backward();
    assert!(tracked.grad(&grads).is_some(), "a tracked LM head gets its gradient");
}

fn check_all<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
    check_linear::<B>();
    check_linear_cross_entropy::<B>();
    check_linear_tracked_weight::<B>();
    check_cross_entropy::<B>();
    check_norm::<B>(NormKind::Layer);
    check_norm::<B>(NormKind::Rms);
    check_gelu_swiglu::<B>();
    check_attention::<B>(4, 4, true);
    check_attention::<B>(6, 2, true);
    check_attention::<B>(6, 3, false);
    check_rope::<B>();
}

#[test]
fn fused_ops_match_composed_on_flex() {
    check_all::<Autodiff<Flex>>();
}

#[test]
fn fused_ops_match_composed_on_ndarray() {
    check_all::<Autodiff<NdArray>>();
}

/// The additive bias equals HF's masking: masked scores at the most negative f32 and the same
/// probabilities as filling them, with padding, unused prefix slots and causal masking together.
fn check_bias_matches_fill<B: FrozenOps>() {
    use burn::tensor::{Bool, Tensor as T};
    use ptune_transformer::attention::{attention_bias, attention_mask};
    let device = Default::default();
    B::seed(&device, 3);
    let (b, s_q, n_prefix) = (3, 4, 3);
    let padding: Vec<bool> = (0..b).flat_map(|r| (0..s_q).map(move |j| j >= s_q - r)).collect();
    let slots: Vec<bool> = (0..b).flat_map(|r| (0..n_prefix).map(move |j| j >= 3 - r)).collect();
    let padding = T::<B, 2, Bool>::from_bool(TensorData::new(padding, [b, s_q]), &device);
    let slots = T::<B, 2, Bool>::from_bool(TensorData::new(slots, [b, n_prefix]), &device);
    for causal in [false, true] {
        let mask = attention_mask(
            b,
            s_q,
            n_prefix,
            0,
            Some(padding.clone()),
            Some(slots.clone()),
            causal,
            &device,
        )
        .expect("a mask");
        let bias =
            attention_bias::<B>(Some(mask.clone()), burn::tensor::DType::F32).expect("a bias");
        let expected: Vec<f32> = mask
            .clone()
            .float()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32")
            .into_iter()
            .map(|m| if m != 0.0 { f32::MIN } else { 0.0 })
            .collect();
        let got: Vec<f32> = bias.clone().into_data().to_vec().expect("f32");
        assert_eq!(got, expected, "bias (causal {causal})");
        let (h, hd, s_k) = (2, 4, n_prefix + s_q);
        let q = random::<B, 4>([b, h, s_q, hd], &device);
        let k = random::<B, 4>([b, h, s_k, hd], &device);
        let v = random::<B, 4>([b, h, s_k, hd], &device);
        let scores = q.clone().matmul(k.clone().swap_dims(2, 3)).mul_scalar(0.5);
        let filled = scores.mask_fill(mask.expand([b, h, s_q, s_k]), f32::MIN);
        let reference = burn::tensor::activation::softmax(filled, 3).matmul(v.clone());
        let fused = frozen::attention(q, k, v, Some(bias));
        let d = max_diff(fused, reference);
        assert!(d < tol::<B>(), "bias vs fill differ by {d} (causal {causal})");
    }
}

#[test]
fn attention_bias_matches_filled_mask() {
    check_bias_matches_fill::<Flex>();
    check_bias_matches_fill::<NdArray>();
}
