//! The tiny BERT folder with libFuzzer's bytes as its `model.safetensors`: load, then one forward.
#![no_main]

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;
use ptune_transformer::{ids_tensor, load_model, Backbone, BackboneInput};

fuzz_target!(|data: &[u8]| {
    let dir = ptune_fuzz::folder_with(
        "crates/ptune-transformer/tests/fixtures/tiny-bert",
        "model.safetensors",
        data,
    );
    if let Ok(m) = load_model::<NdArray>(&dir, &Default::default()) {
        let ids = ids_tensor::<NdArray>(&[1, 2, 3], &Default::default());
        let _ = m.backbone.forward(BackboneInput::new(m.backbone.embed(ids)));
    }
});
