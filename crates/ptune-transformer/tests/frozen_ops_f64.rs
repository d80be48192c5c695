//! The composed backwards of the fused frozen ops (the default of every backend, and the
//! reference of the fused kernels in `frozen_ops.rs`) against central differences in f64.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use ptune_transformer::frozen::{composed, NormKind};

fn t<B: Backend, const D: usize>(p: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn p<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    t.into_primitive().tensor()
}

/// A `[b, 1, s_q, s_k]` bias hiding the last `r` keys of row `r`.
fn bias<B: Backend>(b: usize, s_q: usize, s_k: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f64> = (0..b)
        .flat_map(|r| {
            (0..s_q * s_k).map(move |i| if i % s_k >= s_k - r { f64::from(f32::MIN) } else { 0.0 })
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [b, 1, s_q, s_k]), device)
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
