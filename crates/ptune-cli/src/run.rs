//! `ptune eval | predict | generate`: a trained run (its `task.json` and best `adapter/`) on new
//! data, through the library's [`TrainedRun`], [`TextClassifier`], [`Tagger`] and [`Generator`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ptune_train::generate::Decoding;
use ptune_train::inference::{EvalOptions, Split};
use ptune_train::TrainedRun;
use ptune_train::{GenerateOptions, Generator, Tagger, TaskInfo, TaskKind, TextClassifier};
use ptune_transformer::FrozenOps;

/// Options of `ptune eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Run folder written by `ptune train` (holds task.json and adapter/).
    pub run: PathBuf,
    /// The split to evaluate.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
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
    /// A file of texts: one per line, or JSON Lines (`.jsonl`) with the text in `--text-field`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The field of each `.jsonl` input object that holds the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Write one JSON object per text (`text`, `label`, `score`, `scores` by label; `tags`; or
    /// `generation`) instead of tab-separated lines.
    #[arg(long)]
    pub jsonl: bool,
}

/// The texts of `ptune predict`: arguments, then the `--input` file (plain lines or JSONL).
fn predict_inputs(a: &PredictArgs) -> Result<Vec<String>> {
    let mut texts = a.texts.clone();
    let Some(path) = &a.input else { return Ok(texts) };
    let body =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    for (i, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if !jsonl {
            texts.push(line.to_string());
            continue;
        }
        let where_ = || format!("{}:{}", path.display(), i + 1);
        let row: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", where_()))?;
        match row.get(&a.text_field) {
            Some(serde_json::Value::String(t)) => texts.push(t.clone()),
            Some(other) => bail!("{}: `{}` is {other}, not a text", where_(), a.text_field),
            None => bail!("{}: no `{}` field", where_(), a.text_field),
        }
    }
    Ok(texts)
}

/// How `ptune generate` picks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecodingKind {
    /// The most likely token at every step.
    Greedy,
    /// Sampling with temperature, top-k and top-p.
    Sample,
    /// Beam search.
    Beam,
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
    /// How tokens are picked.
    #[arg(long, value_enum, default_value_t = DecodingKind::Greedy)]
    pub decoding: DecodingKind,
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
    /// Stop before this text (repeat for several).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// HF's repetition penalty (1.0 is off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Print the whole text at the end instead of streaming it token by token.
    #[arg(long)]
    pub no_stream: bool,
}

/// `ptune eval`: the run's task metrics on a split; prints them and writes `<run>/eval-<split>.json`.
pub fn eval<B: FrozenOps>(a: EvalArgs) -> Result<()> {
    let run = TrainedRun::<B>::load(&a.run, None, &B::Device::default())?;
    let options = EvalOptions {
        batch_size: a.batch_size,
        eval_sources: a.eval_sources,
        max_new_tokens: a.max_new_tokens,
    };
    let report = run.evaluate(a.split, a.dataset.as_deref(), &options)?;
    for (source, generated) in &report.samples {
        println!("{source}\n  → {generated}");
    }
    println!("{} on {} ({} split):", a.run.display(), report.dataset, report.split);
    for (k, v) in &report.metrics {
        println!("  {k}: {v:.4}");
    }
    ptune_prompt::adapter::write_atomic(
        &a.run.join(format!("eval-{}.json", a.split)),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(())
}

/// `ptune predict`: labels (with their probability), word tags or generations for texts.
pub fn predict_texts<B: FrozenOps>(a: PredictArgs) -> Result<()> {
    let texts = predict_inputs(&a)?;
    if texts.is_empty() {
        bail!("nothing to predict: give texts or --input FILE");
    }
    let (info, _) = TaskInfo::load(&a.run)?;
    let mut stdout = std::io::stdout().lock();
    let mut emit = |text: &str, tsv: String, json: serde_json::Value| -> Result<()> {
        if a.jsonl {
            let mut obj = serde_json::json!({ "text": text });
            if let (Some(obj), serde_json::Value::Object(fields)) = (obj.as_object_mut(), json) {
                obj.extend(fields);
            }
            writeln!(stdout, "{obj}")?;
        } else {
            writeln!(stdout, "{tsv}")?;
        }
        Ok(())
    };
    match info.task {
        TaskKind::Classify | TaskKind::Cloze => {
            let classifier = TextClassifier::<B>::from_run(&a.run)?;
            let labels = classifier.labels().to_vec();
            for (t, p) in texts.iter().zip(classifier.predict(&texts)?) {
                let score = p.scores.get(p.index).copied().unwrap_or(f32::NAN);
                let scores: serde_json::Map<String, serde_json::Value> =
                    labels.iter().cloned().zip(p.scores.iter().map(|&s| s.into())).collect();
                let json =
                    serde_json::json!({ "label": p.label, "score": score, "scores": scores });
                emit(t, format!("{}\t{score:.4}\t{t}", p.label), json)?;
            }
        }
        TaskKind::Generate => {
            let generator = Generator::<B>::from_run(&a.run)?;
            for t in &texts {
                let out = generator.generate(t, &GenerateOptions::default())?;
                emit(t, format!("{t}\t{out}"), serde_json::json!({ "generation": out }))?;
            }
        }
        TaskKind::Tag => {
            let tagger = Tagger::<B>::from_run(&a.run)?;
            for (t, words) in texts.iter().zip(tagger.tag(&texts)?) {
                let cells: Vec<String> =
                    words.iter().map(|w| format!("{}/{}", w.word, w.tag)).collect();
                let tags: Vec<serde_json::Value> = words
                    .iter()
                    .map(|w| serde_json::json!({ "word": w.word, "tag": w.tag }))
                    .collect();
                emit(t, cells.join(" "), serde_json::json!({ "tags": tags }))?;
            }
        }
    }
    Ok(())
}

/// `ptune generate`: one continuation with the chosen decoding, with or without a run's adapter.
pub fn generate_text<B: FrozenOps>(a: GenerateArgs) -> Result<()> {
    let generator = match (&a.run, &a.model) {
        (Some(run), model) => Generator::<B>::from_loaded(TrainedRun::load(
            run,
            model.as_deref(),
            &B::Device::default(),
        )?)?,
        (None, Some(model)) => Generator::<B>::from_model(model)?,
        (None, None) => bail!("give --model or --run"),
    };
    let decoding = match a.decoding {
        DecodingKind::Greedy => Decoding::Greedy,
        DecodingKind::Sample => Decoding::Sample {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        DecodingKind::Beam => Decoding::Beam { width: a.beams, length_penalty: a.length_penalty },
    };
    let options = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        decoding,
        stop: a.stop.clone(),
        repetition_penalty: a.repetition_penalty,
    };
    if a.no_stream {
        println!("{}", generator.generate(&a.text, &options)?);
        return Ok(());
    }
    let mut stdout = std::io::stdout();
    let mut failed = None;
    generator.generate_stream(&a.text, &options, &mut |piece| {
        if failed.is_none() {
            failed = write!(stdout, "{piece}").and_then(|()| stdout.flush()).err();
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    println!();
    Ok(())
}
