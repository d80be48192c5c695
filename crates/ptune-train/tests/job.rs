//! A whole job through the library, on the tiny BERT and data files the test writes:
//! [`TrainJob::run`] trains and writes the run folder; [`TrainedRun::evaluate`] on the saved run
//! reproduces the loop's best dev metrics (everything a prediction needs travels in the folder);
//! [`TextClassifier`] and [`Tagger`] read the same folder; a run whose `task.json` disagrees with
//! its head is a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use ptune_prompt::MethodKind;
use ptune_train::inference::{EvalOptions, Split};
use ptune_train::{Silent, Tagger, TaskKind, TextClassifier, TrainJob, TrainedRun};

type AD = Autodiff<NdArray>;

/// Keeps the job's messages.
#[derive(Default)]
struct Notes(Vec<String>);

impl ptune_train::trainer::TrainObserver for Notes {
    fn on(&mut self, event: ptune_train::trainer::TrainEvent<'_>) {
        if let ptune_train::trainer::TrainEvent::Message(m) = event {
            self.0.push(m.to_string());
        }
    }
}

fn tiny_bert() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert")
        .display()
        .to_string()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ptune-job-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GOOD: [&str; 4] = ["good", "great", "fine", "nice"];
const BAD: [&str; 4] = ["bad", "poor", "awful", "dull"];

fn classification_file(at: &Path) -> String {
    let mut lines = Vec::new();
    for i in 0..80 {
        let (word, label) =
            if i % 2 == 0 { (GOOD[i % 4], "positive") } else { (BAD[i % 4], "negative") };
        let text = format!("the film was {word} and the cast {}", ["ok", "so"][i % 2]);
        lines.push(serde_json::json!({"text": text, "label": label}).to_string());
    }
    let path = at.join("sentiment.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

fn tagging_file(at: &Path) -> String {
    let mut lines = Vec::new();
    for i in 0..60 {
        let name = ["paris", "london", "rome"][i % 3];
        let tokens = ["we", "went", "to", name, "today"];
        let tags = ["O", "O", "O", "B-city", "O"];
        lines.push(serde_json::json!({"tokens": tokens, "tags": tags}).to_string());
    }
    let path = at.join("cities.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

fn job(dataset: &str) -> TrainJob {
    let mut job = TrainJob::new(&tiny_bert(), dataset);
    job.method = Some(MethodKind::PromptTuning);
    job.method_options.virtual_tokens = Some(3);
    job.train.epochs = 2;
    job.train.batch_size = 8;
    job.train.lr = 5e-2;
    job.baselines = true;
    job
}

#[test]
fn a_classification_job_round_trips_through_its_run_folder() {
    let d = dir("classify");
    let out = d.join("run");
    let job = job(&classification_file(&d));
    let mut notes = Notes::default();
    let outcome = job.run::<AD>(&out, false, &mut notes).unwrap();
    // Mean pooling (the default): the job says PEFT would read the head differently.
    assert!(notes.0.iter().any(|n| n.contains("Mean pooling") && n.contains("--pooling pooler")));
    assert_eq!(outcome.info.task, TaskKind::Classify);
    assert_eq!(outcome.info.labels, ["negative", "positive"]);
    let names: Vec<&str> = outcome.baselines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["majority class", "linear probe (frozen backbone, head only)"]);
    // metrics.json holds the job's own settings and the baselines, in one schema.
    let report = ptune_train::RunReport::read(&out).unwrap();
    assert_eq!(report.method.as_deref(), Some("prompt-tuning"));
    assert_eq!(report.settings["train"]["epochs"], 2);
    assert_eq!(report.baselines.len(), 2);

    let best = outcome.report.summary.best.clone().unwrap();
    let run = TrainedRun::<NdArray>::load(&out, None, &Default::default()).unwrap();
    let options = EvalOptions { batch_size: 8, ..EvalOptions::default() };
    let eval = run.evaluate(Split::Dev, None, &options).unwrap();
    for name in ["accuracy", "macro_f1"] {
        assert_eq!(eval.metrics[name], best.metrics[name], "dev {name} from the run folder");
    }
    let test = run.evaluate(Split::Test, None, &options).unwrap();
    assert!((0.0..=1.0).contains(&test.metrics["accuracy"]));

    let classifier = TextClassifier::<NdArray>::from_run(&out).unwrap();
    let p = classifier.predict(&["the film was great and the cast ok"]).unwrap();
    assert_eq!(p.len(), 1);
    assert!((p[0].scores.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!(classifier.labels()[p[0].index], p[0].label);
    // The adapter folder alone, copied away from its run, carries what prediction needs.
    let alone = d.join("adapter-alone");
    std::fs::create_dir_all(&alone).unwrap();
    for entry in std::fs::read_dir(out.join("adapter")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), alone.join(entry.file_name())).unwrap();
    }
    let from_adapter = TextClassifier::<NdArray>::from_run(&alone).unwrap();
    assert_eq!(from_adapter.labels(), classifier.labels());
    let q = from_adapter.predict(&["the film was great and the cast ok"]).unwrap();
    assert_eq!(q[0].scores, p[0].scores, "the adapter alone predicts as its run");
    // A tag run's reader refuses a classification run.
    let e = Tagger::<NdArray>::from_run(&out).err().expect("not a tag run").to_string();
    assert!(e.contains("does not tag"), "{e}");

    // A task.json whose labels disagree with the trained head is an error naming both.
    let path = out.join("task.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    info["labels"] = serde_json::json!(["a", "b", "c"]);
    std::fs::write(&path, info.to_string()).unwrap();
    let run = TrainedRun::<NdArray>::load(&out, None, &Default::default()).unwrap();
    let e = run.evaluate(Split::Dev, None, &options).unwrap_err().to_string();
    assert!(e.contains("labels"), "{e}");
    let e = TextClassifier::<NdArray>::from_run(&out).err().expect("3 labels, 2 outputs");
    assert!(e.to_string().contains("3 labels"), "{e}");
}

#[test]
fn a_tagging_job_round_trips_through_its_run_folder() {
    let d = dir("tag");
    let out = d.join("run");
    let mut job = job(&tagging_file(&d));
    job.task = Some(TaskKind::Tag);
    let outcome = job.run::<AD>(&out, false, &mut Silent).unwrap();
    assert_eq!(outcome.info.labels, ["O", "B-city", "I-city"]);
    let best = outcome.report.summary.best.clone().unwrap();
    let run = TrainedRun::<NdArray>::load(&out, None, &Default::default()).unwrap();
    let options = EvalOptions { batch_size: 8, ..EvalOptions::default() };
    let eval = run.evaluate(Split::Dev, None, &options).unwrap();
    for name in ["entity_f1", "word_accuracy"] {
        assert_eq!(eval.metrics[name], best.metrics[name], "dev {name} from the run folder");
    }
    let tagger = Tagger::<NdArray>::from_loaded(run).unwrap();
    let tagged = tagger.tag(&["we went to rome today.", "paris"]).unwrap();
    let words: Vec<Vec<&str>> =
        tagged.iter().map(|s| s.iter().map(|w| w.word.as_str()).collect()).collect();
    assert_eq!(words, [vec!["we", "went", "to", "rome", "today", "."], vec!["paris"]]);
    for w in tagged.iter().flatten() {
        assert!(tagger.labels().contains(&w.tag), "{w:?}");
    }
}

#[test]
fn language_model_tasks_need_a_prompt_and_a_decoder() {
    let d = dir("cloze");
    let mut job = job(&classification_file(&d));
    job.task = Some(TaskKind::Cloze);
    let e = job.run::<AD>(&d.join("run"), false, &mut Silent).unwrap_err().to_string();
    assert!(e.contains("needs a decoder"), "{e}");
    job.method = None;
    let e = job.run::<AD>(&d.join("run"), false, &mut Silent).unwrap_err().to_string();
    assert!(e.contains("pick a method"), "{e}");
}
