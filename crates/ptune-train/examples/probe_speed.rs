//! One MiniLM forward (32 × 40 tokens) through the prompted-batch path, plain and under autodiff,
//! per CPU backend: a quick probe of where inference time goes (`docs/training.md`). Needs the
//! fetched model (`cargo xtask fetch minilm`).
//!
//! ```sh
//! cargo run --release -p ptune-train --example probe_speed
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ptune_prompt::PromptedBatch;
use ptune_transformer::FrozenOps;
use ptune_transformer::{load_model, Backbone};
use std::time::Instant;

fn run<B: FrozenOps>(name: &str) {
    let path =
        std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ptune/models/minilm");
    let loaded = load_model::<B>(&path, &Default::default()).unwrap();
    let rows: Vec<Vec<u32>> = (0..32)
        .map(|i| (0..40).map(|j| 1000 + ((i * 7 + j * 13) % 5000) as u32).collect())
        .collect();
    for _ in 0..3 {
        let t = Instant::now();
        let batch = PromptedBatch::plain(&loaded.backbone, &rows).unwrap();
        let t1 = t.elapsed();
        let h = loaded.backbone.forward(batch.input).unwrap();
        let _ = h.into_data();
        eprintln!("{name}: assemble {:?}, total {:?}", t1, t.elapsed());
    }
}

fn main() {
    run::<burn::backend::Flex>("flex");
    run::<burn::backend::NdArray>("ndarray");
    run::<burn::backend::Autodiff<burn::backend::Flex>>("autodiff-flex");
}
