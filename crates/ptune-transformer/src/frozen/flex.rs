//! Fused burn-flex kernels for [`FrozenOps`]: each norm, activation and softmax is one
//! multi-threaded pass over rows (rayon), where the composed form runs 5–12 full passes, most of
//! them single-threaded. Matrix products stay burn-flex's own (`gemm`). Tensors that are not f32
//! take the composed path.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use rayon::prelude::*;

use super::{composed, FrozenOps, NormKind, NormSaved};

/// Rows per rayon task are chosen so that a task has at least this many elements.
const MIN_TASK: usize = 16 * 1024;

/// The tensor's f32 elements in row-major order (copied only when the layout is not contiguous),
/// or `None` when it is not f32.
fn contiguous(t: &FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap_or(&[])
}

fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Rows per parallel chunk for rows of `row_len` elements.
fn rows_per_task(row_len: usize) -> usize {
    MIN_TASK.div_ceil(row_len.max(1)).max(1)
}

/// Runs `f(row_in, row_out, row_index)` over the rows of `input`, in parallel.
fn map_rows(
    input: &[f32],
    row_len: usize,
    f: impl Fn(&[f32], &mut [f32], usize) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; input.len()];
    let per = rows_per_task(row_len);
    out.par_chunks_mut(per * row_len).zip(input.par_chunks(per * row_len)).enumerate().for_each(
        |(task, (out, input))| {
            for (i, (o, x)) in out.chunks_mut(row_len).zip(input.chunks(row_len)).enumerate() {
                f(x, o, task * per + i);
            }
        },
    );
    out
}

/// The f32 buffer of a tensor that owns exactly its elements in row-major order (a fresh product
/// or activation), for kernels that overwrite their input; `None` when it is shared, strided or
/// not f32.
fn exclusive(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let n = t.shape().num_elements();
    if t.dtype() != DType::F32 || !t.is_contiguous() || t.layout().start_offset() != 0 {
        return None;
    }
    t.try_storage_mut::<f32>().filter(|buf| buf.len() == n)
}

/// Runs `f(row, row_index)` over the rows of `buf` in place, in parallel.
fn rows_in_place(buf: &mut [f32], row_len: usize, f: impl Fn(&mut [f32], usize) + Sync) {
    let per = rows_per_task(row_len);
    buf.par_chunks_mut(per * row_len).enumerate().for_each(|(task, rows)| {
        for (i, row) in rows.chunks_mut(row_len).enumerate() {
            f(row, task * per + i);
        }
    });
}

/// Runs `f(row, row_index)` over the rows of `t` (an f32 tensor), in place when nobody else holds
/// its buffer, else on a copy.
fn rows_in_place_or_copy(
    mut t: FlexTensor,
    row_len: usize,
    f: impl Fn(&mut [f32], usize) + Sync,
) -> FlexTensor {
    if let Some(buf) = exclusive(&mut t) {
        rows_in_place(buf, row_len, f);
        return t;
    }
    let Some(tc) = contiguous(&t) else { unreachable_f32() };
    let mut buf = values(&tc).to_vec();
    rows_in_place(&mut buf, row_len, f);
    from_vec(buf, tc.shape())
}

/// Element-wise map of equal-length slices, in parallel.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(MIN_TASK).zip(a.par_chunks(MIN_TASK).zip(b.par_chunks(MIN_TASK))).for_each(
        |(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        },
    );
    out
}

/// One row of a norm: writes `y = x̂·γ (+ β)` (and `x̂` when asked), returns `rstd`.
fn norm_row(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    kind: NormKind,
    y: &mut [f32],
    mut xhat: Option<&mut [f32]>,
) -> f32 {
    let inv_d = 1.0 / x.len() as f32;
    let mean = match kind {
        NormKind::Layer => x.iter().sum::<f32>() * inv_d,
        NormKind::Rms => 0.0,
    };
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() * inv_d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (j, (yo, &v)) in y.iter_mut().zip(x).enumerate() {
        let h = (v - mean) * rstd;
        if let Some(xh) = xhat.as_deref_mut() {
            xh[j] = h;
        }
        *yo = h * gamma[j] + beta.map_or(0.0, |b| b[j]);
    }
    rstd
}

fn erf(x: f32) -> f32 {
    libm::erff(x)
}

impl FrozenOps for Flex {
    fn frozen_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
        kind: NormKind,
    ) -> FloatTensor<Self> {
        let (Some(xc), Some(g)) = (contiguous(&x), contiguous(&gamma)) else {
            return composed::norm_train::<Self>(x, gamma, beta, eps, kind).0;
        };
        let bc = beta.as_ref().and_then(contiguous);
        let shape = xc.shape();
        let d = shape[shape.num_dims() - 1];
        let (xs, gs, bs) = (values(&xc), values(&g), bc.as_ref().map(values));
        // The inference path: only the output, no x̂ kept.
        let y = map_rows(xs, d, |x, y, _| {
            norm_row(x, gs, bs, eps as f32, kind, y, None);
        });
        from_vec(y, shape)
    }

    fn frozen_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
        kind: NormKind,
    ) -> (FloatTensor<Self>, NormSaved<Self>) {
        let (Some(xc), Some(g)) = (contiguous(&x), contiguous(&gamma)) else {
            return composed::norm_train::<Self>(x, gamma, beta, eps, kind);
        };
        let bc = beta.as_ref().and_then(contiguous);
        let shape = xc.shape();
        let d = shape[shape.num_dims() - 1];
        let n = shape.num_elements() / d.max(1);
        let (xs, gs, bs) = (values(&xc), values(&g), bc.as_ref().map(values));
        let mut y = vec![0.0f32; xs.len()];
        let mut xhat = vec![0.0f32; xs.len()];
        let mut rstd = vec![0.0f32; n];
        let per = rows_per_task(d);
        y.par_chunks_mut(per * d)
            .zip(xhat.par_chunks_mut(per * d))
            .zip(rstd.par_chunks_mut(per))
            .zip(xs.par_chunks(per * d))
            .for_each(|(((y, xhat), rstd), xs)| {
                for (((y, xh), r), x) in
                    y.chunks_mut(d).zip(xhat.chunks_mut(d)).zip(rstd.iter_mut()).zip(xs.chunks(d))
                {
                    *r = norm_row(x, gs, bs, eps as f32, kind, y, Some(xh));
                }
            });
        let rows = Shape::new([n, 1]);
        (
            from_vec(y, shape.clone()),
            NormSaved { xhat: from_vec(xhat, shape), rstd: from_vec(rstd, rows) },
        )
    }

    fn frozen_norm_backward(
        grad: FloatTensor<Self>,
        saved: NormSaved<Self>,
        gamma: FloatTensor<Self>,
        kind: NormKind,
    ) -> FloatTensor<Self> {
        let (Some(gc), Some(xh), Some(rs), Some(gm)) = (
            contiguous(&grad),
            contiguous(&saved.xhat),
            contiguous(&saved.rstd),
            contiguous(&gamma),
        ) else {
            return composed::norm_backward::<Self>(grad, saved, gamma, kind);
        };
        let shape = gc.shape();
        let d = shape[shape.num_dims() - 1];
        let (gs, xhs, rss, gms) = (values(&gc), values(&xh), values(&rs), values(&gm));
        let out = map_rows(gs, d, |g, o, row| {
            let x = &xhs[row * d..(row + 1) * d];
            let inv_d = 1.0 / d as f32;
            let (mut sum_gg, mut sum_ggx) = (0.0f32, 0.0f32);
            for j in 0..d {
                let gg = g[j] * gms[j];
                sum_gg += gg;
                sum_ggx += gg * x[j];
            }
            let mean_gg = match kind {
                NormKind::Layer => sum_gg * inv_d,
                NormKind::Rms => 0.0,
            };
            let mean_ggx = sum_ggx * inv_d;
            let r = rss[row];
            for j in 0..d {
                o[j] = r * (g[j] * gms[j] - mean_gg - x[j] * mean_ggx);
            }
        });
        from_vec(out, shape)
    }

    fn frozen_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let gelu = |v: f32| v * (0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)));
        let mut x = x;
        if let Some(buf) = exclusive(&mut x) {
            // Nobody else holds the input (the inference path): overwrite it.
            buf.par_chunks_mut(MIN_TASK).for_each(|c| c.iter_mut().for_each(|v| *v = gelu(*v)));
            return x;
        }
        let Some(xc) = contiguous(&x) else { return composed::gelu::<Self>(x) };
        let xs = values(&xc);
        let out = map2(xs, xs, |v, _| gelu(v));
        from_vec(out, xc.shape())
    }

    fn frozen_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some(gc), Some(xc)) = (contiguous(&grad), contiguous(&x)) else {
            return composed::gelu_backward::<Self>(grad, x);
        };
        let inv_sqrt_2pi = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
        let out = map2(values(&gc), values(&xc), |g, v| {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * v * v).exp() * inv_sqrt_2pi;
            g * (cdf + v * pdf)
        });
        from_vec(out, gc.shape())
    }

    fn frozen_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some(gc), Some(uc)) = (contiguous(&gate), contiguous(&up)) else {
            return composed::swiglu::<Self>(gate, up);
        };
        let out = map2(values(&gc), values(&uc), |g, u| g * sigmoid(g) * u);
        from_vec(out, gc.shape())
    }

    fn frozen_swiglu_backward(
        grad: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (Some(dc), Some(gc), Some(uc)) =
            (contiguous(&grad), contiguous(&gate), contiguous(&up))
        else {
            return composed::swiglu_backward::<Self>(grad, gate, up);
        };
        let (ds, gs, us) = (values(&dc), values(&gc), values(&uc));
        let shape = dc.shape();
        let mut d_gate = vec![0.0f32; ds.len()];
        let mut d_up = vec![0.0f32; ds.len()];
        d_gate
            .par_chunks_mut(MIN_TASK)
            .zip(d_up.par_chunks_mut(MIN_TASK))
            .zip(ds.par_chunks(MIN_TASK).zip(gs.par_chunks(MIN_TASK).zip(us.par_chunks(MIN_TASK))))
            .for_each(|((dg, du), (d, (g, u)))| {
                for i in 0..d.len() {
                    let s = sigmoid(g[i]);
                    du[i] = d[i] * g[i] * s;
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        (from_vec(d_gate, shape.clone()), from_vec(d_up, shape))
    }

    fn frozen_attention_train(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if q.dtype() != DType::F32 {
            return composed::attention_train::<Self>(q, k, v, bias, scale);
        }
        let [_, h, s_q, _] = dims4(&q);
        let n_kv = dims4(&k)[1];
        let (k, v) = (repeat_kv(k, h, n_kv), repeat_kv(v, h, n_kv));
        let scores = Flex::float_matmul(q, Flex::float_transpose(k));
        let s_k = dims4(&scores)[3];
        let bias = bias.as_ref().and_then(contiguous);
        let bias_values = bias.as_ref().map(values);
        let bias_batch = bias.as_ref().map_or(1, |t| t.shape()[0].max(1));
        let scale = scale as f32;
        // Scale, bias and softmax in one pass over each row of scores, in place.
        let softmax = |row: &mut [f32], r: usize| {
            let bias_row = bias_values.map(|bv| {
                let (bi, i) = ((r / (h * s_q)) % bias_batch, r % s_q);
                &bv[(bi * s_q + i) * s_k..(bi * s_q + i + 1) * s_k]
            });
            let mut max = f32::NEG_INFINITY;
            for (j, t) in row.iter_mut().enumerate() {
                *t = *t * scale + bias_row.map_or(0.0, |b| b[j]);
                max = max.max(*t);
            }
            let mut sum = 0.0f32;
            for t in row.iter_mut() {
                *t = (*t - max).exp();
                sum += *t;
            }
            for t in row.iter_mut() {
                *t /= sum;
            }
        };
        let p = rows_in_place_or_copy(scores, s_k, softmax);
        (Flex::float_matmul(p.clone(), v), p)
    }

    fn frozen_attention_backward(
        grad: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        need: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        if grad.dtype() != DType::F32 {
            return composed::attention_backward::<Self>(grad, q, k, v, p, scale, need);
        }
        let h = dims4(&q)[1];
        let n_kv = dims4(&k)[1];
        let dv = need[2].then(|| {
            sum_groups(Flex::float_matmul(Flex::float_transpose(p.clone()), grad.clone()), n_kv)
        });
        if !need[0] && !need[1] {
            return [None, None, dv];
        }
        let v = repeat_kv(v, h, n_kv);
        let dp = Flex::float_matmul(grad, Flex::float_transpose(v));
        let s_k = dims4(&dp)[3];
        let Some(pc) = contiguous(&p) else { unreachable_f32() };
        let ps = values(&pc);
        let scale = scale as f32;
        // ds = p ⊙ (dp − rowsum(p ⊙ dp)) · scale, in place over dp.
        let ds_row = |dp: &mut [f32], r: usize| {
            let p = &ps[r * s_k..(r + 1) * s_k];
            let dot: f32 = p.iter().zip(dp.iter()).map(|(a, b)| a * b).sum();
            for (d, &pj) in dp.iter_mut().zip(p) {
                *d = pj * (*d - dot) * scale;
            }
        };
        let ds = rows_in_place_or_copy(dp, s_k, ds_row);
        let dq = need[0].then(|| Flex::float_matmul(ds.clone(), repeat_kv(k, h, n_kv)));
        let dk =
            need[1].then(|| sum_groups(Flex::float_matmul(Flex::float_transpose(ds), q), n_kv));
        [dq, dk, dv]
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3]]
}

/// f32 inputs give f32 products; the composed path handles every other dtype before this point.
fn unreachable_f32() -> ! {
    unreachable!("burn-flex returned a non-f32 product of f32 tensors")
}

fn repeat_kv(x: FlexTensor, n_heads: usize, n_kv: usize) -> FlexTensor {
    if n_heads == n_kv {
        return x;
    }
    super::prim(composed::repeat_kv(super::tensor::<Flex, 4>(x), n_heads))
}

fn sum_groups(x: FlexTensor, n_kv: usize) -> FlexTensor {
    super::prim(composed::sum_groups(super::tensor::<Flex, 4>(x), n_kv))
}
