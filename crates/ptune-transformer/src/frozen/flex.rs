//! Fused burn-flex kernels for [`FrozenOps`]: each norm, activation and softmax is one
//! multi-threaded pass over rows (rayon), where the composed form runs 5–12 full passes, most of
//! them single-threaded. Each pass is compiled for the CPU's widest SIMD instruction set
//! ([`simd`]) with branch-free `exp` / `erf` ([`super::fastmath`]) so its loops vectorize.
//! Matrix products go through [`super::gemm`] (the gemm crate writing into buffers of ours), with
//! burn-flex's own product where that declines. Tensors that are not f32 take the composed path.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use rayon::prelude::*;

use super::fastmath::{erf, exp, simd};
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

/// `n` zeros, written into a plain allocation. (`vec![0.0; n]` asks the allocator for zeroed
/// memory, which for large buffers it provides by handing dirty pages back to the kernel and
/// faulting fresh ones in: one page fault per 4 KiB of every activation. A reused allocation
/// filled by a write pass costs a fraction of that; measured in `docs/performance.md`.)
pub(super) fn zeroed(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0f32);
    v
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
    let mut out = zeroed(input.len());
    let per = rows_per_task(row_len);
    out.par_chunks_mut(per * row_len).zip(input.par_chunks(per * row_len)).enumerate().for_each(
        |(task, (out, input))| {
            simd(
                #[inline(always)]
                || {
                    for (i, (o, x)) in
                        out.chunks_mut(row_len).zip(input.chunks(row_len)).enumerate()
                    {
                        f(x, o, task * per + i);
                    }
                },
            )
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
        simd(
            #[inline(always)]
            || {
                for (i, row) in rows.chunks_mut(row_len).enumerate() {
                    f(row, task * per + i);
                }
            },
        )
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
    let mut out = zeroed(a.len());
    out.par_chunks_mut(MIN_TASK).zip(a.par_chunks(MIN_TASK).zip(b.par_chunks(MIN_TASK))).for_each(
        |(o, (a, b))| {
            simd(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = f(a, b);
                    }
                },
            )
        },
    );
    out
}

/// HF's exact GELU, `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu(v: f32) -> f32 {
    v * (0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)))
}

/// One row of a norm: writes `y = x̂·γ (+ β)` (and `x̂` when asked), returns `rstd`.
#[inline(always)]
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
        NormKind::Layer => sum_lanes(x, |v| v) * inv_d,
        NormKind::Rms => 0.0,
    };
    let var = sum_lanes(x, |v| (v - mean) * (v - mean)) * inv_d;
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

/// Lanes of the vectorized reductions (an AVX-512 register of f32).
const LANES: usize = 16;

/// `Σ f(x)`, accumulated in [`LANES`] independent sums so that the loop vectorizes.
#[inline(always)]
fn sum_lanes(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ a·b` over two equal-length slices, in [`LANES`] independent sums.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The largest element, in [`LANES`] independent maxima.
#[inline(always)]
fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `a · b` through [`super::gemm::matmul`], or burn-flex's own product where that declines.
fn mm(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    super::gemm::matmul(&a, &b, None).unwrap_or_else(|| Flex::float_matmul(a, b))
}

impl FrozenOps for Flex {
    fn frozen_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let bias_values = bias.as_ref().and_then(contiguous);
        if bias.is_none() || bias_values.is_some() {
            if let Some(y) = super::gemm::matmul(&x, &weight, bias_values.as_ref().map(values)) {
                return y;
            }
        }
        composed::linear::<Self>(x, weight, bias)
    }

    fn frozen_linear_backward(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        mm(grad, weight.transpose(0, 1))
    }

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
        let y = map_rows(
            xs,
            d,
            #[inline(always)]
            |x, y, _| {
                norm_row(x, gs, bs, eps as f32, kind, y, None);
            },
        );
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
        let mut y = zeroed(xs.len());
        let mut xhat = zeroed(xs.len());
        let mut rstd = zeroed(n);
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
        let out = map_rows(
            gs,
            d,
            #[inline(always)]
            |g, o, row| {
                let x = &xhs[row * d..(row + 1) * d];
                let inv_d = 1.0 / d as f32;
                let (mut acc_gg, mut acc_ggx) = ([0.0f32; LANES], [0.0f32; LANES]);
                let (mut sum_gg, mut sum_ggx) = (0.0f32, 0.0f32);
                for j0 in (0..d).step_by(LANES) {
                    if j0 + LANES <= d {
                        for l in 0..LANES {
                            let gg = g[j0 + l] * gms[j0 + l];
                            acc_gg[l] += gg;
                            acc_ggx[l] += gg * x[j0 + l];
                        }
                    } else {
                        for j in j0..d {
                            let gg = g[j] * gms[j];
                            sum_gg += gg;
                            sum_ggx += gg * x[j];
                        }
                    }
                }
                sum_gg += acc_gg.iter().sum::<f32>();
                sum_ggx += acc_ggx.iter().sum::<f32>();
                let mean_gg = match kind {
                    NormKind::Layer => sum_gg * inv_d,
                    NormKind::Rms => 0.0,
                };
                let mean_ggx = sum_ggx * inv_d;
                let r = rss[row];
                for j in 0..d {
                    o[j] = r * (g[j] * gms[j] - mean_gg - x[j] * mean_ggx);
                }
            },
        );
        from_vec(out, shape)
    }

    fn frozen_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let mut x = x;
        if let Some(buf) = exclusive(&mut x) {
            // Nobody else holds the input (the inference path): overwrite it.
            buf.par_chunks_mut(MIN_TASK).for_each(|c| {
                simd(
                    #[inline(always)]
                    || c.iter_mut().for_each(|v| *v = gelu(*v)),
                )
            });
            return x;
        }
        let Some(xc) = contiguous(&x) else { return composed::gelu::<Self>(x) };
        let xs = values(&xc);
        let out = map2(
            xs,
            xs,
            #[inline(always)]
            |v, _| gelu(v),
        );
        from_vec(out, xc.shape())
    }

    fn frozen_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some(gc), Some(xc)) = (contiguous(&grad), contiguous(&x)) else {
            return composed::gelu_backward::<Self>(grad, x);
        };
        let inv_sqrt_2pi = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
        let out = map2(
            values(&gc),
            values(&xc),
            #[inline(always)]
            |g, v| {
                let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = exp(-0.5 * v * v) * inv_sqrt_2pi;
                g * (cdf + v * pdf)
            },
        );
        from_vec(out, gc.shape())
    }

    fn frozen_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some(gc), Some(uc)) = (contiguous(&gate), contiguous(&up)) else {
            return composed::swiglu::<Self>(gate, up);
        };
        let out = map2(
            values(&gc),
            values(&uc),
            #[inline(always)]
            |g, u| g * sigmoid(g) * u,
        );
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
        let mut d_gate = zeroed(ds.len());
        let mut d_up = zeroed(ds.len());
        d_gate
            .par_chunks_mut(MIN_TASK)
            .zip(d_up.par_chunks_mut(MIN_TASK))
            .zip(ds.par_chunks(MIN_TASK).zip(gs.par_chunks(MIN_TASK).zip(us.par_chunks(MIN_TASK))))
            .for_each(|((dg, du), (d, (g, u)))| {
                simd(
                    #[inline(always)]
                    || {
                        for i in 0..d.len() {
                            let s = sigmoid(g[i]);
                            du[i] = d[i] * g[i] * s;
                            dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                        }
                    },
                )
            });
        (from_vec(d_gate, shape.clone()), from_vec(d_up, shape))
    }

    fn frozen_cross_entropy_train(
        logits: FloatTensor<Self>,
        labels: &[usize],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let Some(xc) = contiguous(&logits) else {
            return composed::cross_entropy_train::<Self>(logits, labels);
        };
        let shape = xc.shape();
        let (n, c) = (shape[0], shape[1]);
        if labels.len() != n || labels.iter().any(|&l| l >= c) {
            return composed::cross_entropy_train::<Self>(logits, labels);
        }
        let xs = values(&xc);
        // One pass per row: max, then Σ exp(x − max); nothing of the row's size is written.
        let lse: Vec<f32> = xs
            .par_chunks(c.max(1))
            .map(|row| {
                simd(
                    #[inline(always)]
                    || {
                        let max = max_lanes(row);
                        max + sum_lanes(row, |v| exp(v - max)).ln()
                    },
                )
            })
            .collect();
        let total: f64 = lse
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(r, (&l, &y))| f64::from(l - xs[r * c + y]))
            .sum();
        let loss = (total / n.max(1) as f64) as f32;
        (from_vec(vec![loss], Shape::new([1])), from_vec(lse, Shape::new([n, 1])))
    }

    fn frozen_cross_entropy_backward(
        grad: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        labels: &[usize],
    ) -> FloatTensor<Self> {
        let (Some(gc), Some(lc)) = (contiguous(&grad), contiguous(&lse)) else {
            return composed::cross_entropy_backward::<Self>(grad, logits, lse, labels);
        };
        if logits.dtype() != DType::F32 {
            return composed::cross_entropy_backward::<Self>(grad, logits, lse, labels);
        }
        let c = logits.shape()[1];
        let scale = values(&gc).first().copied().unwrap_or(0.0) / labels.len().max(1) as f32;
        let lses = values(&lc);
        // In place over the logits when the graph held their only reference.
        rows_in_place_or_copy(
            logits,
            c,
            #[inline(always)]
            |row: &mut [f32], r: usize| {
                let l = lses[r];
                row.iter_mut().for_each(|v| *v = exp(*v - l) * scale);
                if let Some(v) = labels.get(r).and_then(|&y| row.get_mut(y)) {
                    *v -= scale;
                }
            },
        )
    }

    fn frozen_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        rope(x, cos, sin, false)
    }

    fn frozen_rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        rope(grad, cos, sin, true)
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
        let [b, h, s_q, d] = dims4(&q);
        let n_kv = dims4(&k)[1];
        if n_kv == 0 || h % n_kv != 0 {
            return composed::attention_train::<Self>(q, k, v, bias, scale);
        }
        // Grouped-query attention without copying keys and values once per query head: the
        // `h / n_kv` query heads that share a key/value head are consecutive, so the queries seen
        // as `[b, n_kv, (h / n_kv)·s_q, d]` (a free reshape) meet `k` and `v` as they are. Row
        // `r` of the scores is still query position `r % s_q` of batch row `r / (h·s_q)`.
        let q = q.reshape(Shape::from(vec![b, n_kv, (h / n_kv) * s_q, d]));
        let scores = mm(q, k.transpose(2, 3));
        let s_k = dims4(&scores)[3];
        let bias = bias.as_ref().and_then(contiguous);
        let bias_values = bias.as_ref().map(values);
        let bias_batch = bias.as_ref().map_or(1, |t| t.shape()[0].max(1));
        let scale = scale as f32;
        // Scale, bias and softmax in one pass over each row of scores, in place.
        let p = rows_in_place_or_copy(
            scores,
            s_k,
            #[inline(always)]
            |row: &mut [f32], r: usize| {
                let bias_row = bias_values.map(|bv| {
                    let (bi, i) = ((r / (h * s_q)) % bias_batch, r % s_q);
                    &bv[(bi * s_q + i) * s_k..(bi * s_q + i + 1) * s_k]
                });
                match bias_row {
                    Some(b) => row.iter_mut().zip(b).for_each(|(t, &b)| *t = *t * scale + b),
                    None => row.iter_mut().for_each(|t| *t *= scale),
                }
                let max = max_lanes(row);
                row.iter_mut().for_each(|t| *t = exp(*t - max));
                let sum = sum_lanes(row, |v| v);
                row.iter_mut().for_each(|t| *t /= sum);
            },
        );
        let d_v = dims4(&v)[3];
        let out = mm(p.clone(), v).reshape(Shape::from(vec![b, h, s_q, d_v]));
        (out, p.reshape(Shape::from(vec![b, h, s_q, s_k])))
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
        let dv = need[2].then(|| sum_groups(mm(p.transpose(2, 3), grad.clone()), n_kv));
        if !need[0] && !need[1] {
            return [None, None, dv];
        }
        let v = repeat_kv(v, h, n_kv);
        let dp = mm(grad, v.transpose(2, 3));
        let s_k = dims4(&dp)[3];
        let Some(pc) = contiguous(&p) else { unreachable_f32() };
        let ps = values(&pc);
        let scale = scale as f32;
        // ds = p ⊙ (dp − rowsum(p ⊙ dp)) · scale, in place over dp.
        let ds = rows_in_place_or_copy(
            dp,
            s_k,
            #[inline(always)]
            |dp: &mut [f32], r: usize| {
                let p = &ps[r * s_k..(r + 1) * s_k];
                let dot = dot_lanes(p, dp);
                for (d, &pj) in dp.iter_mut().zip(p) {
                    *d = pj * (*d - dot) * scale;
                }
            },
        );
        let dq = need[0].then(|| mm(ds.clone(), repeat_kv(k, h, n_kv)));
        let dk = need[1].then(|| sum_groups(mm(ds.transpose(2, 3), q), n_kv));
        [dq, dk, dv]
    }
}

/// The rotary embedding (or, with `transpose`, its backward) in one pass: each row of `x` read
/// through its strides (the heads view of a projection), written to a contiguous output. Forward:
/// `y_j = x_j·cos_j + r_j·sin_j` with `r = (−x[half..], x[..half])`; backward:
/// `y_j = x_j·cos_j + t_j` with `t = ((x·sin)[half..], −(x·sin)[..half])`.
///
/// # Shapes
/// - x: `[b, heads, s, head_dim]`, cos/sin: `[b | 1, 1, s, head_dim]` → `[b, heads, s, head_dim]`
fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, transpose: bool) -> FlexTensor {
    let composed = |x, cos, sin| composed::rope::<Flex>(x, cos, sin, transpose);
    let (Some(cc), Some(sc)) = (contiguous(&cos), contiguous(&sin)) else {
        return composed(x, cos, sin);
    };
    if x.dtype() != DType::F32 || x.shape().num_dims() != 4 || cc.shape().num_dims() != 4 {
        return composed(x, cos, sin);
    }
    let [b, h, s, hd] = dims4(&x);
    let cb = cc.shape()[0];
    let table = [cb, 1, s, hd];
    if hd % 2 != 0 || cb == 0 || dims4(&cc) != table || dims4(&sc) != table || b * h * s == 0 {
        return composed(x, cos, sin);
    }
    // Read x in place when its rows are contiguous and every row lies inside the buffer, else
    // from a contiguous copy.
    let strides: Option<Vec<usize>> =
        x.layout().strides().iter().map(|&v| usize::try_from(v).ok()).collect();
    let start = x.layout().start_offset();
    let in_place = strides.filter(|st| {
        let last = [b, h, s].iter().zip(st).map(|(&n, &st)| (n - 1) * st).sum::<usize>() + start;
        st[3] == 1 && last + hd <= x.storage::<f32>().len()
    });
    let (xt, st, start) = match in_place {
        Some(st) => (x, st, start),
        None => {
            let xc = x.to_contiguous();
            (xc, vec![h * s * hd, s * hd, hd, 1], 0)
        }
    };
    let (xs, cs, ss) = (xt.storage::<f32>(), values(&cc), values(&sc));
    let half = hd / 2;
    let mut out = zeroed(b * h * s * hd);
    out.par_chunks_mut(s * hd).enumerate().for_each(|(bh, rows)| {
        let (bi, hi) = (bh / h, bh % h);
        simd(
            #[inline(always)]
            || {
                for (si, y) in rows.chunks_mut(hd).enumerate() {
                    let at = start + bi * st[0] + hi * st[1] + si * st[2];
                    let x = &xs[at..at + hd];
                    let t = ((bi % cb) * s + si) * hd;
                    let (c, sn) = (&cs[t..t + hd], &ss[t..t + hd]);
                    for j in 0..half {
                        if transpose {
                            y[j] = x[j] * c[j] + x[j + half] * sn[j + half];
                            y[j + half] = x[j + half] * c[j + half] - x[j] * sn[j];
                        } else {
                            y[j] = x[j] * c[j] - x[j + half] * sn[j];
                            y[j + half] = x[j + half] * c[j + half] + x[j] * sn[j + half];
                        }
                    }
                }
            },
        )
    });
    from_vec(out, Shape::new([b, h, s, hd]))
}

/// `1/(1 + e^−x)`, branch-free (the fast `exp` saturates instead of overflowing).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
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
