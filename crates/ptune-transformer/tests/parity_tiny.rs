//! Tiny random BERT, RoBERTa, Llama and Qwen2 (made by scripts/gen_reference.py) against HF
//! transformers 4.57.6: plain, with a padding mask, with a prefix passed as past_key_values; on every
//! CPU backend and (feature `wgpu`) on wgpu. The checks run through the `Backbone` / `Encoder` / `Decoder` traits, so one
//! check serves every model of a kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use burn::tensor::Tensor;
use common::*;
use ptune_transformer::FrozenOps;
use ptune_transformer::{
    load_model, AnyBackbone, Backbone, BackboneInput, LayerPrefix, PositionPolicy, PrefixKv,
    TransformerError,
};

fn load<B: FrozenOps>(name: &str) -> AnyBackbone<B> {
    load_model::<B>(&fixtures_dir().join(name), &Default::default()).expect("load").backbone
}

fn prefix<B: FrozenOps>(r: &serde_json::Value, device: &B::Device) -> PrefixKv<B> {
    let keys = r["prefix_keys"].as_array().expect("keys");
    let values = r["prefix_values"].as_array().expect("values");
    PrefixKv {
        layers: keys
            .iter()
            .zip(values)
            .map(|(k, v)| {
                Some(LayerPrefix { key: float_tensor(k, device), value: float_tensor(v, device) })
            })
            .collect(),
        row_lengths: None,
    }
}

/// An encoder fixture `tiny-<name>` against `tiny_<name>_reference.json`.
pub fn tiny_encoder<B: FrozenOps>(name: &str, tol: f32) {
    let device = Default::default();
    let r = fixture(&format!("tiny_{name}_reference.json"));
    let loaded = load::<B>(&format!("tiny-{name}"));
    let model = loaded.as_encoder().expect("an encoder");
    let ids = int_tensor::<B, 2>(&r["input_ids"], &device);
    let types = int_tensor::<B, 2>(&r["token_type_ids"], &device);
    let input = || BackboneInput::new(model.embed(ids.clone())).with_token_types(types.clone());

    let hidden = model.forward(input()).expect("forward");
    let what = |part: &str| format!("tiny {name} {part}");
    assert_close(&what("plain"), &to_vec(hidden.clone()), &floats(&r["plain_last_hidden"]), tol);
    let pooled = model.pooler(hidden).expect("pooler");
    assert_close(&what("pooled"), &to_vec(pooled), &floats(&r["plain_pooled"]), tol);

    let mask = ints(&r["attention_mask"]);
    let masked = model
        .forward(input().with_padding_mask(padding_mask(&r["attention_mask"], &device)))
        .unwrap();
    let keep = valid_positions(&mask, 7, 32);
    assert_close_where(
        &what("masked"),
        &to_vec(masked),
        &floats(&r["masked_last_hidden"]),
        tol,
        &keep,
    );

    let with_prefix = model
        .forward(
            input()
                .with_padding_mask(padding_mask(&r["attention_mask"], &device))
                .with_prefix(prefix(&r, &device)),
        )
        .unwrap();
    assert_close_where(
        &what("prefix"),
        &to_vec(with_prefix),
        &floats(&r["prefix_last_hidden"]),
        tol,
        &keep,
    );
}

/// A decoder fixture `tiny-<name>` against `tiny_<name>_reference.json`.
pub fn tiny_decoder<B: FrozenOps>(name: &str, tol: f32) {
    let device = Default::default();
    let r = fixture(&format!("tiny_{name}_reference.json"));
    let loaded = load::<B>(&format!("tiny-{name}"));
    let model = loaded.as_decoder().expect("a decoder");
    let ids = int_tensor::<B, 2>(&r["input_ids"], &device);
    let input = || BackboneInput::new(model.embed(ids.clone()));
    let what = |part: &str| format!("tiny {name} {part}");

    let hidden = model.forward(input()).unwrap();
    assert_close(&what("hidden"), &to_vec(hidden.clone()), &floats(&r["plain_last_hidden"]), tol);
    let logits = model.logits(hidden);
    assert_close(&what("logits"), &to_vec(logits.clone()), &floats(&r["plain_logits"]), tol);

    let mask = ints(&r["attention_mask"]);
    let keep = valid_positions(&mask, 6, 128);
    let masked = model.logits(
        model
            .forward(input().with_padding_mask(padding_mask(&r["attention_mask"], &device)))
            .unwrap(),
    );
    assert_close_where(&what("masked"), &to_vec(masked), &floats(&r["masked_logits"]), tol, &keep);

    let with_prefix = model.logits(
        model
            .forward(
                input()
                    .with_padding_mask(padding_mask(&r["attention_mask"], &device))
                    .with_prefix(prefix(&r, &device)),
            )
            .unwrap(),
    );
    assert_close_where(
        &what("prefix"),
        &to_vec(with_prefix),
        &floats(&r["prefix_logits"]),
        tol,
        &keep,
    );

    // KV cache: 4 tokens then 2 give the same last logits as one pass over 6.
    let mut cache = model.new_cache();
    let first = model
        .forward_cached(BackboneInput::new(model.embed(ids.clone().narrow(1, 0, 4))), &mut cache)
        .unwrap();
    let second = model
        .forward_cached(BackboneInput::new(model.embed(ids.clone().narrow(1, 4, 2))), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 6);
    let incremental = model.logits(Tensor::cat(vec![first, second], 1));
    assert_close(&what("kv cache"), &to_vec(incremental), &to_vec(logits), tol);
}

pub fn all_parameters_loaded<B: FrozenOps>() {
    for name in ["tiny-bert", "tiny-roberta", "tiny-llama", "tiny-qwen2", "tiny-llama3"] {
        let dir = fixtures_dir().join(name);
        let loaded = load_model::<B>(&dir, &Default::default()).unwrap();
        let file =
            ptune_transformer::loader::safetensors::SafetensorsSource::open_folder(&dir).unwrap();
        let mut in_file = file.names().unwrap();
        let mut used = loaded.loaded_tensors.clone();
        in_file.sort();
        used.sort();
        assert_eq!(used, in_file, "{name}: every tensor of the file, and only those, loaded");
        let values: usize = match &loaded.backbone {
            AnyBackbone::Bert(m) => burn::module::Module::num_params(m),
            AnyBackbone::Llama(m) => burn::module::Module::num_params(m),
        };
        assert_eq!(values, loaded.backbone.num_params());
        assert!(values > 10_000, "{name}: {values} parameters");
    }
}

pub fn position_policy_and_limits<B: FrozenOps>() {
    let device = Default::default();
    let AnyBackbone::Bert(model) = load::<B>("tiny-bert") else { panic!("not bert") };
    // 40 positions: a 3-slot prefix plus 38 tokens overflows when shifted, fits when kept.
    let embeds = Tensor::<B, 3>::zeros([1, 38, 32], &device);
    let zeros = |n| Tensor::<B, 4>::zeros([1, 4, n, 8], &device);
    let prefix = PrefixKv {
        layers: (0..2).map(|_| Some(LayerPrefix { key: zeros(3), value: zeros(3) })).collect(),
        row_lengths: None,
    };
    let err =
        model.forward(BackboneInput::new(embeds.clone()).with_prefix(prefix.clone())).unwrap_err();
    assert!(
        matches!(err, TransformerError::TooManyPositions { prefix: 3, tokens: 38, max: 40 }),
        "{err}"
    );
    assert!(err.to_string().contains("41 > 40"), "{err}");
    let kept = model.forward(
        BackboneInput::new(embeds).with_prefix(prefix).with_positions(PositionPolicy::Keep),
    );
    assert_eq!(kept.unwrap().dims(), [1, 38, 32]);

    // A prefix sized for the wrong number of heads is rejected with the expected shape.
    let bad = PrefixKv {
        layers: (0..2)
            .map(|_| {
                Some(LayerPrefix {
                    key: zeros(3).reshape([1, 2, 6, 8]),
                    value: zeros(3).reshape([1, 2, 6, 8]),
                })
            })
            .collect(),
        row_lengths: None,
    };
    let err = model
        .forward(BackboneInput::new(Tensor::zeros([1, 4, 32], &device)).with_prefix(bad))
        .unwrap_err();
    assert!(err.to_string().contains("expected [1 or 1, 4, 6, 8]"), "{err}");
}

macro_rules! backend_tests {
    ($name:ident, $backend:ty, $tol:expr) => {
        mod $name {
            #[test]
            fn tiny_bert_matches_hf() {
                super::tiny_encoder::<$backend>("bert", $tol);
            }
            #[test]
            fn tiny_roberta_matches_hf() {
                super::tiny_encoder::<$backend>("roberta", $tol);
            }
            #[test]
            fn tiny_llama_matches_hf() {
                super::tiny_decoder::<$backend>("llama", $tol);
            }
            #[test]
            fn tiny_qwen2_matches_hf() {
                super::tiny_decoder::<$backend>("qwen2", $tol);
            }
            #[test]
            fn tiny_llama3_rope_scaling_and_shards_match_hf() {
                super::tiny_decoder::<$backend>("llama3", $tol);
            }
            #[test]
            fn every_parameter_is_loaded() {
                super::all_parameters_loaded::<$backend>();
            }
            #[test]
            fn position_policy_and_limits() {
                super::position_policy_and_limits::<$backend>();
            }
        }
    };
}

backend_tests!(flex, burn::backend::Flex, 1e-5);
backend_tests!(ndarray, burn::backend::NdArray, 1e-5);
// With this crate's `wgpu` feature (`cargo xtask test` runs these in its GPU-backend step).
#[cfg(feature = "wgpu")]
backend_tests!(wgpu, burn::backend::Wgpu, 1e-4);
