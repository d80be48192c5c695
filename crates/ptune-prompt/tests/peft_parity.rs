//! PEFT 0.21.2 adapters (made by scripts/gen_reference.py for the tiny BERT and tiny Llama) load into
//! ptune and give PEFT's logits within 1e-5; PEFT's encoder weights give PEFT's materialized tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use burn::tensor::Tensor;
use common::*;
use ptune_prompt::adapter::load_peft_encoder;
use ptune_reparam::{LstmEncoderConfig, MlpEncoderConfig, PrefixMlpConfig, PromptTable, Reparam};
use ptune_transformer::Backbone;
use ptune_transformer::FrozenOps;

fn adapters_match_peft<B: FrozenOps>(model: &str) {
    let backbone = tiny::<B>(model);
    for method in METHODS {
        let name = format!("{model}-{method}");
        let adapter = load(&name, &backbone);
        let reference = json(peft_fixture(&name).join("reference.json"));
        let batch = adapter.prompt.prepare(&backbone, &rows(&reference)).expect("prepare");
        let expected = floats(&reference["logits"]);
        let ours = task_logits(&backbone, adapter.head.as_ref(), batch);
        let diff = match backbone.as_encoder() {
            Some(_) => max_diff(&ours, &expected, |_| true),
            None => {
                // [b, S, V] with S = virtual + text for input-level methods; compare unpadded positions.
                let s_full = shape(&reference["logits"])[1];
                let mask = ints(&reference["attention_mask"]);
                let s_text = shape(&reference["attention_mask"])[1];
                let virt = s_full - s_text;
                let v = 128;
                max_diff(&ours, &expected, |i| {
                    let (r, p) = (i / (s_full * v), (i / v) % s_full);
                    p < virt || mask[r * s_text + p - virt] == 1
                })
            }
        };
        eprintln!("{name}: max |logit diff| vs PEFT = {diff:e}");
        assert!(diff <= 1e-5, "{name}: {diff}");
    }
}

fn encoders_match_peft<B: FrozenOps>(model: &str) {
    let backbone = tiny::<B>(model);
    let dims = backbone.dims();
    let d = dims.hidden_size;
    let device = Default::default();
    for method in METHODS {
        let name = format!("{model}-{method}");
        let fresh: Reparam<B> = match method {
            "prompt-tuning" | "p-tuning-v2" => {
                Reparam::Table(PromptTable::from_tensor(Tensor::zeros([1, 1], &device)))
            }
            "p-tuning-mlp" => Reparam::Mlp(MlpEncoderConfig::new(4, d, 16).init(&device)),
            "p-tuning-lstm" => Reparam::Lstm(LstmEncoderConfig::new(4, d, 16).init(&device)),
            _ => Reparam::PrefixMlp(
                PrefixMlpConfig::new(4, dims.kv_dim(), 16, dims.num_layers * 2 * dims.kv_dim())
                    .init(&device),
            ),
        };
        let encoder = load_peft_encoder(fresh, &peft_fixture(&name).join("encoder.safetensors"))
            .expect("encoder");
        let ours = to_vec(encoder.forward());
        let adapter = load(&name, &backbone);
        let expected = to_vec(adapter.prompt.encoder.forward());
        let diff = max_diff(&ours, &expected, |_| true);
        eprintln!("{name}: encoder output vs PEFT prompt_embeddings max |diff| = {diff:e}");
        assert!(diff <= 1e-5, "{name}: {diff}");
    }
}

#[test]
fn bert_adapters_match_peft_ndarray() {
    adapters_match_peft::<burn::backend::NdArray>("bert");
}

#[test]
fn llama_adapters_match_peft_ndarray() {
    adapters_match_peft::<burn::backend::NdArray>("llama");
}

#[test]
fn bert_adapters_match_peft_flex() {
    adapters_match_peft::<burn::backend::Flex>("bert");
}

#[test]
fn llama_adapters_match_peft_flex() {
    adapters_match_peft::<burn::backend::Flex>("llama");
}

#[test]
fn encoders_reproduce_peft_tables() {
    encoders_match_peft::<burn::backend::NdArray>("bert");
    encoders_match_peft::<burn::backend::NdArray>("llama");
}

/// PEFT saves adapters of half-precision models in F16 or BF16: they load, each value the f32
/// one rounded to the half type, and give PEFT's logits to half precision.
#[test]
fn half_precision_adapter_files_load() {
    use ptune_prompt::adapter::{load_adapter, read_safetensors};
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    type B = burn::backend::NdArray;
    let backbone = tiny::<B>("bert");
    let name = "bert-prompt-tuning";
    let src = peft_fixture(name);
    let original = read_safetensors(&src.join("adapter_model.safetensors")).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = std::env::temp_dir().join(format!("ptune-half-{dtype:?}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        let round = |x: f32| match dtype {
            Dtype::F16 => half::f16::from_f32(x).to_f32(),
            _ => half::bf16::from_f32(x).to_f32(),
        };
        let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = original
            .iter()
            .map(|(k, (shape, data))| {
                let bytes = data
                    .iter()
                    .flat_map(|&x| match dtype {
                        Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                        _ => half::bf16::from_f32(x).to_le_bytes(),
                    })
                    .collect();
                (k.clone(), shape.clone(), bytes)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = encoded
            .iter()
            .map(|(k, s, b)| (k.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        let path = dir.join("adapter_model.safetensors");
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let back = read_safetensors(&path).unwrap();
        for (k, (shape, data)) in &original {
            assert_eq!(&back[k].0, shape);
            let expected: Vec<f32> = data.iter().map(|&x| round(x)).collect();
            assert_eq!(back[k].1, expected, "{k} as {dtype:?}");
        }
        let adapter = load_adapter::<B>(&dir, &backbone.dims(), &Default::default()).unwrap();
        let reference = json(src.join("reference.json"));
        let batch = adapter.prompt.prepare(&backbone, &rows(&reference)).expect("prepare");
        let ours = task_logits(&backbone, adapter.head.as_ref(), batch);
        let diff = max_diff(&ours, &floats(&reference["logits"]), |_| true);
        assert!(diff < 5e-2, "{dtype:?}: {diff}");
    }
}
