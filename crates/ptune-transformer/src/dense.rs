//! Dense projections of a batch of sequences as one matrix product.
//!
//! Burn's `Linear` on a `[b, s, d_in]` input runs `b` batched products of `[s, d_in]` by the
//! shared weight. Folding the batch into the rows makes one `[b·s, d_in]` product instead; the
//! result is the same up to summation order. The product is the frozen op
//! [`crate::frozen::linear`]: one autodiff node whose backward is `g·Wᵀ`, and on
//! burn-flex one gemm call that writes the output (bias included) once.

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::frozen::{self, FrozenOps};

/// `x · weight (+ bias)` over every position at once.
///
/// # Shapes
/// - x: `[b, s, d_in]`, weight: `[d_in, d_out]`, bias: `[d_out]` → `[b, s, d_out]`
pub fn project<B: FrozenOps>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let [b, s, d_in] = x.dims();
    let d_out = weight.dims()[1];
    frozen::linear(x.reshape([b * s, d_in]), weight, bias).reshape([b, s, d_out])
}

/// A `Linear` layer applied through [`project`].
///
/// # Shapes
/// - x: `[b, s, d_in]` → `[b, s, d_out]`
pub fn dense<B: FrozenOps>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    project(x, linear.weight.val(), linear.bias.as_ref().map(|bias| bias.val()))
}
