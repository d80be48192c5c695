//! Mutation fuzzing on stable Rust (the mutators are `ptune-testkit`'s): thousands of seeded random mutations of valid model files (the
//! tiny BERT and Llama safetensors folders, their `config.json`, a tiny Llama GGUF written here, and
//! with the fetched models a real `tokenizer.json`). Every mutant must load or fail with a typed
//! error: a panic fails the test (counted under `catch_unwind`), an abort or an out-of-memory kill
//! fails the whole test binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use burn::backend::NdArray;
use common::fixtures_dir;
use ptune_testkit::{mutate_bytes, mutate_json, scratch, Rng, Tally};
use ptune_transformer::{load_model, Backbone, BackboneInput};

type B = NdArray;

/// Loads `path` and, when it loads, runs one forward pass (a loaded mutant must also run or fail
/// cleanly).
fn load_and_run(path: &Path) -> bool {
    match load_model::<B>(path, &Default::default()) {
        Ok(m) => {
            let ids = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(vec![1i64, 2, 3], [1, 3]),
                &Default::default(),
            );
            let _ = m.backbone.forward(BackboneInput::new(m.backbone.embed(ids)));
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// `n` mutants of `file` inside a copy of the fixture folder `model`.
fn fuzz_folder_file(model: &str, file: &str, n: usize, seed: u64) -> Tally {
    let src = fixtures_dir().join(model);
    let dir = scratch(&format!("{model}-{file}"));
    let original = std::fs::read(src.join(file)).unwrap();
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..n {
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let mutant = if file.ends_with(".json") {
            mutate_json(std::str::from_utf8(&original).unwrap(), &mut rng).into_bytes()
        } else {
            mutate_bytes(&original, &mut rng)
        };
        std::fs::write(dir.join(file), &mutant).unwrap();
        tally.run(&format!("{model}/{file} mutant {i}"), || load_and_run(&dir));
    }
    tally
}

#[test]
fn mutated_safetensors_never_panic() {
    fuzz_folder_file("tiny-bert", "model.safetensors", 800, 1).check("tiny-bert safetensors");
    fuzz_folder_file("tiny-llama", "model.safetensors", 400, 2).check("tiny-llama safetensors");
}

#[test]
fn mutated_configs_never_panic() {
    fuzz_folder_file("tiny-bert", "config.json", 600, 3).check("tiny-bert config.json");
    fuzz_folder_file("tiny-qwen2", "config.json", 400, 4).check("tiny-qwen2 config.json");
}

/// A GGUF v3 string.
fn gguf_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF metadata value of the kinds the tests write.
#[derive(Clone, Copy)]
enum Meta<'a> {
    Str(&'a str),
    U32(u32),
    F32(f32),
    Bool(bool),
}

/// A tiny Llama GGUF (1 layer, hidden 8, 2 heads / 1 KV head, vocab of 6 byte-level tokens), all
/// tensors F32 but the FFN in Q4_K (gate), Q6_K (up) and Q8_0 (down): enough for `load_model` to
/// build a decoder.
fn tiny_gguf() -> Vec<u8> {
    tiny_gguf_with(&[])
}

/// [`tiny_gguf`] with `extra` metadata written after (and so replacing) its own.
fn tiny_gguf_with(extra: &[(&str, Meta)]) -> Vec<u8> {
    let (d, ffn, vocab, heads, kv) = (8usize, 32usize, 6usize, 2usize, 1usize);
    let hd = d / heads;
    let tokens = ["a", "b", "c", "ab", "Ġ", "d"];
    let mut meta: Vec<u8> = Vec::new();
    let mut kv_count = 0u64;
    let put_u32 = |meta: &mut Vec<u8>, key: &str, v: u32| {
        gguf_str(meta, key);
        meta.extend(4u32.to_le_bytes());
        meta.extend(v.to_le_bytes());
    };
    gguf_str(&mut meta, "general.architecture");
    meta.extend(8u32.to_le_bytes());
    gguf_str(&mut meta, "llama");
    kv_count += 1;
    for (key, v) in [
        ("llama.embedding_length", d),
        ("llama.block_count", 1),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv),
        ("llama.feed_forward_length", ffn),
        ("llama.context_length", 32),
    ] {
        put_u32(&mut meta, key, v as u32);
        kv_count += 1;
    }
    gguf_str(&mut meta, "tokenizer.ggml.model");
    meta.extend(8u32.to_le_bytes());
    gguf_str(&mut meta, "gpt2");
    kv_count += 1;
    for (key, value) in [("tokenizer.ggml.pre", Meta::Str("smollm"))].iter().chain(extra) {
        gguf_str(&mut meta, key);
        match value {
            Meta::Str(v) => {
                meta.extend(8u32.to_le_bytes());
                gguf_str(&mut meta, v);
            }
            Meta::U32(v) => {
                meta.extend(4u32.to_le_bytes());
                meta.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                meta.extend(6u32.to_le_bytes());
                meta.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                meta.extend(7u32.to_le_bytes());
                meta.push(u8::from(*v));
            }
        }
        kv_count += 1;
    }
    for (key, items) in
        [("tokenizer.ggml.tokens", &tokens[..]), ("tokenizer.ggml.merges", &["a b"])]
    {
        gguf_str(&mut meta, key);
        meta.extend(9u32.to_le_bytes());
        meta.extend(8u32.to_le_bytes());
        meta.extend((items.len() as u64).to_le_bytes());
        for t in items {
            gguf_str(&mut meta, t);
        }
        kv_count += 1;
    }
    // (name, ne (fastest first), type, data)
    let f32s = |n: usize, scale: f32| -> Vec<u8> {
        (0..n).flat_map(|i| (((i * 7 % 13) as f32 - 6.0) * scale).to_le_bytes()).collect()
    };
    let q8_0 = |n: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for b in 0..n / 32 {
            out.extend(half::f16::from_f32(0.01).to_le_bytes());
            out.extend((0..32).map(|j| ((b * 5 + j * 3) % 200) as u8));
        }
        out
    };
    // One 256-weight block each (d * ffn = 256), deterministic patterns with finite scales.
    let q4_k = || -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(half::f16::from_f32(0.01).to_le_bytes());
        out.extend(half::f16::from_f32(0.005).to_le_bytes());
        out.extend((0..12).map(|j| (j * 37 % 256) as u8));
        out.extend((0..128).map(|j| (j * 11 % 256) as u8));
        out
    };
    let q6_k = || -> Vec<u8> {
        let mut out: Vec<u8> = (0..192).map(|j| (j * 13 % 256) as u8).collect();
        out.extend((0..16).map(|j| (j as i8 - 8) as u8));
        out.extend(half::f16::from_f32(0.002).to_le_bytes());
        out
    };
    let tensors: Vec<(String, Vec<usize>, u32, Vec<u8>)> = vec![
        ("token_embd.weight".into(), vec![d, vocab], 0, f32s(d * vocab, 0.1)),
        ("blk.0.attn_norm.weight".into(), vec![d], 0, f32s(d, 0.05)),
        ("blk.0.attn_q.weight".into(), vec![d, heads * hd], 0, f32s(d * heads * hd, 0.1)),
        ("blk.0.attn_k.weight".into(), vec![d, kv * hd], 0, f32s(d * kv * hd, 0.1)),
        ("blk.0.attn_v.weight".into(), vec![d, kv * hd], 0, f32s(d * kv * hd, 0.1)),
        ("blk.0.attn_output.weight".into(), vec![heads * hd, d], 0, f32s(d * heads * hd, 0.1)),
        ("blk.0.ffn_norm.weight".into(), vec![d], 0, f32s(d, 0.05)),
        ("blk.0.ffn_gate.weight".into(), vec![d, ffn], 12, q4_k()),
        ("blk.0.ffn_up.weight".into(), vec![d, ffn], 14, q6_k()),
        ("blk.0.ffn_down.weight".into(), vec![ffn, d], 8, q8_0(d * ffn)),
        ("output_norm.weight".into(), vec![d], 0, f32s(d, 0.05)),
    ];
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(kv_count.to_le_bytes());
    out.extend(meta);
    let mut offset = 0u64;
    for (name, ne, ty, data) in &tensors {
        gguf_str(&mut out, name);
        out.extend((ne.len() as u32).to_le_bytes());
        for &x in ne {
            out.extend((x as u64).to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    for (_, _, _, data) in &tensors {
        let start = out.len();
        out.extend(data);
        while !(out.len() - start).is_multiple_of(32) {
            out.push(0);
        }
    }
    out
}

#[test]
fn the_tiny_gguf_loads_and_its_mutants_never_panic() {
    let dir = scratch("gguf");
    let path = dir.join("tiny.gguf");
    let original = tiny_gguf();
    std::fs::write(&path, &original).unwrap();
    let loaded = load_model::<B>(&path, &Default::default()).expect("the tiny GGUF loads");
    assert!(loaded.backbone.as_decoder().is_some());
    assert_eq!(loaded.backbone.dims().num_layers, 1);
    assert!(load_and_run(&path));

    let mut rng = Rng(5);
    let mut tally = Tally::default();
    for i in 0..1500 {
        std::fs::write(&path, mutate_bytes(&original, &mut rng)).unwrap();
        tally.run(&format!("gguf mutant {i}"), || load_and_run(&path));
    }
    tally.check("tiny GGUF");
}

#[test]
fn gguf_metadata_ptune_cannot_honour_is_an_error() {
    let dir = scratch("gguf-meta");
    let path = dir.join("tiny.gguf");
    let load = |extra: &[(&str, Meta)]| {
        std::fs::write(&path, tiny_gguf_with(extra)).unwrap();
        load_model::<B>(&path, &Default::default())
    };
    for (extra, expected) in [
        (vec![("tokenizer.ggml.pre", Meta::Str("llama-bpe"))], "pre-tokenizer"),
        (vec![("llama.expert_count", Meta::U32(8))], "`llama.expert_count` is not supported"),
        (vec![("llama.rope.scaling.type", Meta::Str("yarn"))], "RoPE scaling"),
        (vec![("llama.rope.scaling.type", Meta::Str("linear"))], "llama.rope.scaling.factor"),
        (vec![("tokenizer.ggml.add_space_prefix", Meta::Bool(true))], "add_space_prefix"),
        (vec![("tokenizer.ggml.add_bos_token", Meta::Bool(true))], "bos_token_id"),
        (vec![("tokenizer.ggml.chat_template_x", Meta::Str(""))], "chat_template_x"),
        (vec![("llama.attention.key_length", Meta::U32(5))], "head width 4"),
    ] {
        let err = load(&extra).expect_err(expected).to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // What is supported is honoured: linear RoPE scaling, BOS added when asked.
    let loaded = load(&[
        ("llama.rope.scaling.type", Meta::Str("linear")),
        ("llama.rope.scaling.factor", Meta::F32(2.0)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(true)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(5)),
    ])
    .unwrap();
    let ptune_transformer::ModelConfig::Llama(config) = &loaded.config else { panic!("llama") };
    assert_eq!(
        config.rope_scaling().unwrap(),
        Some(ptune_transformer::RopeScaling::Linear { factor: 2.0 })
    );
    let ids = loaded.tokenizer.unwrap().encode("ab").unwrap();
    assert_eq!(ids.first(), Some(&5), "{ids:?}");
}

#[cfg(feature = "fetched-models")]
#[test]
fn mutated_tokenizer_json_never_panics() {
    let src = common::fetched_model("minilm").join("tokenizer.json");
    let original = std::fs::read_to_string(&src).unwrap();
    let dir = scratch("tokenizer");
    let path = dir.join("tokenizer.json");
    let mut rng = Rng(6);
    let mut tally = Tally::default();
    for i in 0..150 {
        std::fs::write(&path, mutate_json(&original, &mut rng)).unwrap();
        tally.run(&format!("tokenizer.json mutant {i}"), || {
            match ptune_transformer::TextTokenizer::from_file(&path) {
                Ok(t) => {
                    let _ = t.encode("Soft prompts steer frozen transformers!");
                    true
                }
                Err(_) => false,
            }
        });
    }
    tally.check("MiniLM tokenizer.json");
}
