//! The fused frozen ops against their composed form: outputs, and gradients of a weighted sum of
//! the outputs, on flex (fused kernels + hand-written backward) and ndarray (composed kernels +
//! hand-written backward). The composed form is differentiated by Burn's own autodiff, so the
//! hand-written backwards are checked against Burn's. The composed backwards (the default of every
//! backend) are checked against central differences in f64 on ndarray.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};
use ptune_transformer::frozen::{self, composed, FrozenOps, NormKind};

fn max_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem_f32()
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
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
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

const TOL: f32 = 2e-5;

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
    let (fused, fused_g) = value_and_grads::<B, 2, 2>(&[x.clone()], &w, |v| {
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
    assert!(max_diff(fused, reference) < TOL, "{kind:?} output");
    let dg = max_diff(fused_g[0].clone(), ref_g[0].clone());
    assert!(dg < TOL, "{kind:?} input gradient differs by {dg}");
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
    let (fused, fg) = value_and_grads::<B, 1, 1>(&[x.clone()], &w, |v| frozen::gelu(v[0].clone()));
    let (reference, rg) = value_and_grads::<B, 1, 1>(&[x.clone()], &w, |v| {
        let x = v[0].clone();
        x.clone() * (x / std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
    });
    assert!(max_diff(fused, reference) < TOL, "gelu output");
    assert!(max_diff(fg[0].clone(), rg[0].clone()) < TOL, "gelu gradient");

    let (fused, fg) = value_and_grads::<B, 1, 1>(&[x.clone(), u.clone()], &w, |v| {
        frozen::swiglu(v[0].clone(), v[1].clone())
    });
    let (reference, rg) = value_and_grads::<B, 1, 1>(&[x, u], &w, |v| {
        burn::tensor::activation::silu(v[0].clone()) * v[1].clone()
    });
    assert!(max_diff(fused, reference) < TOL, "swiglu output");
    for i in 0..2 {
        assert!(max_diff(fg[i].clone(), rg[i].clone()) < TOL, "swiglu gradient {i}");
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
    assert!(max_diff(fused, reference) < TOL, "attention output");
    for (i, name) in ["q", "k", "v"].iter().enumerate() {
        let d = max_diff(fg[i].clone(), rg[i].clone());
        assert!(d < TOL, "attention d{name} differs by {d} ({heads}/{kv_heads} heads)");
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
    let (fused, fg) =
        value_and_grads::<B, 4, 4>(&[x.clone()], &w, |v| frozen::rope(v[0].clone(), &c, &sn));
    let (reference, rg) = value_and_grads::<B, 4, 4>(&[x], &w, |v| {
        let x = v[0].clone();
        let half = hd / 2;
        let rotated = Tensor::cat(
            vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)],
            3,
        );
        x * c.clone() + rotated * sn.clone()
    });
    assert!(max_diff(fused, reference) < TOL, "rope output");
    assert!(max_diff(fg[0].clone(), rg[0].clone()) < TOL, "rope gradient");
}

fn check_all<B: AutodiffBackend + FrozenOps>()
where
    B::InnerBackend: FrozenOps,
{
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

/// Central differences of `sum(f(x) · w)` in f64 against the composed backward.
fn central_difference(
    f: impl Fn(Tensor<NdArray<f64>, 1>) -> Tensor<NdArray<f64>, 1>,
    backward: impl Fn(Tensor<NdArray<f64>, 1>, Tensor<NdArray<f64>, 1>) -> Tensor<NdArray<f64>, 1>,
    x: Vec<f64>,
    w: Vec<f64>,
) {
    let device = Default::default();
    let n = x.len();
    let xt = Tensor::<NdArray<f64>, 1>::from_data(TensorData::new(x.clone(), [n]), &device);
    let m = w.len();
    let wt = Tensor::<NdArray<f64>, 1>::from_data(TensorData::new(w.clone(), [m]), &device);
    let analytic: Vec<f64> = backward(wt.clone(), xt).into_data().to_vec().expect("f64");
    let h = 1e-6;
    for i in 0..n {
        let at = |delta: f64| {
            let mut x = x.clone();
            x[i] += delta;
            let xt = Tensor::<NdArray<f64>, 1>::from_data(TensorData::new(x, [n]), &device);
            (f(xt) * wt.clone()).sum().into_scalar()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "element {i}: central difference {numeric}, backward {}",
            analytic[i]
        );
    }
}

#[test]
fn composed_backwards_match_central_differences() {
    type B = NdArray<f64>;
    let x: Vec<f64> = (0..24).map(|i| ((i * 37 % 23) as f64 - 11.0) / 4.0).collect();
    let w: Vec<f64> = (0..24).map(|i| ((i * 17 % 13) as f64 - 6.0) / 5.0).collect();
    // GELU.
    central_difference(
        |x| t(composed::gelu::<B>(p(x))),
        |g, x| t(composed::gelu_backward::<B>(p(g), p(x))),
        x.clone(),
        w.clone(),
    );
    // SwiGLU in the gate (up fixed) and in up (gate fixed). The forward is written out in f64
    // (Burn's sigmoid is not f64-exact on every backend, which central differences would amplify).
    let up: Vec<f64> = x.iter().map(|v| 0.5 - v / 3.0).collect();
    let device = Default::default();
    let up_t = Tensor::<B, 1>::from_data(TensorData::new(up, [24]), &device);
    let silu = |x: Tensor<B, 1>| x.clone() / (x.neg().exp().add_scalar(1.0));
    central_difference(
        |x| silu(x) * up_t.clone(),
        |g, x| t(composed::swiglu_backward::<B>(p(g), p(x), p(up_t.clone())).0),
        x.clone(),
        w.clone(),
    );
    central_difference(
        |x| silu(up_t.clone()) * x,
        |g, x| t(composed::swiglu_backward::<B>(p(g), p(up_t.clone()), p(x)).1),
        x.clone(),
        w.clone(),
    );
    // LayerNorm and RMSNorm over rows of 6.
    let gamma = Tensor::<B, 1>::from_data(
        TensorData::new(vec![0.5, -1.0, 2.0, 1.5, 0.25, 1.0], [6]),
        &device,
    );
    let beta = Tensor::<B, 1>::from_data(TensorData::new(vec![0.1; 6], [6]), &device);
    for kind in [NormKind::Layer, NormKind::Rms] {
        let beta = (kind == NormKind::Layer).then(|| p(beta.clone()));
        let norm = |x: Tensor<B, 1>| {
            composed::norm_train::<B>(
                p(x.reshape([4, 6])),
                p(gamma.clone()),
                beta.clone(),
                1e-5,
                kind,
            )
        };
        central_difference(
            |x| t::<B, 2>(norm(x).0).reshape([24]),
            |g, x| {
                let saved = norm(x).1;
                t::<B, 2>(composed::norm_backward::<B>(
                    p(g.reshape([4, 6])),
                    saved,
                    p(gamma.clone()),
                    kind,
                ))
                .reshape([24])
            },
            x.clone(),
            w.clone(),
        );
    }
    // Attention in the queries, keys and values (2 heads over 1 key/value head, masked keys).
    let (b, h, kv, s_q, s_k, hd) = (1, 2, 1, 3, 4, 2);
    let mask = bias::<B>(b, s_q, s_k, &device);
    let mk = |x: &Tensor<B, 1>, dims: [usize; 4]| {
        x.clone().narrow(0, 0, dims.iter().product()).reshape(dims)
    };
    let qd = [b, h, s_q, hd];
    let kd = [b, kv, s_k, hd];
    let base = Tensor::<B, 1>::from_data(TensorData::new(x.clone(), [24]), &device);
    for which in 0..3 {
        let parts = |x: Tensor<B, 1>| {
            let q = if which == 0 { mk(&x, qd) } else { mk(&base, qd) };
            let k = if which == 1 { mk(&x, kd) } else { mk(&base.clone().flip([0]), kd) };
            let v = if which == 2 { mk(&x, kd) } else { mk(&base.clone().mul_scalar(0.5), kd) };
            (q, k, v)
        };
        let len = if which == 0 { 12 } else { 8 };
        central_difference(
            |x| {
                let (q, k, v) = parts(x);
                let out =
                    composed::attention_train::<B>(p(q), p(k), p(v), Some(p(mask.clone())), 0.7).0;
                t::<B, 4>(out).reshape([12])
            },
            |g, x| {
                let (q, k, v) = parts(x);
                let (_, probs) = composed::attention_train::<B>(
                    p(q.clone()),
                    p(k.clone()),
                    p(v.clone()),
                    Some(p(mask.clone())),
                    0.7,
                );
                let grads = composed::attention_backward::<B>(
                    p(g.reshape(qd)),
                    p(q),
                    p(k),
                    p(v),
                    probs,
                    0.7,
                    [true, true, true],
                );
                let [dq, dk, dv] = grads.map(|g| g.expect("gradient"));
                let d = [dq, dk, dv].into_iter().nth(which).expect("three gradients");
                t::<B, 4>(d).reshape([len])
            },
            x[..len].to_vec(),
            w[..12].to_vec(),
        );
    }
}
