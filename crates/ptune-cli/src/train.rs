//! `ptune train`: a soft prompt of any method on a classification data set, with baselines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use ptune_data::formats::ColumnMap;
use ptune_data::tasks::tokenize_classification;
use ptune_data::{ClassificationSet, Splits};
use ptune_prompt::p_tuning::{PTuningConfig, PTuningEncoder};
use ptune_prompt::p_tuning_v2::{LayerSelection, PTuningV2Config};
use ptune_prompt::prefix_tuning::PrefixTuningConfig;
use ptune_prompt::prompt_tuning::PromptTuningConfig;
use ptune_prompt::{ClassifierHeadConfig, SoftPrompt};
use ptune_train::classify::{linear_probe, majority_baseline, train_classifier};
use ptune_train::schedule::Schedule;
use ptune_train::{Classifier, Pooling, TrainConfig};
use ptune_transformer::{load_model, AnyBackbone, Backbone, TextTokenizer};
use serde::{Deserialize, Serialize};

/// Options of `ptune train` (also readable from a TOML file with `--config`; flags given on the
/// command line win).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TrainArgs {
    /// TOML file holding any of these options (`model = "minilm"`, `method = "p-tuning-v2"`, …).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Model: `minilm`, `smollm2` (fetched by `cargo xtask fetch`), an HF folder or a GGUF file.
    #[arg(long)]
    pub model: Option<String>,
    /// `prompt-tuning`, `p-tuning`, `prefix-tuning`, `p-tuning-v2`, or `linear-probe` (no prompt).
    #[arg(long)]
    pub method: Option<String>,
    /// `rt-sentences`, `uci-sentiment`, or a .jsonl/.csv/.tsv file with `text` and `label` columns.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Run folder (metrics.json, metrics.jsonl, curve.svg, adapter/, state/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Virtual tokens / prefix slots.
    #[arg(long)]
    pub virtual_tokens: Option<usize>,
    /// Hidden width of P-Tuning / Prefix-Tuning encoders.
    #[arg(long)]
    pub encoder_hidden: Option<usize>,
    /// P-Tuning encoder: `mlp`, `lstm` or `lstm-paper`.
    #[arg(long)]
    pub encoder: Option<String>,
    /// P-Tuning template, e.g. "[P*4] {text} [P*4]".
    #[arg(long)]
    pub template: Option<String>,
    /// P-Tuning v2: prefixes on the top K layers only.
    #[arg(long)]
    pub top_layers: Option<usize>,
    /// Prefix dropout (prefix methods).
    #[arg(long)]
    pub prefix_dropout: Option<f64>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Gradient accumulation (batches per optimizer step).
    #[arg(long)]
    pub accumulation: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// `linear`, `cosine` or `constant` decay after warmup.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Stop after this many epochs without a better dev accuracy.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Longest tokenized text (longer ones are truncated, keeping the final special token).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Use only the first N training examples (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// `mean` (over text tokens) or `pooler` (HF's, as PEFT).
    #[arg(long)]
    pub pooling: Option<String>,
    /// Continue from `<out>/state` if present.
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,
    /// Also report the majority-class and linear-probe baselines.
    #[arg(long)]
    #[serde(default)]
    pub baselines: bool,
}

fn merged(cli: TrainArgs) -> Result<TrainArgs> {
    let Some(path) = &cli.config else { return Ok(cli) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: TrainArgs =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    macro_rules! pick {
        ($($f:ident),*) => { TrainArgs { config: cli.config.clone(), resume: cli.resume || file.resume,
            baselines: cli.baselines || file.baselines, $($f: cli.$f.clone().or(file.$f.clone())),* } };
    }
    Ok(pick!(
        model,
        method,
        dataset,
        out,
        virtual_tokens,
        encoder_hidden,
        encoder,
        template,
        top_layers,
        prefix_dropout,
        epochs,
        batch_size,
        accumulation,
        lr,
        schedule,
        patience,
        max_len,
        train_limit,
        seed,
        pooling
    ))
}

/// `minilm` / `smollm2` → the fetched folder; anything else is a path.
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    if matches!(name, "minilm" | "smollm2") {
        return Ok(ptune_data::recipes::fetched("models", name)?);
    }
    Ok(PathBuf::from(name))
}

fn build_prompt<B: AutodiffBackend>(
    a: &TrainArgs,
    method: &str,
    backbone: &AnyBackbone<B>,
    tok: &TextTokenizer,
) -> Result<Option<SoftPrompt<B>>> {
    let n = a.virtual_tokens.unwrap_or(16);
    let d = backbone.dims();
    let t = Some(tok);
    Ok(Some(match method {
        "linear-probe" => return Ok(None),
        "prompt-tuning" => PromptTuningConfig::new(n).init(backbone, t)?,
        "p-tuning" => {
            let hidden = a.encoder_hidden.unwrap_or(d.hidden_size);
            let encoder = match a.encoder.as_deref().unwrap_or("mlp") {
                "mlp" => PTuningEncoder::Mlp { hidden },
                "lstm" => PTuningEncoder::Lstm { hidden, paper: false },
                "lstm-paper" => PTuningEncoder::Lstm { hidden, paper: true },
                other => bail!("unknown P-Tuning encoder `{other}` (mlp, lstm, lstm-paper)"),
            };
            PTuningConfig::new(n).with_encoder(encoder).with_template(a.template.clone()).init(backbone, t)?
        }
        "prefix-tuning" => PrefixTuningConfig::new(n)
            .with_projection(Some(a.encoder_hidden.unwrap_or(512)))
            .with_prefix_dropout(a.prefix_dropout.unwrap_or(0.0))
            .init(backbone, t)?,
        "p-tuning-v2" => {
            let layers = match a.top_layers {
                Some(k) => LayerSelection::Top(k),
                None => LayerSelection::All,
            };
            PTuningV2Config::new(n)
                .with_layers(layers)
                .with_prefix_dropout(a.prefix_dropout.unwrap_or(0.1))
                .init(backbone, t)?
        }
        other => bail!("unknown method `{other}` (prompt-tuning, p-tuning, prefix-tuning, p-tuning-v2, linear-probe)"),
    }))
}

/// Runs `ptune train` on backend `B`.
pub fn train<B: AutodiffBackend>(args: TrainArgs) -> Result<()> {
    let a = merged(args)?;
    let model_name = a.model.clone().unwrap_or_else(|| "minilm".into());
    let method = a.method.clone().unwrap_or_else(|| "p-tuning-v2".into());
    let dataset = a.dataset.clone().unwrap_or_else(|| "rt-sentences".into());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{model_name}-{method}")));
    let device = B::Device::default();
    let started = std::time::Instant::now();
    let model_path = resolve_model(&model_name)?;
    let loaded = load_model::<B>(&model_path, &device)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let tok = loaded.tokenizer.clone().context("the model has no tokenizer")?;
    let backbone = loaded.backbone;

    let text = ptune_data::recipes::classification(&dataset, &ColumnMap::default())?;
    let max_len = a.max_len.unwrap_or(64);
    let limit = a.train_limit.unwrap_or(usize::MAX);
    let source = text.source.clone();
    let tokenize = |records: &[ptune_data::formats::Record]| {
        tokenize_classification(records, &text.labels, &tok, max_len, &source)
    };
    let train_records: Vec<_> = text.splits.train.iter().take(limit).cloned().collect();
    let data = ClassificationSet {
        labels: text.labels.clone(),
        splits: Splits {
            train: tokenize(&train_records)?,
            dev: tokenize(&text.splits.dev)?,
            test: tokenize(&text.splits.test)?,
        },
    };
    eprintln!(
        "{dataset}: {} train / {} dev / {} test, labels {:?}",
        data.splits.train.len(),
        data.splits.dev.len(),
        data.splits.test.len(),
        data.labels
    );
    let cfg = TrainConfig {
        epochs: a.epochs.unwrap_or(3),
        batch_size: a.batch_size.unwrap_or(32),
        accumulation: a.accumulation.unwrap_or(1),
        lr: a.lr.unwrap_or(1e-2),
        schedule: match a.schedule.as_deref().unwrap_or("linear") {
            "linear" => Schedule::Linear,
            "cosine" => Schedule::Cosine,
            "constant" => Schedule::Constant,
            other => bail!("unknown schedule `{other}` (linear, cosine, constant)"),
        },
        patience: a.patience,
        seed: a.seed.unwrap_or(42),
        pooling: match a.pooling.as_deref().unwrap_or("mean") {
            "mean" => Pooling::Mean,
            "pooler" => Pooling::Pooler,
            other => bail!("unknown pooling `{other}` (mean, pooler)"),
        },
        ..TrainConfig::default()
    };
    B::seed(&device, cfg.seed);
    let prompt = build_prompt(&a, &method, &backbone, &tok)?;
    let head =
        ClassifierHeadConfig::new(backbone.dims().hidden_size, data.labels.len()).init(&device);
    let baselines = if a.baselines {
        let majority = majority_baseline(&data);
        eprintln!("baseline majority class: dev accuracy {majority:.4}");
        let t = std::time::Instant::now();
        let (probe, probe_f1) = linear_probe(&backbone, &data, &cfg)?;
        eprintln!(
            "baseline linear probe: dev accuracy {probe:.4} ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
        Some((majority, probe, probe_f1))
    } else {
        None
    };
    let (_, summary) = train_classifier(
        &backbone,
        Classifier { prompt, head },
        &data,
        &cfg,
        &out,
        a.resume,
        &model_path.display().to_string(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    write_report(&out, &a, &method, &dataset, &summary, baselines, seconds)?;
    println!(
        "\n{method} on {model_name} / {dataset} ({} trainable parameters)",
        summary.trainable_parameters
    );
    println!("| run | dev accuracy | dev macro-F1 |");
    println!("|---|---:|---:|");
    if let Some((majority, probe, probe_f1)) = baselines {
        println!("| majority class | {majority:.4} | — |");
        println!("| linear probe (frozen backbone, head only) | {probe:.4} | {probe_f1:.4} |");
    }
    println!(
        "| {method} (best epoch {}) | {:.4} | {:.4} |",
        summary.best_epoch, summary.best_dev_accuracy, summary.best_dev_macro_f1
    );
    println!("\ntotal {:.1} min; run folder {}", seconds / 60.0, out.display());
    Ok(())
}

fn write_report(
    out: &Path,
    a: &TrainArgs,
    method: &str,
    dataset: &str,
    summary: &ptune_train::RunSummary,
    baselines: Option<(f64, f64, f64)>,
    seconds: f64,
) -> Result<()> {
    let report = serde_json::json!({
        "method": method, "dataset": dataset, "args": a, "summary": summary,
        "baselines": baselines.map(|(m, p, pf)| serde_json::json!({"majority": m, "linear_probe": p, "linear_probe_macro_f1": pf})),
        "seconds": seconds,
    });
    ptune_prompt::adapter::write_atomic(
        &out.join("metrics.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(())
}
