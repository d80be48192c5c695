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

/// Full fine-tuning through the same job: the backbone's weights change (read back from the run
/// folder and compared with the base model), the training loss falls, the best epoch's dev and
/// test scores are reported and reproduced from the folder, and a resumed run ends where an
/// uninterrupted one does.
#[test]
fn full_fine_tuning_trains_the_backbone() {
    use burn::module::Module;
    use ptune_transformer::Backbone;

    let d = dir("finetune");
    let out = d.join("run");
    let mut job = job(&classification_file(&d));
    job.method = None;
    job.full_finetune = true;
    job.baselines = false;
    job.train.epochs = 3;
    job.train.lr = 1e-3;
    job.train.weight_decay = 0.01;
    assert_eq!(job.method_name(), "full-finetune");
    let outcome = job.run::<AD>(&out, false, &mut Silent).unwrap();
    let summary = &outcome.report.summary;

    let (base, _) =
        ptune_train::inference::load_backbone::<NdArray>(&tiny_bert(), &Default::default())
            .unwrap();
    let base_params = Module::num_params(&base);
    assert_eq!(summary.trainable_parameters, base_params + 2 * (32 + 1), "backbone + head");

    // The loss of the last epoch is below the first's.
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses[2] < losses[0], "training loss falls: {losses:?}");

    // The run folder holds the fine-tuned weights: they differ from the base model's, in the
    // embeddings and in every layer.
    let run = TrainedRun::<NdArray>::load(&out, None, &Default::default()).unwrap();
    let changed = |a: burn::tensor::Tensor<NdArray, 2>, b: burn::tensor::Tensor<NdArray, 2>| {
        (a - b).abs().max().into_scalar()
    };
    assert!(changed(run.backbone.embedding_matrix(), base.embedding_matrix()) > 1e-6);
    let (ptune_transformer::AnyBackbone::Bert(tuned), ptune_transformer::AnyBackbone::Bert(bert)) =
        (&run.backbone, &base)
    else {
        panic!("tiny-bert is a BERT");
    };
    for (t, b) in tuned.layers.iter().zip(&bert.layers) {
        let (t, b) = (t.attention.query.weight.val(), b.attention.query.weight.val());
        assert!(changed(t, b) > 1e-6, "every layer's query weight was trained");
    }

    // Dev and test scores of the best epoch, reproduced from the folder.
    let best = summary.best.clone().unwrap();
    let test = summary.test.clone().expect("classification reports the test split");
    let options = EvalOptions { batch_size: 8, ..EvalOptions::default() };
    let dev_again = run.evaluate(Split::Dev, None, &options).unwrap();
    assert_eq!(dev_again.metrics["accuracy"], best.metrics["accuracy"]);
    let test_again = run.evaluate(Split::Test, None, &options).unwrap();
    assert_eq!(test_again.metrics["accuracy"], test.metrics["accuracy"]);

    // Killed after step 4 and resumed: the same final weights as the uninterrupted run.
    let resumed = d.join("resumed");
    let mut first = job.clone();
    first.train.stop_after_steps = Some(4);
    assert!(first.run::<AD>(&resumed, false, &mut Silent).unwrap().report.summary.interrupted);
    let again = job.run::<AD>(&resumed, true, &mut Silent).unwrap().report.summary;
    let epochs = |s: &ptune_train::RunSummary| -> Vec<(usize, f64, ptune_train::Evaluation)> {
        s.history.iter().map(|r| (r.step, r.train_loss, r.dev.clone())).collect()
    };
    assert_eq!(epochs(&again), epochs(summary), "resumed: the same steps, losses and scores");
    assert_eq!(again.test, summary.test);
    let resumed_run = TrainedRun::<NdArray>::load(&resumed, None, &Default::default()).unwrap();
    assert_eq!(
        changed(resumed_run.backbone.embedding_matrix(), run.backbone.embedding_matrix()),
        0.0
    );
}

#[test]
fn full_fine_tuning_refuses_what_it_cannot_train() {
    let d = dir("finetune-refused");
    let mut job = job(&classification_file(&d));
    job.full_finetune = true;
    let e = job.run::<AD>(&d.join("run"), false, &mut Silent).unwrap_err().to_string();
    assert!(e.contains("not a soft prompt"), "{e}");
    job.method = None;
    job.task = Some(TaskKind::Cloze);
    let e = job.run::<AD>(&d.join("run"), false, &mut Silent).unwrap_err().to_string();
    assert!(e.contains("needs a decoder"), "{e}");
    job.task = None;
    job.train.gradient_checkpointing = true;
    let e = job.run::<AD>(&d.join("run"), false, &mut Silent).unwrap_err().to_string();
    assert!(e.contains("checkpointing"), "{e}");
}

/// The tiny Llama with a tokenizer (the tiny BERT's WordPiece fits its 128 ids).
fn tiny_llama(at: &Path) -> String {
    let fixtures =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ptune-transformer/tests/fixtures");
    let model = at.join("tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures.join("tiny-llama").join(f), model.join(f)).unwrap();
    }
    std::fs::copy(fixtures.join("tiny-bert/tokenizer.json"), model.join("tokenizer.json")).unwrap();
    model.display().to_string()
}

/// Full fine-tuning of a decoder on generation (and cloze): no prompt, the decoder's own weights
/// and its LM head trained by the same loop; the target loss falls, every layer changes, and the
/// run folder reproduces the best epoch's dev scores and generates with the tuned weights.
#[test]
fn full_fine_tuning_trains_a_decoder() {
    use ptune_transformer::Backbone;

    let d = dir("finetune-decoder");
    let model = tiny_llama(&d);
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let (a, b) = (["good", "bad", "fine"][i % 3], ["film", "story"][i % 2]);
            serde_json::json!({"source": format!("the {b} was {a}"), "target": format!("a {a} {b}")})
                .to_string()
        })
        .collect();
    let data = d.join("pairs.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let mut job = TrainJob::new(&model, &data.display().to_string());
    job.task = Some(TaskKind::Generate);
    job.method = None;
    job.full_finetune = true;
    job.max_len = Some(16);
    job.eval_sources = 2;
    job.max_new_tokens = 4;
    job.train.epochs = 3;
    job.train.batch_size = 8;
    job.train.lr = 1e-3;
    assert_eq!(job.method_name(), "full-finetune");
    let out = d.join("run");
    let summary = job.run::<AD>(&out, false, &mut Silent).unwrap().report.summary;
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses[2] < losses[0], "training loss falls: {losses:?}");

    let (base, _) =
        ptune_train::inference::load_backbone::<NdArray>(&model, &Default::default()).unwrap();
    assert_eq!(summary.trainable_parameters, burn::module::Module::num_params(&base));
    let run = TrainedRun::<NdArray>::load(&out, None, &Default::default()).unwrap();
    assert!(run.prompt.is_none() && run.head.is_none());
    let changed = |a: burn::tensor::Tensor<NdArray, 2>, b: burn::tensor::Tensor<NdArray, 2>| {
        (a - b).abs().max().into_scalar()
    };
    assert!(changed(run.backbone.embedding_matrix(), base.embedding_matrix()) > 1e-6);
    let (
        ptune_transformer::AnyBackbone::Llama(tuned),
        ptune_transformer::AnyBackbone::Llama(llama),
    ) = (&run.backbone, &base)
    else {
        panic!("tiny-llama is a Llama");
    };
    for (t, b) in tuned.layers.iter().zip(&llama.layers) {
        let (t, b) = (t.attention.q_proj.weight.val(), b.attention.q_proj.weight.val());
        assert!(changed(t, b) > 1e-6, "every layer's query weight was trained");
    }

    // The best epoch's dev loss and BLEU, reproduced from the folder.
    let best = summary.best.clone().unwrap();
    let options = EvalOptions { batch_size: 8, eval_sources: 2, max_new_tokens: 4 };
    let again = run.evaluate(Split::Dev, None, &options).unwrap();
    for m in ["loss", "bleu"] {
        let (a, b) = (again.metrics[m], best.metrics[m]);
        assert!((a - b).abs() < 1e-4, "{m}: {a} vs {b}");
    }
    // The library's generator reads the same folder.
    let generator = ptune_train::Generator::<NdArray>::from_run(&out).unwrap();
    generator.generate("the film was good", &Default::default()).unwrap();

    // Cloze through the same wrapper: the decoder scores the verbalizer after the template.
    let mut cloze = job.clone();
    cloze.dataset = classification_file(&d);
    cloze.task = Some(TaskKind::Cloze);
    cloze.cloze_template = Some("{text} it was".into());
    cloze.verbalizer = Some(vec!["bad".into(), "good".into()]);
    cloze.train.epochs = 2;
    let summary = cloze.run::<AD>(&d.join("cloze"), false, &mut Silent).unwrap().report.summary;
    let test = summary.test.clone().expect("cloze reports the test split");
    let run = TrainedRun::<NdArray>::load(d.join("cloze"), None, &Default::default()).unwrap();
    let again = run.evaluate(Split::Test, None, &options).unwrap();
    assert_eq!(again.metrics["accuracy"], test.metrics["accuracy"]);
}
