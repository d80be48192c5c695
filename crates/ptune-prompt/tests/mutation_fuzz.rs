//! Mutation fuzzing of the files ptune-prompt reads, on stable Rust: PEFT adapter folders
//! (`adapter_config.json`, `adapter_model.safetensors`, P-Tuning's `encoder.safetensors`) for every
//! method on the tiny BERT and Llama, and a saved training state (`trainable.mpk`,
//! `optimizer.mpk`, `training_state.json`). Each mutant must load (and then run) or fail with a
//! typed error: a panic fails the test. The mutants' checksum manifest is rewritten or removed, so
//! the parsers themselves see every mutant (a mutant under its old manifest is refused by the
//! checksum, which `files.rs` tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::optim::AdamWConfig;
use common::{peft_fixture, tiny};
use ptune_prompt::adapter::load_adapter;
use ptune_prompt::p_tuning::{PTuningConfig, PTuningEncoder};
use ptune_prompt::training_state::{load_training_state, save_training_state, TrainingProgress};
use ptune_prompt::SoftPrompt;
use ptune_testkit::{mutate_bytes, mutate_json, scratch, Rng, Tally};
use ptune_transformer::Backbone;

type B = NdArray;
type AD = Autodiff<NdArray>;

const METHODS: [&str; 5] =
    ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm", "prefix-tuning", "p-tuning-v2"];

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn mutant(original: &[u8], file: &str, rng: &mut Rng) -> Vec<u8> {
    if file.ends_with(".json") {
        mutate_json(&String::from_utf8_lossy(original), rng).into_bytes()
    } else {
        mutate_bytes(original, rng)
    }
}

#[test]
fn mutated_peft_adapters_never_panic() {
    let mut rng = Rng(11);
    let mut tally = Tally::default();
    for model in ["bert", "llama"] {
        let backbone = tiny::<B>(model);
        let dims = backbone.dims();
        for method in METHODS {
            let src = peft_fixture(&format!("{model}-{method}"));
            let dir = scratch(&format!("adapter-{model}-{method}"));
            for file in ["adapter_config.json", "adapter_model.safetensors", "encoder.safetensors"]
            {
                let Ok(original) = std::fs::read(src.join(file)) else { continue };
                for i in 0..50 {
                    copy_dir(&src, &dir);
                    std::fs::write(dir.join(file), mutant(&original, file, &mut rng)).unwrap();
                    tally.run(&format!("{model}-{method}/{file} mutant {i}"), || {
                        match load_adapter::<B>(&dir, &dims, &Default::default()) {
                            Ok(adapter) => {
                                // A loaded mutant must also run (or fail cleanly).
                                let rows = vec![vec![1u32, 2, 3]];
                                if let Ok(batch) = adapter.prompt.prepare(&backbone, &rows) {
                                    let _ = backbone.forward(batch.input);
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    });
                }
            }
        }
    }
    tally.check("PEFT adapter folders");
}

fn prompt(backbone: &ptune_transformer::AnyBackbone<AD>) -> SoftPrompt<AD> {
    PTuningConfig::new(3)
        .with_encoder(PTuningEncoder::Mlp { hidden: Some(8) })
        .init(backbone, None)
        .unwrap()
}

#[test]
fn mutated_training_states_never_panic() {
    let backbone = tiny::<AD>("bert");
    let device = Default::default();
    let src = scratch("state-original");
    let progress = TrainingProgress { step: 2, epoch: 1, extra: serde_json::json!({"seed": 7}) };
    let optim = AdamWConfig::new().init::<AD, SoftPrompt<AD>>();
    save_training_state(&src, &prompt(&backbone), &optim, &progress).unwrap();
    let dir = scratch("state");
    let mut rng = Rng(12);
    let mut tally = Tally::default();
    for file in ["trainable.mpk", "optimizer.mpk", "training_state.json"] {
        let original = std::fs::read(src.join(file)).unwrap();
        for i in 0..150 {
            copy_dir(&src, &dir);
            std::fs::remove_file(dir.join(ptune_prompt::files::CHECKSUMS)).unwrap();
            std::fs::write(dir.join(file), mutant(&original, file, &mut rng)).unwrap();
            tally.run(&format!("state/{file} mutant {i}"), || {
                let optim = AdamWConfig::new().init::<AD, SoftPrompt<AD>>();
                match load_training_state(&dir, prompt(&backbone), optim, &device) {
                    Ok((loaded, _, _)) => {
                        let rows = vec![vec![1u32, 2, 3]];
                        if let Ok(batch) = loaded.prepare(&backbone, &rows) {
                            let _ = backbone.forward(batch.input);
                        }
                        true
                    }
                    Err(_) => false,
                }
            });
        }
    }
    tally.check("training state");
}

/// The ids of a module's float parameters, as Burn writes them into a record.
struct Ids(Vec<String>);

impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
    ) {
        self.0.push(param.id.serialize());
    }
}

/// Burn's record loader panics on a parameter id that is not base32; a state file is user input,
/// so loading it is an error naming the file (the fuzzer above meets this only when a mutation
/// lands inside an id: here it does every time).
#[test]
fn a_state_with_a_malformed_parameter_id_is_an_error() {
    use burn::module::Module;
    let backbone = tiny::<AD>("bert");
    let dir = scratch("state-bad-id");
    let module = prompt(&backbone);
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    let optim = AdamWConfig::new().init::<AD, SoftPrompt<AD>>();
    let progress = TrainingProgress { step: 0, epoch: 0, extra: serde_json::Value::Null };
    save_training_state(&dir, &module, &optim, &progress).unwrap();
    let path = dir.join("trainable.mpk");
    let mut bytes = std::fs::read(&path).unwrap();
    let id = ids.0.first().expect("a parameter").as_bytes().to_vec();
    let at = bytes.windows(id.len()).position(|w| w == id).expect("the id is in the record");
    bytes[at] = b'!';
    std::fs::write(&path, bytes).unwrap();
    std::fs::remove_file(dir.join(ptune_prompt::files::CHECKSUMS)).unwrap();
    let optim = AdamWConfig::new().init::<AD, SoftPrompt<AD>>();
    let err = load_training_state(&dir, prompt(&backbone), optim, &Default::default())
        .err()
        .expect("a malformed id is refused")
        .to_string();
    assert!(err.contains("corrupt training state") && err.contains("trainable.mpk"), "{err}");
}
