//! One-line [`FrozenOps`] impls: these backends use the composed defaults. (burn-flex has fused
//! kernels of its own in `flex.rs`; the autodiff backend is in `autodiff.rs`.)

#[allow(unused_imports)]
use super::FrozenOps;

#[cfg(feature = "ndarray")]
impl FrozenOps for burn::backend::NdArray<f32> {}

/// f64, for the finite-difference tests.
#[cfg(feature = "ndarray")]
impl FrozenOps for burn::backend::NdArray<f64> {}

#[cfg(feature = "wgpu")]
impl FrozenOps for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl FrozenOps for burn::backend::Cuda {}
