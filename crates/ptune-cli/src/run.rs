//! `ptune eval | predict | generate`: a trained run (its `task.json` and best `adapter/`) on new data.

use ptune_transformer::FrozenOps;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use ptune_prompt::adapter::load_adapter;
use ptune_prompt::SoftPrompt;
use ptune_train::classify::evaluate;
use ptune_train::generate::{generate, Decoding, GenerationConfig};
use ptune_train::lm::{
    cloze_predict, generate_all, generation_scores, mean_target_loss, ReferenceSet,
};
use ptune_train::tagging::{predict_tags, tagging_scores};
use ptune_train::{Classifier, GenerateOptions, Generator, TextClassifier};
use ptune_transformer::{load_model, AnyBackbone, Backbone, TextTokenizer};

use crate::task::{load_data, TaskData, TaskInfo, TaskKind};
use crate::train::{eos_of, resolve_model};

/// Options of `ptune eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Run folder written by `ptune train` (holds task.json and adapter/).
    pub run: PathBuf,
    /// `dev` or `test`.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Another data set for the same task (default: the run's).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Generation: sources decoded for BLEU / ROUGE-L.
    #[arg(long, default_value_t = 50)]
    pub eval_sources: usize,
    /// Generation: most new tokens.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
}

/// Options of `ptune predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Run folder written by `ptune train`.
    pub run: PathBuf,
    /// Texts to label (one per argument); for `tag`, words are split on whitespace.
    pub texts: Vec<String>,
    /// A file with one text per line instead.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

/// Options of `ptune generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Model (`smollm2`, a folder or a GGUF file); default: the run's.
    #[arg(long)]
    pub model: Option<String>,
    /// A run folder whose adapter (and separator) to use.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// The source text.
    pub text: String,
    /// `greedy`, `sample` or `beam`.
    #[arg(long, default_value = "greedy")]
    pub decoding: String,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sampling: keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sampling: nucleus probability.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Beam search width.
    #[arg(long, default_value_t = 4)]
    pub beams: usize,
    /// Beam search length penalty.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Most new tokens.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
}

/// A trained run, loaded: backbone, tokenizer, task, prompt and head.
struct LoadedRun<B: Backend> {
    backbone: AnyBackbone<B>,
    tok: TextTokenizer,
    info: TaskInfo,
    prompt: Option<SoftPrompt<B>>,
    head: Option<ptune_prompt::ClassifierHead<B>>,
}

fn load_run<B: FrozenOps>(run: &Path, model_override: Option<&str>) -> Result<LoadedRun<B>> {
    let (info, dir) = TaskInfo::load(run)?;
    let device = B::Device::default();
    let model_path = resolve_model(model_override.unwrap_or(&info.model))?;
    let loaded = load_model::<B>(&model_path, &device)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let tok = loaded.tokenizer.clone().context("the model has no tokenizer")?;
    let backbone = loaded.backbone;
    let adapter_dir = dir.join("adapter");
    let (prompt, head) = if adapter_dir.join("adapter_config.json").is_file() {
        let a = load_adapter::<B>(&adapter_dir, &backbone.dims(), &device)?;
        (Some(a.prompt), a.head)
    } else {
        (None, None)
    };
    Ok(LoadedRun { backbone, tok, info, prompt, head })
}

/// The `dev` or `test` part.
fn pick<'a, T>(split: &str, dev: &'a T, test: &'a T) -> Result<&'a T> {
    match split {
        "dev" => Ok(dev),
        "test" => Ok(test),
        other => bail!("unknown split `{other}` (dev, test)"),
    }
}

fn classifier<B: FrozenOps>(r: &LoadedRun<B>) -> Result<Classifier<B>> {
    let head = r.head.clone().context("the run's adapter has no head (train it first)")?;
    Ok(Classifier { prompt: r.prompt.clone(), head })
}

/// `ptune eval`: the run's task metrics on a split; prints them and writes `<run>/eval-<split>.json`.
pub fn eval<B: FrozenOps>(a: EvalArgs) -> Result<()> {
    let mut r = load_run::<B>(&a.run, None)?;
    if let Some(d) = &a.dataset {
        r.info.dataset = d.clone();
    }
    let mut info = r.info.clone();
    let data = load_data(&mut info, &r.tok, usize::MAX, eos_of(&r.backbone))?;
    let metrics: Vec<(&str, f64)> = match &data {
        TaskData::Labelled(d) if info.task == TaskKind::Classify => {
            let ex = pick(&a.split, &d.splits.dev, &d.splits.test)?;
            let pooling = info.pooling.unwrap_or(ptune_train::Pooling::Mean);
            let (acc, f1) =
                evaluate(&r.backbone, &classifier(&r)?, ex, d.labels.len(), a.batch_size, pooling)?;
            vec![("accuracy", acc), ("macro_f1", f1)]
        }
        TaskData::Labelled(d) => {
            let ex = pick(&a.split, &d.splits.dev, &d.splits.test)?;
            let verbalizer =
                ptune_train::lm::verbalizer(&r.tok, info.verbalizer.as_deref().unwrap_or(&[]))?;
            let pred =
                cloze_predict(&r.backbone, r.prompt.as_ref(), ex, &verbalizer, a.batch_size)?;
            let gold: Vec<usize> = ex.iter().map(|e| e.label).collect();
            vec![
                ("accuracy", ptune_train::metrics::accuracy(&pred, &gold)),
                ("macro_f1", ptune_train::metrics::macro_f1(&pred, &gold, d.labels.len())),
            ]
        }
        TaskData::Tagged(d) => {
            let ex = pick(&a.split, &d.splits.dev, &d.splits.test)?;
            let pred = predict_tags(&r.backbone, &classifier(&r)?, ex, a.batch_size)?;
            let (f1, acc) = tagging_scores(&pred, ex, &d.labels);
            vec![("entity_f1", f1), ("word_accuracy", acc)]
        }
        TaskData::Generation { examples, pairs } => {
            let ex = pick(&a.split, &examples.dev, &examples.test)?;
            let rows = pick(&a.split, &pairs.dev, &pairs.test)?;
            let loss = mean_target_loss(&r.backbone, r.prompt.as_ref(), ex, a.batch_size)?;
            let sep = info.separator.clone().unwrap_or_default();
            let refs = ReferenceSet::new(rows, &r.tok, &sep, a.eval_sources)?;
            let cfg = ptune_train::lm::greedy(a.max_new_tokens, eos_of(&r.backbone));
            let hyps = generate_all(&r.backbone, r.prompt.as_ref(), &r.tok, &refs, &cfg)?;
            let (bleu, rouge) = generation_scores(&hyps, &refs);
            for ((source, _, _), h) in refs.items.iter().zip(&hyps).take(3) {
                println!("{source}\n  → {h}");
            }
            vec![("loss", loss), ("bleu", bleu), ("rouge_l", rouge)]
        }
    };
    println!("{} on {} ({} split):", a.run.display(), info.dataset, a.split);
    for (k, v) in &metrics {
        println!("  {k}: {v:.4}");
    }
    let json: serde_json::Map<String, serde_json::Value> =
        metrics.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let report = serde_json::json!({"dataset": info.dataset, "split": a.split, "metrics": json});
    ptune_prompt::adapter::write_atomic(
        &a.run.join(format!("eval-{}.json", a.split)),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(())
}

/// `ptune predict`: labels, tags or generations for texts.
pub fn predict_texts<B: FrozenOps>(a: PredictArgs) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(path) = &a.input {
        let body =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if texts.is_empty() {
        bail!("nothing to predict: give texts or --input FILE");
    }
    let (task_info, _) = TaskInfo::load(&a.run)?;
    match task_info.task {
        TaskKind::Classify | TaskKind::Cloze => {
            let classifier = TextClassifier::<B>::from_run(&a.run)?;
            for (t, p) in texts.iter().zip(classifier.predict(&texts)?) {
                println!("{}\t{t}", p.label);
            }
        }
        TaskKind::Generate => {
            let generator = Generator::<B>::from_run(&a.run)?;
            for t in &texts {
                println!("{t}\t{}", generator.generate(t, &GenerateOptions::default())?);
            }
        }
        TaskKind::Tag => {
            let r = load_run::<B>(&a.run, None)?;
            let info = &r.info;
            let sentences: Vec<ptune_data::tagging::TaggedSentence> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let words = ptune_data::tagging::words_of(t);
                    let tags = vec!["O".to_string(); words.len()];
                    ptune_data::tagging::TaggedSentence { words, tags, line: i + 1 }
                })
                .collect();
            let ex = ptune_data::tagging::tokenize_tagging(
                &sentences,
                &info.labels,
                &r.tok,
                info.max_len,
                Path::new("<input>"),
            )?;
            let pred = predict_tags(&r.backbone, &classifier(&r)?, &ex, 32)?;
            for (s, p) in sentences.iter().zip(pred) {
                let cells: Vec<String> =
                    s.words.iter().zip(p).map(|(w, t)| format!("{w}/{}", info.labels[t])).collect();
                println!("{}", cells.join(" "));
            }
        }
    }
    Ok(())
}

/// `ptune generate`: one continuation with the chosen decoding, with or without a run's adapter.
pub fn generate_text<B: FrozenOps>(a: GenerateArgs) -> Result<()> {
    let (backbone, tok, prompt, separator) = match &a.run {
        Some(run) => {
            let r = load_run::<B>(run, a.model.as_deref())?;
            let sep = r.info.separator.clone().unwrap_or_default();
            (r.backbone, r.tok, r.prompt, sep)
        }
        None => {
            let model = a.model.clone().context("give --model or --run")?;
            let path = resolve_model(&model)?;
            let loaded = load_model::<B>(&path, &B::Device::default())?;
            let tok = loaded.tokenizer.clone().context("the model has no tokenizer")?;
            (loaded.backbone, tok, None, String::new())
        }
    };
    let decoding = match a.decoding.as_str() {
        "greedy" => Decoding::Greedy,
        "sample" => Decoding::Sample {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        "beam" => Decoding::Beam { width: a.beams, length_penalty: a.length_penalty },
        other => bail!("unknown decoding `{other}` (greedy, sample, beam)"),
    };
    let cfg =
        GenerationConfig { max_new_tokens: a.max_new_tokens, eos: eos_of(&backbone), decoding };
    let ids = tok.encode_plain(&format!("{}{separator}", a.text))?;
    let out = generate(&backbone, prompt.as_ref(), &ids, &cfg)?;
    println!("{}", tok.decode(&out)?.trim());
    Ok(())
}
