//! Train a soft prompt from Rust and label new texts with the run folder it wrote.
//!
//! P-Tuning v2 on 400 Rotten Tomatoes sentences with the fetched all-MiniLM-L6-v2, one epoch on
//! the CPU (about a minute on 2 cores), then `TextClassifier::from_run` on the run folder — the
//! same files `ptune train` writes and `ptune predict` reads.
//!
//! ```sh
//! cargo xtask fetch minilm && cargo xtask fetch rt-sentences
//! cargo run --release -p ptune-train --example train_and_predict
//! ```

use burn::backend::{Autodiff, Flex};
use ptune_data::formats::ColumnMap;
use ptune_data::tasks::tokenize_classification;
use ptune_data::{ClassificationSet, Splits};
use ptune_prompt::{ClassifierHeadConfig, MethodKind, MethodOptions};
use ptune_train::run::{resolve_model, TaskInfo, TaskKind};
use ptune_train::{Classifier, Pooling, SequenceClassification, TextClassifier, TrainConfig};
use ptune_transformer::{load_model, Backbone};

type B = Autodiff<Flex>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let out = std::path::Path::new("runs/example-train-and-predict");

    // The frozen model and the data, tokenized.
    let model = load_model::<B>(&resolve_model("minilm")?, &device)?;
    let tokenizer = model.tokenizer.clone().ok_or("the model has no tokenizer")?;
    let text = ptune_data::recipes::classification("rt-sentences", &ColumnMap::default())?;
    let tokenize = |rows: &[ptune_data::formats::Record]| {
        tokenize_classification(rows, &text.labels, &tokenizer, 64, &text.source)
    };
    let data = ClassificationSet {
        labels: text.labels.clone(),
        splits: Splits {
            train: tokenize(&text.splits.train[..400.min(text.splits.train.len())])?,
            dev: tokenize(&text.splits.dev[..200.min(text.splits.dev.len())])?,
            test: Vec::new(),
        },
    };

    // The method from the registry (its defaults, 16 virtual tokens) and a head.
    let prompt = MethodKind::PTuningV2.build(&MethodOptions::default(), &model.backbone, None)?;
    let head = ClassifierHeadConfig::new(model.backbone.dims().hidden_size, data.labels.len())
        .init(&device);

    // Train; the run folder records what prediction needs.
    TaskInfo {
        task: TaskKind::Classify,
        model: "minilm".into(),
        dataset: "rt-sentences".into(),
        labels: data.labels.clone(),
        pooling: Some(Pooling::Mean),
        cloze_template: None,
        verbalizer: None,
        separator: None,
        max_len: 64,
    }
    .save(out)?;
    let config = TrainConfig { epochs: 1, batch_size: 16, lr: 5e-2, ..TrainConfig::default() };
    let task = SequenceClassification { data: &data, pooling: Pooling::Mean };
    let model_to_train = Classifier { prompt: Some(prompt), head };
    let (_, summary) =
        ptune_train::train(&model.backbone, &task, model_to_train, &config, out, false, "minilm")?;
    println!("dev accuracy {:.4}", summary.best_metric("accuracy"));

    // Predict from the run folder alone (inference backend, no autodiff).
    let classifier = TextClassifier::<Flex>::from_run(out)?;
    let texts = ["a gorgeous, witty, seductive movie", "a dull, lifeless and tedious mess"];
    for (text, p) in texts.iter().zip(classifier.predict(&texts)?) {
        println!("{:<10} {:.3}  {text}", p.label, p.scores[p.index]);
    }
    Ok(())
}
