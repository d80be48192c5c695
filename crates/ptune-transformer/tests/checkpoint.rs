//! Gradient checkpointing (`CheckpointedLayers`): the same outputs and the same gradients (input
//! embeddings and per-layer prefix keys/values, some layers without a prefix) as the plain pass,
//! on the tiny BERT and Llama fixtures, under every CPU backend's autodiff; and proof that the
//! forward keeps no graph (the output is a fresh leaf) and that layer ranges compose to the whole
//! pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use common::*;
use ptune_transformer::frozen::FrozenOps;
use ptune_transformer::{
    load_model, Backbone, BackboneInput, CheckpointedLayers, LayerPrefix, PrefixKv,
};

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
fn rel_diff<B: burn::tensor::backend::Backend, const D: usize>(
    a: Tensor<B, D>,
    r: Tensor<B, D>,
) -> f32 {
    let a: Vec<f32> = a.into_data().convert::<f32>().to_vec().unwrap();
    let r: Vec<f32> = r.into_data().convert::<f32>().to_vec().unwrap();
    assert_eq!(a.len(), r.len());
    assert!(r.iter().any(|x| *x != 0.0), "reference is all zeros: the check would be vacuous");
    let scale = r.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(&r).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Output and gradients (embeddings, then each layer's prefix key and value) of
/// `sum(forward(embeds, prefix) · w)`, with or without checkpointing.
#[allow(clippy::type_complexity)]
fn run<B: AutodiffBackend + FrozenOps>(
    model: &dyn Backbone<B>,
    embeds: &Tensor<B::InnerBackend, 3>,
    prefix: &[(Tensor<B::InnerBackend, 4>, Tensor<B::InnerBackend, 4>)],
    padding: &Tensor<B::InnerBackend, 2, Bool>,
    w: &Tensor<B::InnerBackend, 3>,
    checkpoint: bool,
) -> (Tensor<B::InnerBackend, 3>, Vec<Tensor<B::InnerBackend, 3>>, Vec<Tensor<B::InnerBackend, 4>>)
{
    let x = Tensor::<B, 3>::from_inner(embeds.clone()).require_grad();
    let kv: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = prefix
        .iter()
        .map(|(k, v)| {
            (
                Tensor::from_inner(k.clone()).require_grad(),
                Tensor::from_inner(v.clone()).require_grad(),
            )
        })
        .collect();
    // The last layer has no prefix: a mix of prefixed and plain layers.
    let mut layers: Vec<Option<LayerPrefix<B>>> =
        kv.iter().map(|(k, v)| Some(LayerPrefix { key: k.clone(), value: v.clone() })).collect();
    if let Some(last) = layers.last_mut() {
        *last = None;
    }
    let input = BackboneInput::new(x.clone())
        .with_padding_mask(Tensor::from_inner(padding.clone()))
        .with_prefix(PrefixKv { layers, row_lengths: None });
    let weight = Tensor::from_inner(w.clone());
    let grads = if checkpoint {
        let wrapped = CheckpointedLayers::new(model);
        let out = wrapped.forward(input).expect("forward");
        assert!(out.is_require_grad(), "the checkpointed output is a fresh leaf, not a graph");
        let value = out.clone().inner();
        (value, wrapped.backward((out * weight).sum()).expect("backward"))
    } else {
        let out = model.forward(input).expect("forward");
        (out.clone().inner(), vec![(out * weight).sum().backward()])
    };
    let (value, grads) = grads;
    // A leaf's gradient: the sum over the backward passes that reached it.
    let grad_of = |t: &Tensor<B, 4>| {
        grads.iter().filter_map(|g| t.grad(g)).reduce(|a, b| a + b).expect("prefix gradient")
    };
    let mut prefix_grads = Vec::new();
    for (k, v) in kv.iter().take(kv.len() - 1) {
        prefix_grads.push(grad_of(k));
        prefix_grads.push(grad_of(v));
    }
    let embed_grad =
        grads.iter().filter_map(|g| x.grad(g)).reduce(|a, b| a + b).expect("embedding gradient");
    (value, vec![embed_grad], prefix_grads)
}

/// Layers run in pieces (`with_layers`) compose to the whole pass.
fn check_pieces<B: FrozenOps>(name: &str) {
    let device = Default::default();
    let loaded = load_model::<B>(&fixtures_dir().join(name), &device).expect("load");
    let model = loaded.backbone.as_dyn();
    let dims = model.dims();
    let embeds = Tensor::<B, 3>::random([2, 5, dims.hidden_size], Distribution::Default, &device);
    let whole = model.forward(BackboneInput::new(embeds.clone())).expect("forward");
    let mut x = embeds;
    for l in 0..dims.num_layers {
        x = model.forward(BackboneInput::new(x).with_layers(l..l + 1)).expect("piece");
    }
    let d = rel_diff(x, whole);
    assert!(d < 1e-6, "{name}: layers run one by one differ from the whole pass by {d}");
    let (start, end) = (dims.num_layers + 1, dims.num_layers);
    let bad = model.forward(
        BackboneInput::new(Tensor::zeros([1, 2, dims.hidden_size], &device))
            .with_layers(start..end),
    );
    assert!(bad.is_err(), "an empty layer range is an error");
}

fn check_model<B: AutodiffBackend + FrozenOps>(name: &str) {
    let device = Default::default();
    let loaded = load_model::<B>(&fixtures_dir().join(name), &device).expect("load");
    let model = loaded.backbone.as_dyn();
    let dims = model.dims();
    let (b, s, n) = (2, 6, 3);
    let normal = Distribution::Normal(0.0, 1.0);
    let embeds = Tensor::<B::InnerBackend, 3>::random([b, s, dims.hidden_size], normal, &device);
    let prefix: Vec<_> = (0..dims.num_layers)
        .map(|_| {
            let shape = [1, dims.num_kv_heads, n, dims.head_dim];
            (Tensor::random(shape, normal, &device), Tensor::random(shape, normal, &device))
        })
        .collect();
    let mut pad = vec![false; b * s];
    pad[b * s - 1] = true;
    let padding = Tensor::from_bool(TensorData::new(pad, [b, s]), &device);
    let w = Tensor::<B::InnerBackend, 3>::random([b, s, dims.hidden_size], normal, &device);

    let (out, g, pg) = run::<B>(model, &embeds, &prefix, &padding, &w, false);
    let (out_c, g_c, pg_c) = run::<B>(model, &embeds, &prefix, &padding, &w, true);
    // On ndarray Burn's autodiff divides through an approximate SIMD reciprocal, used only on
    // aligned buffers, so two identical computations can differ by ~1e-4 (see frozen_ops.rs).
    let tol = if std::any::type_name::<B>().contains("NdArray") { 3e-4 } else { 1e-5 };
    let d = rel_diff(out_c, out);
    assert!(d < tol, "{name}: checkpointed output differs by {d}");
    let d = rel_diff(g_c[0].clone(), g[0].clone());
    assert!(d < tol, "{name}: checkpointed embedding gradient differs by {d}");
    assert_eq!(pg.len(), pg_c.len());
    assert!(!pg.is_empty());
    for (i, (a, r)) in pg_c.into_iter().zip(pg).enumerate() {
        let d = rel_diff(a, r);
        assert!(d < tol, "{name}: checkpointed prefix gradient {i} differs by {d}");
    }
}

#[test]
fn layer_pieces_compose() {
    check_pieces::<Flex>("tiny-bert");
    check_pieces::<Flex>("tiny-llama");
}

#[test]
fn checkpointed_bert_matches_plain_on_flex() {
    check_model::<Autodiff<Flex>>("tiny-bert");
}

#[test]
fn checkpointed_llama_matches_plain_on_flex() {
    check_model::<Autodiff<Flex>>("tiny-llama");
}

#[test]
fn checkpointed_models_match_plain_on_ndarray() {
    check_model::<Autodiff<NdArray>>("tiny-bert");
    check_model::<Autodiff<NdArray>>("tiny-llama");
}
