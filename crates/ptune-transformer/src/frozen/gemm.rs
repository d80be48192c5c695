//! Matrix products of the burn-flex kernels, written by the gemm crate straight into a buffer of
//! ours.
//!
//! burn-flex 0.21 runs the same gemm crate, but creates every product's output with
//! `FlexTensor::empty`, whose byte buffer (alignment 1) is reallocated at 16-byte alignment and
//! copied once before gemm writes it: a full extra pass, and a page fault per 4 KiB of the copy,
//! for every projection and attention product (measured in `docs/performance.md`). Here the output
//! is an `f32` vector from the start, and a projection's bias is its initial value (gemm adds the
//! product to it), so the bias costs no pass of its own either.
//!
//! This is the one module of the crate that uses `unsafe`: the gemm crate's entry point takes raw
//! pointers and strides. Every view is checked against its buffer before the call (see
//! [`Matrices::new`]), so each element gemm reads or writes lies inside a slice we hold.
#![allow(unsafe_code)]

use std::sync::Mutex;
use std::time::Instant;

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use rayon::prelude::*;

/// The shape of one product this module ran: `batch` products of `[m, k]·[k, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProductShape {
    /// Matrices in the batch.
    pub batch: usize,
    /// Rows of the left operand.
    pub m: usize,
    /// The shared dimension.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
    /// Whether one right operand (a weight) serves the whole batch.
    pub shared_rhs: bool,
}

impl ProductShape {
    /// Floating-point operations (a multiply-add counts two).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.k * self.n) as f64
    }
}

/// Shapes recorded since [`record_products`]`(true)` (`None`: not recording).
static RECORDED: Mutex<Option<Vec<ProductShape>>> = Mutex::new(None);

fn recorded() -> std::sync::MutexGuard<'static, Option<Vec<ProductShape>>> {
    RECORDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts (clearing what was kept) or stops recording the shape of every product the flex
/// kernels run. The benchmark records one step, then times the same shapes alone
/// ([`time_product`]) for its product-bound limit.
pub fn record_products(on: bool) {
    *recorded() = on.then(Vec::new);
}

/// The shapes recorded so far (empty when not recording).
pub fn recorded_products() -> Vec<ProductShape> {
    recorded().clone().unwrap_or_default()
}

/// Seconds one product of `shape` takes on its own (best of `reps`), on contiguous operands
/// made for the purpose, through the same kernel as in the model.
pub fn time_product(shape: ProductShape, reps: usize) -> f64 {
    let ProductShape { batch, m, k, n, shared_rhs } = shape;
    let filled = |len: usize, dims: Vec<usize>| {
        let values: Vec<f32> = (0..len).map(|i| ((i % 251) as f32 - 125.0) * 1e-3).collect();
        FlexTensor::from_data(TensorData::new(values, Shape::from(dims)))
    };
    let lhs = filled(batch * m * k, vec![batch, m, k]);
    let rhs = if shared_rhs {
        filled(k * n, vec![k, n])
    } else {
        filled(batch * k * n, vec![batch, k, n])
    };
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let out = product(&lhs, &rhs, None, false);
        best = best.min(start.elapsed().as_secs_f64());
        drop(out);
    }
    best
}

/// Products with at least this many multiply-adds per matrix use gemm's own threads; smaller
/// ones are spread over the batch instead (burn-flex's threshold).
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// A batch of strided f32 matrices `[batch.., rows, cols]` inside one buffer, every element
/// checked to lie inside it.
struct Matrices<'a> {
    data: &'a [f32],
    /// Offset of each matrix of the batch, in row-major batch order.
    offsets: Vec<usize>,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrices<'a> {
    /// The matrices of `t` (rank ≥ 2, f32, non-negative strides), or `None` when its layout is
    /// of another kind or any element would fall outside its buffer.
    fn new(t: &'a FlexTensor) -> Option<Self> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let layout = t.layout();
        let shape = layout.shape();
        let rank = shape.num_dims();
        if rank < 2 || shape.num_elements() == 0 {
            return None;
        }
        let strides: Vec<usize> =
            layout.strides().iter().map(|&s| usize::try_from(s).ok()).collect::<Option<_>>()?;
        let data = t.storage::<f32>();
        let start = layout.start_offset();
        // The largest index any element reaches must lie inside the buffer.
        let mut last = start;
        for d in 0..rank {
            last = last.checked_add((shape[d] - 1).checked_mul(strides[d])?)?;
        }
        if last >= data.len() {
            return None;
        }
        let mut offsets = vec![start];
        for d in 0..rank - 2 {
            let (size, stride) = (shape[d], strides[d]);
            offsets =
                offsets.iter().flat_map(|&o| (0..size).map(move |i| o + i * stride)).collect();
        }
        Some(Self {
            data,
            offsets,
            rows: shape[rank - 2],
            cols: shape[rank - 1],
            row_stride: strides[rank - 2],
            col_stride: strides[rank - 1],
        })
    }
}

/// `lhs · rhs (+ bias)` over the last two dimensions, or `None` (the caller then uses burn-flex's
/// own product) when the operands are not f32 views that [`Matrices`] accepts, the batch
/// dimensions differ, or a dimension is empty. `rhs` may be a single matrix shared by the whole
/// batch (a weight); `bias` (`[n]`) is added to every row.
///
/// # Shapes
/// - lhs: `[.., m, k]`, rhs: `[.., k, n]` or `[k, n]`, bias: `[n]` → `[.., m, n]`
pub(super) fn matmul(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    bias: Option<&[f32]>,
) -> Option<FlexTensor> {
    product(lhs, rhs, bias, true)
}

/// [`matmul`], recording its shape when `record` and recording is on.
fn product(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    bias: Option<&[f32]>,
    record: bool,
) -> Option<FlexTensor> {
    let (a, b) = (Matrices::new(lhs)?, Matrices::new(rhs)?);
    let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
    let rank = lhs_shape.num_dims();
    let batch = a.offsets.len();
    let shared_rhs = rhs_shape.num_dims() == 2;
    if !shared_rhs
        && (rhs_shape.num_dims() != rank || (0..rank - 2).any(|d| rhs_shape[d] != lhs_shape[d]))
    {
        return None;
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || bias.is_some_and(|bias| bias.len() != n) {
        return None;
    }
    let size = m.checked_mul(n)?;
    if record {
        if let Some(shapes) = recorded().as_mut() {
            shapes.push(ProductShape { batch, m, k, n, shared_rhs });
        }
    }
    let mut out = match bias {
        Some(bias) => bias.repeat(m.checked_mul(batch)?),
        None => super::flex::zeroed(size.checked_mul(batch)?),
    };
    let read_dst = bias.is_some();
    let one = |dst: &mut [f32], i: usize, parallelism: gemm::Parallelism| {
        let (a_off, b_off) = (a.offsets[i], b.offsets[if shared_rhs { 0 } else { i }]);
        debug_assert_eq!(dst.len(), size);
        // SAFETY: `Matrices::new` checked that every element `offset + r·row_stride +
        // c·col_stride` (r < rows, c < cols) of both operands lies inside its slice, and `dst`
        // is an exclusive slice of exactly `m·n` elements written at `r·n + c`. The strides fit
        // in `isize` because the offsets they produce index real slices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                a.data.as_ptr().add(a_off),
                a.col_stride as isize,
                a.row_stride as isize,
                b.data.as_ptr().add(b_off),
                b.col_stride as isize,
                b.row_stride as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    let work = m.saturating_mul(n).saturating_mul(k);
    if work >= PARALLEL_THRESHOLD || batch == 1 {
        let parallelism = if work >= PARALLEL_THRESHOLD {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        for (i, dst) in out.chunks_mut(size).enumerate() {
            one(dst, i, parallelism);
        }
    } else {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, dst)| one(dst, i, gemm::Parallelism::None));
    }
    let mut dims: Vec<usize> = (0..rank - 2).map(|d| lhs_shape[d]).collect();
    dims.extend([m, n]);
    Some(FlexTensor::from_data(TensorData::new(out, Shape::from(dims))))
}
