//! libFuzzer's bytes as a `tokenizer.json` (seed the corpus with the tiny BERT's): load, encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptune_transformer::TextTokenizer;

fuzz_target!(|data: &[u8]| {
    let path = ptune_fuzz::file_with("tokenizer.json", data);
    if let Ok(t) = TextTokenizer::from_file(&path) {
        let _ = t.encode("Soft prompts steer frozen transformers!");
    }
});
