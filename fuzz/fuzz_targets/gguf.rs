//! libFuzzer's bytes as a GGUF file (seed the corpus with a small Llama GGUF): load, then one
//! forward.
#![no_main]

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;
use ptune_transformer::{ids_tensor, load_model, Backbone, BackboneInput};

fuzz_target!(|data: &[u8]| {
    let path = ptune_fuzz::file_with("model.gguf", data);
    if let Ok(m) = load_model::<NdArray>(&path, &Default::default()) {
        let ids = ids_tensor::<NdArray>(&[1, 2, 3], &Default::default());
        let _ = m.backbone.forward(BackboneInput::new(m.backbone.embed(ids)));
    }
});
