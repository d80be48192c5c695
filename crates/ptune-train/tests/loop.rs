//! The training loop on the tiny BERT: a run stopped after a checkpoint (at the end of an epoch or in
//! the middle of one) and resumed ends exactly like an uninterrupted run; a NaN loss stops with a
//! clear error; the run folder is complete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use ptune_data::tasks::Example;
use ptune_data::{ClassificationSet, Splits};
use ptune_prompt::p_tuning_v2::PTuningV2Config;
use ptune_prompt::ClassifierHeadConfig;
use ptune_train::{
    train, Classifier, Pooling, RunSummary, SequenceClassification, TrainConfig, TrainError,
};
use ptune_transformer::load_model;

type AD = Autodiff<NdArray>;

/// The backend RNG is global: tests that draw from it (init, dropout) run one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny() -> ptune_transformer::AnyBackbone<AD> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert");
    load_model::<AD>(&path, &Default::default()).unwrap().backbone
}

fn data() -> ClassificationSet {
    let ex = |i: u32| Example {
        ids: vec![101, 3 + i % 50, 7 + (i * 3) % 40, 102],
        label: (i % 2) as usize,
    };
    ClassificationSet {
        labels: vec!["a".into(), "b".into()],
        splits: Splits {
            train: (0..24).map(ex).collect(),
            dev: (100..108).map(ex).collect(),
            test: vec![],
        },
    }
}

fn model(seed: u64) -> Classifier<AD> {
    let backbone = tiny();
    AD::seed(&Default::default(), seed);
    let prompt = PTuningV2Config::new(3).init(&backbone, None).unwrap();
    Classifier {
        prompt: Some(prompt),
        head: ClassifierHeadConfig::new(32, 2).init_seeded(3, &Default::default()),
    }
}

fn cfg() -> TrainConfig {
    TrainConfig { epochs: 3, batch_size: 8, lr: 5e-2, ..TrainConfig::default() }
}

fn train_classifier(
    backbone: &ptune_transformer::AnyBackbone<AD>,
    model: Classifier<AD>,
    data: &ClassificationSet,
    cfg: &TrainConfig,
    out: &std::path::Path,
    resume: bool,
    base: &str,
) -> ptune_train::Result<(Classifier<AD>, RunSummary)> {
    let task = SequenceClassification { data, pooling: Pooling::Mean };
    let run = ptune_train::RunOptions {
        out: out.to_path_buf(),
        resume,
        base_model: base.into(),
        adapter_task: None,
    };
    train(backbone, &task, model, cfg, &run)
}

fn out(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ptune-loop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let backbone = tiny();
    let whole = out("whole");
    let (_, a) =
        train_classifier(&backbone, model(1), &data(), &cfg(), &whole, false, "tiny-bert").unwrap();
    assert_eq!(a.history.len(), 3);
    for f in [
        "metrics.json",
        "metrics.jsonl",
        "curve.svg",
        "adapter/adapter_model.safetensors",
        "state/optimizer.mpk",
    ] {
        assert!(whole.join(f).is_file(), "{f} written");
    }

    // Killed at the end of epoch 1 (step 3), and in the middle of epoch 2 (step 5 of 3 per epoch).
    for (tag, stop) in [("epoch", 3), ("mid", 5)] {
        let split = out(tag);
        let stopped = TrainConfig { stop_after_steps: Some(stop), ..cfg() };
        let (_, partial) =
            train_classifier(&backbone, model(1), &data(), &stopped, &split, false, "tiny-bert")
                .unwrap();
        assert!(partial.interrupted && partial.steps == stop, "{tag}");
        assert_eq!(partial.history.len(), stop / 3, "{tag}");
        // Resume from a differently initialized model: everything must come from the checkpoint.
        let (_, b) =
            train_classifier(&backbone, model(99), &data(), &cfg(), &split, true, "tiny-bert")
                .unwrap();
        assert!(!b.interrupted);
        assert_eq!(b.history.len(), 3, "{tag}");
        for (x, y) in a.history.iter().zip(&b.history) {
            assert_eq!(
                (x.train_loss, x.dev.score, x.step),
                (y.train_loss, y.dev.score, y.step),
                "{tag}"
            );
        }
        let adapter = |d: &std::path::Path| {
            std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap()
        };
        assert_eq!(adapter(&whole), adapter(&split), "{tag}: same best adapter, byte for byte");
    }
}

#[test]
fn nan_loss_stops_with_a_clear_error() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let backbone = tiny();
    let bad = TrainConfig { lr: f64::NAN, grad_clip: None, ..cfg() };
    let err = train_classifier(&backbone, model(1), &data(), &bad, &out("nan"), false, "tiny-bert")
        .unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("training stopped"), "{err}");
}

#[test]
fn empty_splits_and_zero_batch_are_config_errors() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let backbone = tiny();
    let mut d = data();
    d.splits.dev.clear();
    assert!(matches!(
        train_classifier(&backbone, model(1), &d, &cfg(), &out("empty"), false, "x"),
        Err(TrainError::Config(_))
    ));
    let zero = TrainConfig { batch_size: 0, ..cfg() };
    assert!(matches!(
        train_classifier(&backbone, model(1), &data(), &zero, &out("zero"), false, "x"),
        Err(TrainError::Config(_))
    ));
}
