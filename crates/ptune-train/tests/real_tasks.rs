//! The tasks on the real models and data (fetched by `cargo xtask fetch`): token classification on
//! MiniLM / e2e-slots lines up with words with and without virtual tokens; every method lowers the
//! target loss of SmolLM2 on an E2E slice (generation); cloze with verbalizers trains on SmolLM2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "fetched-models")]

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use ptune_data::recipes::fetched;
use ptune_data::tagging::{bio_labels, e2e_slots, tokenize_tagging, TaggingSet};
use ptune_data::tasks::{tokenize_classification, tokenize_generation, LmExample};
use ptune_data::{ClassificationSet, Splits};
use ptune_prompt::p_tuning::{PTuningConfig, PTuningEncoder};
use ptune_prompt::p_tuning_v2::PTuningV2Config;
use ptune_prompt::prefix_tuning::PrefixTuningConfig;
use ptune_prompt::prompt_tuning::PromptTuningConfig;
use ptune_prompt::{ClassifierHeadConfig, SoftPrompt};
use ptune_train::lm::{mean_target_loss, verbalizer, CausalLm, Cloze};
use ptune_train::tagging::TokenClassification;
use ptune_train::{train, Classifier, Task, TrainConfig};
use ptune_transformer::{load_model, AnyBackbone, Backbone, LoadedModel, TextTokenizer};

type AD = Autodiff<Flex>;

/// The backend RNG is global: tests that draw from it (init, dropout) run one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(name: &str) -> (AnyBackbone<AD>, TextTokenizer) {
    let LoadedModel { backbone, tokenizer, .. } =
        load_model::<AD>(&fetched("models", name).unwrap(), &Default::default()).unwrap();
    (backbone, tokenizer.unwrap())
}

fn out(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ptune-real-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn token_classification_lines_up_with_words_with_and_without_virtual_tokens() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (backbone, tok) = model("minilm");
    let slots = e2e_slots(&fetched("datasets", "e2e").unwrap()).unwrap();
    let labels = bio_labels(&slots.splits.train);
    let src = slots.source.clone();
    let tokenize = |rows: &[ptune_data::tagging::TaggedSentence]| {
        tokenize_tagging(rows, &labels, &tok, 64, &src).unwrap()
    };
    let data = TaggingSet {
        labels: labels.clone(),
        splits: Splits {
            train: tokenize(&slots.splits.train[..320]),
            dev: tokenize(&slots.splits.dev),
            test: vec![],
        },
    };
    let device = Default::default();
    AD::seed(&device, 11);
    let n = 8;
    let methods: Vec<(&str, SoftPrompt<AD>)> = vec![
        (
            "prompt-tuning (8 virtual tokens before the text)",
            PromptTuningConfig::new(n).init(&backbone, Some(&tok)).unwrap(),
        ),
        (
            "p-tuning-v2 (prefixes: no virtual positions)",
            PTuningV2Config::new(n).init(&backbone, Some(&tok)).unwrap(),
        ),
    ];
    for (name, prompt) in methods {
        // The stripped output's position j is the text's token j: with prepended virtual tokens, the
        // raw output's position n + j.
        let rows: Vec<Vec<u32>> = data.splits.dev[..3].iter().map(|e| e.ids.clone()).collect();
        let batch = prompt.prepare(&backbone, &rows).unwrap();
        let hidden = backbone.forward(batch.input.clone()).unwrap();
        let stripped = batch.strip_virtual(hidden.clone());
        let shift = if name.starts_with("prompt") { n } else { 0 };
        let len = rows[0].len();
        let raw = hidden.narrow(0, 0, 1).narrow(1, shift, len);
        let diff: f32 =
            (stripped.narrow(0, 0, 1).narrow(1, 0, len) - raw).abs().max().into_scalar();
        assert_eq!(diff, 0.0, "{name}: stripped output is the text's own positions");

        let head = ClassifierHeadConfig::new(384, labels.len()).init(&device);
        let cfg =
            TrainConfig { epochs: 2, batch_size: 16, lr: 1e-2, seed: 3, ..TrainConfig::default() };
        let task = TokenClassification { data: &data };
        let dir = out("tag");
        let (trained, summary) = train(
            &backbone,
            &task,
            Classifier { prompt: Some(prompt), head },
            &cfg,
            &ptune_train::RunOptions::new(&dir, "minilm"),
        )
        .unwrap();
        let f1 = summary.best_metric("entity_f1");
        let acc = summary.best_metric("word_accuracy");
        eprintln!("{name}: dev entity F1 {f1:.4}, word accuracy {acc:.4}");
        // Every word tagged `O` scores 0 entity F1.
        assert!(f1 > 0.4, "{name}: entity F1 {f1}");
        if shift > 0 {
            // Reading the head at the raw positions (not stripping the virtual tokens) puts every
            // word's tag on the wrong token: the same trained model then finds far fewer entities.
            let dev: Vec<_> = data.splits.dev.iter().collect();
            let model = trained.no_grad();
            let rows: Vec<Vec<u32>> = dev.iter().map(|e| e.ids.clone()).collect();
            let prompt = model.prompt.as_ref().unwrap();
            let mut pred = Vec::new();
            for (chunk, ex) in rows.chunks(32).zip(dev.chunks(32)) {
                let batch = prompt.prepare(&backbone, chunk).unwrap();
                let raw = backbone.forward(batch.input.clone()).unwrap();
                let [b, s, d] = raw.dims();
                let index: Vec<i64> = ex
                    .iter()
                    .enumerate()
                    .flat_map(|(r, e)| e.word_starts.iter().map(move |&w| (r * s + w) as i64))
                    .collect();
                let m = index.len();
                let index = burn::tensor::Tensor::<AD, 1, burn::tensor::Int>::from_data(
                    burn::tensor::TensorData::new(index, [m]),
                    &device,
                );
                let logits = model.head.forward(raw.reshape([b * s, d]).select(0, index));
                let flat: Vec<usize> = logits
                    .argmax(1)
                    .into_data()
                    .convert::<i64>()
                    .iter::<i64>()
                    .map(|c| c as usize)
                    .collect();
                let mut at = 0;
                for e in ex {
                    pred.push(flat[at..at + e.tags.len()].to_vec());
                    at += e.tags.len();
                }
            }
            let (shifted_f1, _) =
                ptune_train::tagging::tagging_scores(&pred, &data.splits.dev, &labels);
            eprintln!("{name}: entity F1 read at unstripped positions {shifted_f1:.4}");
            assert!(shifted_f1 < f1 / 2.0, "{name}: aligned {f1}, misaligned {shifted_f1}");
        }
        assert!(dir.join("adapter/adapter_config.json").is_file());
        let config = std::fs::read_to_string(dir.join("adapter/adapter_config.json")).unwrap();
        assert!(config.contains("TOKEN_CLS"), "{config}");
    }
}

fn e2e_slice(tok: &TextTokenizer, eos: Option<u32>) -> Vec<LmExample> {
    let pairs = ptune_data::recipes::e2e(&fetched("datasets", "e2e").unwrap()).unwrap();
    tokenize_generation(&pairs.train[..4], tok, "\nDescription:", eos, 64).unwrap()
}

/// A few AdamW steps on `task` over fixed batches; returns the trained model.
fn steps<T: Task<AD>>(
    backbone: &AnyBackbone<AD>,
    task: &T,
    mut m: T::Model,
    batches: &[Vec<usize>],
    n: usize,
    lr: f64,
) -> T::Model {
    let mut optim = AdamWConfig::new().init::<AD, T::Model>();
    for s in 0..n {
        let loss = task.loss(backbone, &m, &batches[s % batches.len()]).unwrap();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(lr, m, grads);
    }
    m
}

#[test]
fn every_method_lowers_the_e2e_target_loss_on_smollm2() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (backbone, tok) = model("smollm2");
    let eos = backbone.as_decoder().expect("a decoder").eos_token_id();
    let examples = e2e_slice(&tok, eos);
    assert!(examples.iter().all(|e| e.target.last() == eos.as_ref()), "targets end with EOS");
    let task = CausalLm { train: &examples, dev: &examples, references: None };
    AD::seed(&Default::default(), 2);
    let t = Some(&tok);
    let n = 4;
    let methods: Vec<(&str, SoftPrompt<AD>, f64)> = vec![
        ("prompt-tuning", PromptTuningConfig::new(n).init(&backbone, t).unwrap(), 1e-2),
        (
            "p-tuning-mlp",
            PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Mlp { hidden: Some(64) })
                .init(&backbone, t)
                .unwrap(),
            5e-3,
        ),
        (
            "p-tuning-lstm",
            PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Lstm { hidden: Some(32), paper: false })
                .init(&backbone, t)
                .unwrap(),
            5e-3,
        ),
        (
            "prefix-tuning",
            PrefixTuningConfig::new(n).with_projection(Some(64)).init(&backbone, t).unwrap(),
            // The Tanh MLP drives all 30 layers' keys and values: a gentler rate (1e-2 diverges).
            3e-3,
        ),
        ("p-tuning-v2", PTuningV2Config::new(n).init(&backbone, t).unwrap(), 1e-2),
    ];
    for (name, prompt, lr) in methods {
        let before =
            mean_target_loss(&backbone, Some(&prompt.clone().no_grad()), &examples, 4).unwrap();
        let trained = steps(&backbone, &task, prompt, &[vec![0, 1], vec![2, 3]], 6, lr);
        let after = mean_target_loss(&backbone, Some(&trained.no_grad()), &examples, 4).unwrap();
        eprintln!("smollm2 {name}: E2E target loss {before:.4} → {after:.4}");
        assert!(after < before - 0.25, "{name}: {before} → {after}");
    }
}

#[test]
fn cloze_with_verbalizers_trains_on_smollm2() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (backbone, tok) = model("smollm2");
    let words = vec![" negative".to_string(), " positive".to_string()];
    let ids = verbalizer(&tok, &words).unwrap();
    assert_eq!(ids.len(), 2);
    let e = verbalizer(&tok, &[" antidisestablishmentarianism".into()]).unwrap_err();
    assert!(e.to_string().contains("single-token"), "{e}");

    let text =
        ptune_data::recipes::rt_sentences(&fetched("datasets", "rt-sentences").unwrap()).unwrap();
    let rows: Vec<_> = text.splits.train[..8]
        .iter()
        .map(|r| ptune_data::formats::Record {
            text: format!("{} Sentiment:", r.text),
            ..r.clone()
        })
        .collect();
    let train = tokenize_classification(&rows, &text.labels, &tok, 48, &text.source).unwrap();
    let data = ClassificationSet {
        labels: text.labels.clone(),
        splits: Splits { train, dev: vec![], test: vec![] },
    };
    let task = Cloze { data: &data, verbalizer: ids };
    AD::seed(&Default::default(), 4);
    let prompt = PromptTuningConfig::new(4).init(&backbone, Some(&tok)).unwrap();
    let all: Vec<usize> = (0..8).collect();
    let loss =
        |p: &SoftPrompt<AD>| -> f64 { task.loss(&backbone, p, &all).unwrap().into_scalar() as f64 };
    let before = loss(&prompt);
    let trained = steps(&backbone, &task, prompt, &[vec![0, 1, 2, 3], vec![4, 5, 6, 7]], 6, 1e-2);
    let after = loss(&trained);
    eprintln!("smollm2 cloze: verbalizer loss {before:.4} → {after:.4}");
    assert!(after < before * 0.8, "{before} → {after}");
}
