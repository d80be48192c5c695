//! Fixture reading and numeric comparison shared by the parity tests.
#![allow(dead_code)]

use ptune_transformer::FrozenOps;
use std::path::PathBuf;

use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde_json::Value;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The models fetched by `cargo xtask fetch` (`$PTUNE_CACHE/models`, default `~/.cache/ptune/models`).
pub fn fetched_model(name: &str) -> PathBuf {
    let cache = std::env::var_os("PTUNE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache").join("ptune")
    });
    let path = cache.join("models").join(name);
    assert!(path.exists(), "{} missing: run `cargo xtask fetch {name}`", path.display());
    path
}

pub fn shape(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|x| x.as_u64().expect("dim") as usize)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v["data"].as_array().expect("data").iter().map(|x| x.as_f64().expect("float") as f32).collect()
}

pub fn ints(v: &Value) -> Vec<i64> {
    v["data"].as_array().expect("data").iter().map(|x| x.as_i64().expect("int")).collect()
}

pub fn float_tensor<B: FrozenOps, const D: usize>(v: &Value, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(floats(v), shape(v)), device)
}

pub fn int_tensor<B: FrozenOps, const D: usize>(
    v: &Value,
    device: &B::Device,
) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(ints(v), shape(v)), device)
}

/// HF attention mask (1 = token, 0 = padding) → ptune padding mask (`true` = padding).
pub fn padding_mask<B: FrozenOps>(v: &Value, device: &B::Device) -> Tensor<B, 2, Bool> {
    let data: Vec<bool> = ints(v).into_iter().map(|x| x == 0).collect();
    Tensor::from_bool(TensorData::new(data, shape(v)), device)
}

pub fn to_vec<B: FrozenOps, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data")
}

/// Asserts `actual` matches `expected` within `tol` (absolute) wherever `keep(index)` holds, and that
/// the comparison covered something; returns the max absolute difference.
pub fn assert_close_where(
    what: &str,
    actual: &[f32],
    expected: &[f32],
    tol: f32,
    keep: impl Fn(usize) -> bool,
) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut max = 0f32;
    let mut compared = 0;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if !keep(i) {
            continue;
        }
        assert!(a.is_finite(), "{what}: non-finite value at {i}");
        max = max.max((a - e).abs());
        compared += 1;
    }
    assert!(compared > 0, "{what}: nothing compared");
    assert!(max <= tol, "{what}: max |diff| {max:e} > {tol:e}");
    eprintln!("{what}: max |diff| = {max:e} over {compared} values");
    max
}

pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], tol: f32) -> f32 {
    assert_close_where(what, actual, expected, tol, |_| true)
}

/// Index filter for `[b, s, width]` data keeping only (row, position) pairs where `mask` (HF, 1 = token) is 1.
pub fn valid_positions(mask: &[i64], seq: usize, width: usize) -> impl Fn(usize) -> bool + '_ {
    move |i| {
        let (row, pos) = (i / (seq * width), (i / width) % seq);
        mask[row * seq + pos] == 1
    }
}
