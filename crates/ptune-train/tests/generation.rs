//! Decoding with the KV cache and soft prompts, on the tiny Llama: each cached step gives the token
//! a full recomputation of the prompted sequence gives, for input-level prompts and for prefixes;
//! beam search of width 1 and top-k 1 sampling are greedy; wider beams and sampling are seeded and
//! repeatable. On ndarray and flex (their bool tensors differ).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::backend::{Flex, NdArray};
use ptune_prompt::p_tuning_v2::PTuningV2Config;
use ptune_prompt::prefix_tuning::PrefixTuningConfig;
use ptune_prompt::prompt_tuning::PromptTuningConfig;
use ptune_prompt::SoftPrompt;
use ptune_train::generate::{generate, Decoding, GenerationConfig};
use ptune_transformer::FrozenOps;
use ptune_transformer::{load_model, AnyBackbone, Backbone};

static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny<B: FrozenOps>() -> AnyBackbone<B> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-llama");
    load_model::<B>(&path, &Default::default()).unwrap().backbone
}

fn prompts<B: FrozenOps>(backbone: &AnyBackbone<B>) -> Vec<(&'static str, SoftPrompt<B>)> {
    B::seed(&Default::default(), 5);
    vec![
        ("prompt-tuning", PromptTuningConfig::new(4).init(backbone, None).unwrap()),
        ("prefix-tuning", PrefixTuningConfig::new(3).init(backbone, None).unwrap()),
        ("p-tuning-v2", PTuningV2Config::new(5).init(backbone, None).unwrap()),
    ]
}

/// The next token by recomputing the whole prompted sequence without a cache.
fn recomputed_next<B: FrozenOps>(
    backbone: &AnyBackbone<B>,
    prompt: &SoftPrompt<B>,
    ids: &[u32],
) -> u32 {
    let llama = backbone.as_decoder().expect("a decoder");
    let batch = prompt.prepare(backbone, &[ids.to_vec()]).unwrap();
    let hidden = batch.strip_virtual(backbone.forward(batch.input.clone()).unwrap());
    let l = hidden.dims()[1];
    let logits = llama.logits(hidden.narrow(1, l - 1, 1));
    logits.argmax(2).into_data().convert::<i64>().iter::<i64>().next().unwrap() as u32
}

fn cfg(decoding: Decoding) -> GenerationConfig {
    GenerationConfig { decoding, ..GenerationConfig::greedy(8, None) }
}

#[test]
fn cached_decoding_matches_full_recomputation() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    cached_decoding::<NdArray>();
    cached_decoding::<Flex>();
}

fn cached_decoding<B: FrozenOps>() {
    let backbone = tiny::<B>();
    let source = vec![5u32, 17, 33, 2 + 40, 9];
    for (name, prompt) in prompts(&backbone) {
        let out = generate(&backbone, Some(&prompt), &source, &cfg(Decoding::Greedy)).unwrap();
        assert_eq!(out.len(), 8, "{name}");
        let mut ids = source.clone();
        for (k, &t) in out.iter().enumerate() {
            assert_eq!(t, recomputed_next(&backbone, &prompt, &ids), "{name}: token {k}");
            ids.push(t);
        }
    }
}

#[test]
fn beam_of_one_and_top_k_of_one_are_greedy_and_decoding_is_repeatable() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    beams_and_sampling::<NdArray>();
    beams_and_sampling::<Flex>();
}

fn beams_and_sampling<B: FrozenOps>() {
    let backbone = tiny::<B>();
    let source = vec![3u32, 8, 60, 21];
    for (name, prompt) in prompts(&backbone) {
        let greedy = generate(&backbone, Some(&prompt), &source, &cfg(Decoding::Greedy)).unwrap();
        let beam1 = Decoding::Beam { width: 1, length_penalty: 1.0 };
        assert_eq!(
            generate(&backbone, Some(&prompt), &source, &cfg(beam1)).unwrap(),
            greedy,
            "{name}"
        );
        let top1 = Decoding::Sample { temperature: 1.0, top_k: Some(1), top_p: None, seed: 3 };
        assert_eq!(
            generate(&backbone, Some(&prompt), &source, &cfg(top1)).unwrap(),
            greedy,
            "{name}"
        );

        let beam3 = Decoding::Beam { width: 3, length_penalty: 1.0 };
        let a = generate(&backbone, Some(&prompt), &source, &cfg(beam3.clone())).unwrap();
        let b = generate(&backbone, Some(&prompt), &source, &cfg(beam3)).unwrap();
        assert_eq!(a, b, "{name}: beam search is deterministic");
        assert_eq!(a.len(), 8, "{name}: no stop token, so full length");

        let sample =
            |seed| Decoding::Sample { temperature: 1.5, top_k: Some(20), top_p: Some(0.9), seed };
        let s1 = generate(&backbone, Some(&prompt), &source, &cfg(sample(7))).unwrap();
        assert_eq!(s1, generate(&backbone, Some(&prompt), &source, &cfg(sample(7))).unwrap());
        assert!(s1.iter().all(|&t| (t as usize) < 128));
    }
}

#[test]
fn generation_refuses_encoders_and_bad_settings() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert");
    let bert = load_model::<NdArray>(&path, &Default::default()).unwrap().backbone;
    let e = generate(&bert, None, &[1, 2], &cfg(Decoding::Greedy)).unwrap_err();
    assert!(e.to_string().contains("needs a decoder"), "{e}");
    let backbone = tiny::<NdArray>();
    let bad = Decoding::Sample { temperature: 0.0, top_k: None, top_p: None, seed: 0 };
    assert!(generate(&backbone, None, &[1, 2], &cfg(bad)).is_err());
    assert!(generate(&backbone, None, &[], &cfg(Decoding::Greedy)).is_err());
    let out_of_vocab = generate(&backbone, None, &[1, 4000], &cfg(Decoding::Greedy));
    assert!(out_of_vocab.is_err(), "ids past the vocabulary are an error");
}
