//! Shared helpers of the ptune-prompt tests.
#![allow(dead_code)]

use ptune_transformer::FrozenOps;
use std::path::PathBuf;

use burn::tensor::Tensor;
use ptune_prompt::adapter::{load_adapter, Adapter};
use ptune_prompt::{ClassifierHead, PromptedBatch, SoftPrompt};
use ptune_transformer::{load_model, AnyBackbone, Backbone};
use serde_json::Value;

pub fn transformer_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ptune-transformer/tests/fixtures")
}

pub fn peft_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft").join(name)
}

/// The tiny model of the transformer fixtures; also seeds the backend so inits are reproducible.
pub fn tiny<B: FrozenOps>(model: &str) -> AnyBackbone<B> {
    B::seed(&Default::default(), 42);
    load_model::<B>(&transformer_fixtures().join(format!("tiny-{model}")), &Default::default())
        .expect("tiny model")
        .backbone
}

pub fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json")
}

pub fn floats(v: &Value) -> Vec<f32> {
    v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn ints(v: &Value) -> Vec<i64> {
    v["data"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

pub fn shape(v: &Value) -> Vec<usize> {
    v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Unpadded rows from HF `input_ids` + `attention_mask` (right padding).
pub fn rows(reference: &Value) -> Vec<Vec<u32>> {
    let [b, s] = shape(&reference["input_ids"])[..] else { panic!("2-D ids") };
    let ids = ints(&reference["input_ids"]);
    let mask = ints(&reference["attention_mask"]);
    (0..b)
        .map(|r| (0..s).filter(|&j| mask[r * s + j] == 1).map(|j| ids[r * s + j] as u32).collect())
        .collect()
}

pub fn to_vec<B: FrozenOps, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Runs a prompted batch to the task output: BERT → pooled → classifier logits `[b, labels]`;
/// Llama → LM logits `[b, S, vocab]`.
pub fn task_logits<B: FrozenOps>(
    backbone: &AnyBackbone<B>,
    head: Option<&ClassifierHead<B>>,
    batch: PromptedBatch<B>,
) -> Vec<f32> {
    let hidden = backbone.forward(batch.input).expect("forward");
    match (backbone.as_encoder(), backbone.as_decoder()) {
        (Some(encoder), _) => {
            let pooled = encoder.pooler(hidden).expect("pooler");
            to_vec(head.expect("head").forward(pooled))
        }
        (None, Some(decoder)) => to_vec(decoder.logits(hidden)),
        (None, None) => panic!("a backbone is an encoder or a decoder"),
    }
}

pub fn load<B: FrozenOps>(name: &str, backbone: &AnyBackbone<B>) -> Adapter<B> {
    load_adapter::<B>(&peft_fixture(name), &backbone.dims(), &Default::default()).expect("adapter")
}

pub fn max_diff(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    let mut max = 0f32;
    let mut n = 0;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if keep(i) {
            assert!(x.is_finite());
            max = max.max((x - y).abs());
            n += 1;
        }
    }
    assert!(n > 0, "nothing compared");
    max
}

pub const METHODS: [&str; 5] =
    ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm", "prefix-tuning", "p-tuning-v2"];

pub fn soft_prompt_of<B: FrozenOps>(a: &Adapter<B>) -> &SoftPrompt<B> {
    &a.prompt
}
