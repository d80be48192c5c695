//! The KV cache operations continuous batching is built on, on the tiny Llama (flex and ndarray):
//! rows decoded together after their caches were joined (`append_rows`, padded to a common length)
//! and compacted (`select_rows` + `drop_padded_columns`) give the logits each row gives alone; a
//! prefix put in the cache (`prepend_prefix`) gives the logits of passing it at every step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use burn::backend::{Flex, NdArray};
use burn::tensor::{Distribution, Tensor};
use ptune_transformer::{
    ids_tensor, load_model, AnyBackbone, Backbone, BackboneInput, Decoder, FrozenOps, KvCache,
    LayerPrefix, PositionPolicy, PrefixKv,
};

fn tiny<B: FrozenOps>() -> AnyBackbone<B> {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    load_model::<B>(&path, &Default::default()).unwrap().backbone
}

fn values<B: FrozenOps>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{what}: max difference {worst}");
}

/// Runs `ids` (one row per entry, possibly of different lengths) as the first pass of a cache.
/// Returns the cache and each row's next-token logits.
fn prefill<B: FrozenOps>(
    model: &dyn Decoder<B>,
    rows: &[Vec<u32>],
    prefix: Option<&PrefixKv<B>>,
) -> (KvCache<B>, Vec<Vec<f32>>) {
    let device = model.embedding_matrix().device();
    let s = rows.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    let mut pad = Vec::new();
    for r in rows {
        flat.extend(r.iter().copied().chain(std::iter::repeat_n(0, s - r.len())));
        pad.extend((0..s).map(|i| i >= r.len()));
    }
    let ids = ids_tensor::<B>(&flat, &device).reshape([rows.len(), s]);
    let mask = Tensor::<B, 2, burn::tensor::Bool>::from_bool(
        burn::tensor::TensorData::new(pad, [rows.len(), s]),
        &device,
    );
    let mut input = BackboneInput::new(model.embed(ids)).with_padding_mask(mask);
    if let Some(p) = prefix {
        input = input.with_prefix(p.clone()).with_positions(PositionPolicy::Shift);
    }
    let mut cache = model.new_cache();
    let hidden = model.forward_cached(input, &mut cache).unwrap();
    let last: Vec<usize> = rows.iter().enumerate().map(|(i, r)| i * s + r.len() - 1).collect();
    let logits = values(model.logits_at(hidden, &last));
    let v = logits.len() / rows.len();
    (cache, logits.chunks(v).map(<[f32]>::to_vec).collect())
}

/// One decoding step: one token per row; returns each row's logits.
fn step<B: FrozenOps>(
    model: &dyn Decoder<B>,
    cache: &mut KvCache<B>,
    tokens: &[u32],
    prefix: Option<&PrefixKv<B>>,
) -> Vec<Vec<f32>> {
    let device = model.embedding_matrix().device();
    let ids = ids_tensor::<B>(tokens, &device).reshape([tokens.len(), 1]);
    let mut input = BackboneInput::new(model.embed(ids));
    if let Some(p) = prefix {
        input = input.with_prefix(p.clone()).with_positions(PositionPolicy::Shift);
    }
    let logits = model.logits(model.forward_cached(input, cache).unwrap());
    let [b, _, v] = logits.dims();
    values(logits.reshape([b, v])).chunks(v).map(<[f32]>::to_vec).collect()
}

fn joined_rows_decode_as_alone<B: FrozenOps>() {
    let backbone = tiny::<B>();
    let model = backbone.as_decoder().unwrap();
    let rows = [vec![5u32, 17, 33], vec![9u32, 4, 41, 60, 7, 2 + 20], vec![11u32]];
    let tokens = [[3u32, 8, 13], [21, 34, 55], [89, 44, 6]];
    // Alone: each row's logits after its prompt and after each of three tokens.
    let alone: Vec<Vec<Vec<f32>>> = rows
        .iter()
        .enumerate()
        .map(|(r, ids)| {
            let (mut cache, first) = prefill(model, std::slice::from_ref(ids), None);
            let mut out = vec![first[0].clone()];
            for t in &tokens[r] {
                out.push(step(model, &mut cache, &[*t], None)[0].clone());
            }
            out
        })
        .collect();
    // Joined: rows 0 and 1 prefilled together, row 2 joins after one step, row 1 leaves after two.
    let (mut cache, first) = prefill(model, &rows[..2], None);
    assert_close("prefill 0", &first[0], &alone[0][0]);
    assert_close("prefill 1", &first[1], &alone[1][0]);
    let out = step(model, &mut cache, &[tokens[0][0], tokens[1][0]], None);
    assert_close("row 0, step 1", &out[0], &alone[0][1]);
    assert_close("row 1, step 1", &out[1], &alone[1][1]);
    let (joining, first) = prefill(model, &rows[2..], None);
    assert_close("prefill 2", &first[0], &alone[2][0]);
    cache.append_rows(joining).unwrap();
    assert_eq!(cache.rows(), 3);
    let out = step(model, &mut cache, &[tokens[0][1], tokens[1][1], tokens[2][0]], None);
    assert_close("row 0, step 2", &out[0], &alone[0][2]);
    assert_close("row 1, step 2", &out[1], &alone[1][2]);
    assert_close("row 2, step 1", &out[2], &alone[2][1]);
    // Row 1 (the longest) leaves: the columns only it used go.
    let before = cache.len();
    cache.select_rows(&[0, 2]);
    cache.drop_padded_columns();
    assert!(
        cache.len() < before,
        "{} slots after the longest row left, {before} before",
        cache.len()
    );
    let out = step(model, &mut cache, &[tokens[0][2], tokens[2][1]], None);
    assert_close("row 0, step 3", &out[0], &alone[0][3]);
    assert_close("row 2, step 2", &out[1], &alone[2][2]);
}

fn a_prefix_in_the_cache_equals_a_prefix_passed<B: FrozenOps>() {
    let backbone = tiny::<B>();
    let model = backbone.as_decoder().unwrap();
    let dims = backbone.dims();
    let device = Default::default();
    let n = 3;
    let layers = (0..dims.num_layers)
        .map(|_| {
            let shape = [1, dims.num_kv_heads, n, dims.head_dim];
            Some(LayerPrefix {
                key: Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device),
                value: Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device),
            })
        })
        .collect();
    // Two rows: the first uses 2 of the 3 slots, the second all 3.
    let prefix = PrefixKv { layers, row_lengths: Some(vec![2, 3]) };
    let rows = [vec![5u32, 17, 33, 40], vec![9u32, 4]];
    let (mut passed, first_a) = prefill(model, &rows, Some(&prefix));
    let (mut cached, first_b) = prefill(model, &rows, Some(&prefix));
    assert!(cached.prepend_prefix(&prefix).unwrap());
    assert_eq!(cached.len(), passed.len() + n);
    assert_close("first token", &first_a.concat(), &first_b.concat());
    for (k, t) in [[7u32, 8], [12, 99], [3, 3]].iter().enumerate() {
        let a = step(model, &mut passed, t, Some(&prefix));
        let b = step(model, &mut cached, t, None);
        assert_close(&format!("step {k}"), &a.concat(), &b.concat());
    }
    // A prefix on some layers only cannot go in the cache.
    let mut partial = prefix.clone();
    partial.layers[0] = None;
    let (mut cache, _) = prefill(model, &rows, Some(&partial));
    assert!(!cache.prepend_prefix(&partial).unwrap());
}

#[test]
fn joined_rows_decode_as_alone_on_flex_and_ndarray() {
    joined_rows_decode_as_alone::<Flex>();
    joined_rows_decode_as_alone::<NdArray>();
}

#[test]
fn a_prefix_in_the_cache_equals_a_prefix_passed_on_flex_and_ndarray() {
    a_prefix_in_the_cache_equals_a_prefix_passed::<Flex>();
    a_prefix_in_the_cache_equals_a_prefix_passed::<NdArray>();
}
