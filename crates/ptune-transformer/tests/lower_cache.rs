//! The lower-layer cache (`CachedLowerLayers`): with a prefix on the top layer only, rows served
//! from the cache in a new batch (another order, another padded length, beside a new row) give the
//! plain pass's values at every real position and the same prefix gradients; the cache is really
//! hit; batches it cannot serve (padding not at the end, a prefix on layer 0) run uncached.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor, TensorData};
use common::*;
use ptune_transformer::frozen::FrozenOps;
use ptune_transformer::{
    load_model, AnyBackbone, Backbone, BackboneInput, CachedLowerLayers, LayerPrefix, PrefixKv,
};

type B = Autodiff<Flex>;
type Inner = <B as AutodiffBackend>::InnerBackend;

/// Largest difference at real positions (`lengths[r]` first tokens of row `r`), relative to the
/// reference's largest magnitude there.
fn diff_real(a: Tensor<Inner, 3>, r: Tensor<Inner, 3>, lengths: &[usize]) -> f32 {
    let [_, s, d] = r.dims();
    let a: Vec<f32> = a.into_data().to_vec().unwrap();
    let r: Vec<f32> = r.into_data().to_vec().unwrap();
    let (mut worst, mut scale) = (0.0f32, 1.0f32);
    for (row, &len) in lengths.iter().enumerate() {
        for i in row * s * d..(row * s + len) * d {
            worst = worst.max((a[i] - r[i]).abs());
            scale = scale.max(r[i].abs());
        }
    }
    assert!(scale > 0.0);
    worst / scale
}

/// Embeddings of the rows `ids` (token ids of the fixture's vocabulary), right-padded with id 0,
/// and the padding mask.
fn batch<Bk: FrozenOps>(
    model: &AnyBackbone<Bk>,
    rows: &[Vec<i64>],
) -> (Tensor<Bk, 3>, Tensor<Bk, 2, burn::tensor::Bool>, Vec<usize>) {
    let device = Default::default();
    let s = rows.iter().map(Vec::len).max().unwrap();
    let ids: Vec<i64> =
        rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(s)).collect();
    let pad: Vec<bool> = rows.iter().flat_map(|r| (0..s).map(move |j| j >= r.len())).collect();
    let ids = Tensor::from_data(TensorData::new(ids, [rows.len(), s]), &device);
    let mask = Tensor::from_bool(TensorData::new(pad, [rows.len(), s]), &device);
    (model.embed(ids), mask, rows.iter().map(Vec::len).collect())
}

/// A prefix on the last layer only (`first` = the first prefixed layer = the cache's split).
fn top_prefix(model: &AnyBackbone<B>, keys: &Tensor<B, 4>, values: &Tensor<B, 4>) -> PrefixKv<B> {
    let n = model.dims().num_layers;
    let mut layers: Vec<Option<LayerPrefix<B>>> = vec![None; n];
    layers[n - 1] = Some(LayerPrefix { key: keys.clone(), value: values.clone() });
    PrefixKv { layers, row_lengths: None }
}

fn check(name: &str) {
    let device = Default::default();
    let model = load_model::<B>(&fixtures_dir().join(name), &device).expect("load").backbone;
    let dims = model.dims();
    let shape = [1, dims.num_kv_heads, 3, dims.head_dim];
    let normal = Distribution::Normal(0.0, 1.0);
    let keys0 = Tensor::<Inner, 4>::random(shape, normal, &device);
    let values0 = Tensor::<Inner, 4>::random(shape, normal, &device);
    let cache = CachedLowerLayers::new(&model);

    // Output and prefix-key gradient of `sum(out · w)` through `backbone`, at the real positions.
    let run = |backbone: &dyn Backbone<B>, rows: &[Vec<i64>]| {
        let (embeds, mask, lengths) = batch(&model, rows);
        let keys = Tensor::<B, 4>::from_inner(keys0.clone()).require_grad();
        let values = Tensor::<B, 4>::from_inner(values0.clone()).require_grad();
        let input = BackboneInput::new(embeds)
            .with_padding_mask(mask)
            .with_prefix(top_prefix(&model, &keys, &values));
        let out = backbone.forward(input).expect("forward");
        let [b, s, d] = out.dims();
        // A fixed weight on real positions only (padded ones are not defined with the cache).
        let w: Vec<f32> = (0..b * s * d)
            .map(|i| {
                let (row, j) = (i / (s * d), (i / d) % s);
                if j < lengths[row] {
                    ((i * 7919) % 13) as f32 / 13.0 - 0.5
                } else {
                    0.0
                }
            })
            .collect();
        let w = Tensor::<Inner, 3>::from_data(TensorData::new(w, [b, s, d]), &Default::default());
        let grads = (out.clone() * Tensor::from_inner(w.clone())).sum().backward();
        (out.inner(), keys.grad(&grads).expect("prefix gradient"), lengths, w)
    };

    let first_rows = vec![vec![5, 9, 17, 3], vec![7, 8], vec![11, 12, 13, 14, 15, 16]];
    let second_rows = vec![vec![7, 8], vec![21, 22, 23], vec![5, 9, 17, 3]];
    for (round, rows) in [&first_rows, &second_rows].into_iter().enumerate() {
        let (plain, plain_g, lengths, _) = run(&model, rows);
        let (cached, cached_g, _, _) = run(&cache, rows);
        let d = diff_real(cached, plain, &lengths);
        assert!(d < 1e-5, "{name} round {round}: cached output differs by {d} at real positions");
        let gk: Vec<f32> = cached_g.into_data().to_vec().unwrap();
        let pk: Vec<f32> = plain_g.into_data().to_vec().unwrap();
        assert!(pk.iter().any(|x| *x != 0.0));
        let worst = gk.iter().zip(&pk).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = pk.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        assert!(worst / scale < 1e-5, "{name} round {round}: prefix gradient differs by {worst}");
    }
    // Round 1 computed 3 rows; round 2 found two of its three rows.
    assert_eq!(cache.stats(), (2, 4), "{name}: cache hits and misses");

    // Padding at the start of a row: served uncached (the counters do not move), still exact.
    let (embeds, _, _) = batch(&model, &[vec![5, 9, 17, 3], vec![7, 8, 1, 2]]);
    let left = Tensor::from_bool(
        TensorData::new(vec![false, false, false, false, true, false, false, false], [2, 4]),
        &device,
    );
    let keys = Tensor::<B, 4>::from_inner(keys0.clone());
    let values = Tensor::<B, 4>::from_inner(values0.clone());
    let input = BackboneInput::new(embeds)
        .with_padding_mask(left)
        .with_prefix(top_prefix(&model, &keys, &values));
    let a = cache.forward(input.clone()).unwrap().inner();
    let b = model.forward(input).unwrap().inner();
    assert!(diff_real(a, b, &[4, 4]) == 0.0);
    assert_eq!(cache.stats(), (2, 4), "{name}: a left-padded batch does not use the cache");
}

#[test]
fn cached_lower_layers_match_plain_bert() {
    check("tiny-bert");
}

#[test]
fn cached_lower_layers_match_plain_llama() {
    check("tiny-llama");
}
