//! A PEFT P-Tuning (LSTM) adapter folder for the tiny Llama, with libFuzzer's bytes as one of its
//! files (the first input byte picks which): load, then prepare a batch and run it.
#![no_main]

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;
use ptune_prompt::adapter::load_adapter;
use ptune_transformer::{load_model, Backbone};

const FILES: [&str; 3] = ["adapter_config.json", "adapter_model.safetensors", "encoder.safetensors"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let model = ptune_fuzz::root().join("crates/ptune-transformer/tests/fixtures/tiny-llama");
    let Ok(m) = load_model::<NdArray>(&model, &Default::default()) else { return };
    let file = FILES[pick as usize % FILES.len()];
    let dir = ptune_fuzz::folder_with(
        "crates/ptune-prompt/tests/fixtures/peft/llama-p-tuning-lstm",
        file,
        rest,
    );
    if let Ok(a) = load_adapter::<NdArray>(&dir, &m.backbone.dims(), &Default::default()) {
        if let Ok(batch) = a.prompt.prepare(&m.backbone, &[vec![1, 2, 3]]) {
            let _ = m.backbone.forward(batch.input);
        }
    }
});
