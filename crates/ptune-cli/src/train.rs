//! `ptune train`: a soft prompt of any method on any task (classify, tag, cloze, generate), with
//! baselines.

use ptune_transformer::FrozenOps;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use ptune_prompt::{ClassifierHeadConfig, MethodKind, MethodOptions, SoftPrompt};
use ptune_train::classify::{linear_probe, majority_baseline};
use ptune_train::lm::{
    cloze_predict, generate_all, generation_scores, greedy, mean_target_loss, CausalLm, Cloze,
    ReferenceSet,
};
use ptune_train::schedule::Schedule;
use ptune_train::tagging::{tagging_scores, TokenClassification};
use ptune_train::{
    Classifier, Pooling, RunReport, RunSummary, SequenceClassification, Task, TrainConfig,
};

use crate::task::{load_data, TaskData, TaskInfo, TaskKind, CLOZE_TEMPLATE, SEPARATOR};
use ptune_transformer::{load_model, Backbone, TextTokenizer};
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
    /// A method of the registry (`prompt-tuning`, `p-tuning`, `prefix-tuning`, `p-tuning-v2`), or
    /// `linear-probe` (no prompt, head only).
    #[arg(long)]
    pub method: Option<String>,
    /// `rt-sentences`, `uci-sentiment` (classify, cloze), `e2e-slots` (tag), `e2e` (generate), or a
    /// file: .jsonl/.csv/.tsv with `text`+`label` (classify, cloze), `source`+`target` (generate),
    /// or .jsonl with `tokens`+`tags` lists (tag).
    #[arg(long)]
    pub dataset: Option<String>,
    /// `classify`, `tag`, `cloze` or `generate` (default: from the data set; `classify` for files).
    #[arg(long)]
    pub task: Option<String>,
    /// Cloze template around the text (default "{text} Sentiment:").
    #[arg(long)]
    pub cloze_template: Option<String>,
    /// Cloze verbalizer: one single-token word per label, comma-separated, in label order (default:
    /// each label name with a leading space).
    #[arg(long, value_delimiter = ',')]
    pub verbalizer: Option<Vec<String>>,
    /// Generation: text between source and target (default "\nDescription:").
    #[arg(long)]
    pub separator: Option<String>,
    /// Generation: dev sources decoded (greedy) for BLEU / ROUGE-L after each epoch (0: loss only).
    #[arg(long)]
    pub eval_sources: Option<usize>,
    /// Generation: most new tokens when decoding.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Also checkpoint every N optimizer steps (besides every epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop after N optimizer steps, right after a checkpoint (resume with `--resume`).
    #[arg(long)]
    pub stop_after_steps: Option<usize>,
    /// Gradient checkpointing: keep only each layer's input in the forward and run the layer again
    /// in the backward (less memory, about one more forward per step; works with prefixes).
    #[arg(long)]
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Do not remember the output of the layers below the first prefixed layer (P-Tuning v2 with
    /// `--top-layers`): run every layer at every epoch.
    #[arg(long)]
    #[serde(default)]
    pub no_layer_cache: bool,
    /// Run folder (metrics.json, metrics.jsonl, curve.svg, adapter/, state/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The method's options (the registry's: virtual tokens, encoder, template, …).
    #[command(flatten)]
    #[serde(flatten)]
    pub method_options: MethodOptions,
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
    /// Stop after this many epochs without a better dev score.
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
    /// `mean` (over text tokens), `cls` (first text token) or `pooler` (HF's, as PEFT).
    #[arg(long)]
    pub pooling: Option<String>,
    /// Continue from `<out>/state` if present.
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,
    /// Also report baselines: majority class and linear probe (classify), all-`O` (tag), the model
    /// without a prompt (cloze, generate).
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
            baselines: cli.baselines || file.baselines,
            gradient_checkpointing: cli.gradient_checkpointing || file.gradient_checkpointing,
            no_layer_cache: cli.no_layer_cache || file.no_layer_cache,
            method_options: cli.method_options.clone().or(file.method_options.clone()),
            $($f: cli.$f.clone().or(file.$f.clone())),* } };
    }
    Ok(pick!(
        model,
        method,
        dataset,
        task,
        cloze_template,
        verbalizer,
        separator,
        eval_sources,
        max_new_tokens,
        checkpoint_every,
        stop_after_steps,
        out,
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

pub use ptune_train::run::resolve_model;

/// The soft prompt `method` names, built through the registry; `None` for `linear-probe`.
pub fn build_prompt<B: AutodiffBackend + FrozenOps>(
    a: &TrainArgs,
    method: &str,
    backbone: &dyn Backbone<B>,
    tok: &TextTokenizer,
) -> Result<Option<SoftPrompt<B>>> {
    if method == LINEAR_PROBE {
        return Ok(None);
    }
    let kind: MethodKind = method
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}; or `{LINEAR_PROBE}` for the head only"))?;
    Ok(Some(kind.build(&a.method_options, backbone, Some(tok))?))
}

/// The `--method` that trains only the head (no soft prompt).
pub const LINEAR_PROBE: &str = "linear-probe";

/// The decoder's stop token, if the model is a decoder that declares one.
pub fn eos_of<B: FrozenOps>(backbone: &dyn Backbone<B>) -> Option<u32> {
    backbone.as_decoder().and_then(|d| d.eos_token_id())
}

/// The training settings of `a`.
fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    Ok(TrainConfig {
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
        checkpoint_every: a.checkpoint_every,
        stop_after_steps: a.stop_after_steps,
        gradient_checkpointing: a.gradient_checkpointing,
        lower_layer_cache: !a.no_layer_cache,
        ..TrainConfig::default()
    })
}

/// Runs `ptune train` on backend `B`.
pub fn train<B: AutodiffBackend + FrozenOps>(args: TrainArgs) -> Result<()> {
    let a = merged(args)?;
    let model_name = a.model.clone().unwrap_or_else(|| "minilm".into());
    let method = a.method.clone().unwrap_or_else(|| "p-tuning-v2".into());
    let dataset = a.dataset.clone().unwrap_or_else(|| "rt-sentences".into());
    let kind = TaskKind::pick(a.task.as_deref(), &dataset)?;
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
    let pooling = match a.pooling.as_deref().unwrap_or("mean") {
        "mean" => Pooling::Mean,
        "cls" => Pooling::Cls,
        "pooler" => Pooling::Pooler,
        other => bail!("unknown pooling `{other}` (mean, cls, pooler)"),
    };
    let mut info = TaskInfo {
        task: kind,
        model: model_name.clone(),
        dataset: dataset.clone(),
        labels: Vec::new(),
        pooling: (kind == TaskKind::Classify).then_some(pooling),
        cloze_template: (kind == TaskKind::Cloze)
            .then(|| a.cloze_template.clone().unwrap_or_else(|| CLOZE_TEMPLATE.into())),
        verbalizer: None,
        separator: (kind == TaskKind::Generate)
            .then(|| a.separator.clone().unwrap_or_else(|| SEPARATOR.into())),
        max_len: a.max_len.unwrap_or(if kind == TaskKind::Generate { 96 } else { 64 }),
    };
    let data = load_data(&mut info, &tok, a.train_limit.unwrap_or(usize::MAX), eos_of(&backbone))?;
    if kind == TaskKind::Cloze {
        info.verbalizer = Some(
            a.verbalizer
                .clone()
                .unwrap_or_else(|| info.labels.iter().map(|l| format!(" {l}")).collect()),
        );
    }
    info.save(&out)?;
    let cfg = train_config(&a)?;
    B::seed(&device, cfg.seed);
    let prompt = build_prompt(&a, &method, &backbone, &tok)?;
    let base = model_path.display().to_string();
    let mut table: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    let summary = match data {
        TaskData::Labelled(data) if kind == TaskKind::Classify => {
            tracing::info!(
                "{dataset}: {} train / {} dev / {} test, labels {:?}",
                data.splits.train.len(),
                data.splits.dev.len(),
                data.splits.test.len(),
                data.labels
            );
            let head = ClassifierHeadConfig::new(backbone.dims().hidden_size, data.labels.len())
                .init(&device);
            if a.baselines {
                let majority = majority_baseline(&data);
                tracing::info!("baseline majority class: dev accuracy {majority:.4}");
                table.push(("majority class".into(), vec![("accuracy".into(), majority)]));
                let t = std::time::Instant::now();
                let (probe, probe_f1) = linear_probe(&backbone, &data, &cfg, pooling)?;
                tracing::info!(
                    "baseline linear probe: dev accuracy {probe:.4} ({:.0} s)",
                    t.elapsed().as_secs_f64()
                );
                table.push((
                    "linear probe (frozen backbone, head only)".into(),
                    vec![("accuracy".into(), probe), ("macro_f1".into(), probe_f1)],
                ));
            }
            let task = SequenceClassification { data: &data, pooling };
            run(&backbone, &task, Classifier { prompt, head }, &cfg, &out, a.resume, &base)?
        }
        TaskData::Labelled(data) => {
            let words = info.verbalizer.clone().unwrap_or_default();
            let verbalizer = ptune_train::lm::verbalizer(&tok, &words)?;
            let prompt =
                prompt.context("cloze trains a soft prompt: pick a method, not linear-probe")?;
            if a.baselines {
                let pred =
                    cloze_predict(&backbone, None, &data.splits.dev, &verbalizer, cfg.batch_size)?;
                let gold: Vec<usize> = data.splits.dev.iter().map(|e| e.label).collect();
                let acc = ptune_train::metrics::accuracy(&pred, &gold);
                tracing::info!("baseline zero-shot cloze (no prompt): dev accuracy {acc:.4}");
                table.push(("zero-shot cloze (no prompt)".into(), vec![("accuracy".into(), acc)]));
            }
            let task = Cloze { data: &data, verbalizer };
            run(&backbone, &task, prompt, &cfg, &out, a.resume, &base)?
        }
        TaskData::Tagged(data) => {
            tracing::info!(
                "{dataset}: {} train / {} dev sentences, {} tags",
                data.splits.train.len(),
                data.splits.dev.len(),
                data.labels.len()
            );
            if a.baselines {
                let all_o: Vec<Vec<usize>> =
                    data.splits.dev.iter().map(|e| vec![0; e.tags.len()]).collect();
                let (f1, acc) = tagging_scores(&all_o, &data.splits.dev, &data.labels);
                table.push((
                    "every word `O`".into(),
                    vec![("entity_f1".into(), f1), ("word_accuracy".into(), acc)],
                ));
            }
            let head = ClassifierHeadConfig::new(backbone.dims().hidden_size, data.labels.len())
                .init(&device);
            let task = TokenClassification { data: &data };
            run(&backbone, &task, Classifier { prompt, head }, &cfg, &out, a.resume, &base)?
        }
        TaskData::Generation { examples, pairs } => {
            let prompt = prompt
                .context("generation trains a soft prompt: pick a method, not linear-probe")?;
            let sep = info.separator.clone().unwrap_or_default();
            let n_sources = a.eval_sources.unwrap_or(20);
            let refs = ReferenceSet::new(&pairs.dev, &tok, &sep, n_sources)?;
            let gen = greedy(a.max_new_tokens.unwrap_or(48), eos_of(&backbone));
            tracing::info!(
                "{dataset}: {} train / {} dev pairs ({} dev sources decoded per evaluation)",
                examples.train.len(),
                examples.dev.len(),
                refs.items.len()
            );
            if a.baselines {
                let loss = mean_target_loss(&backbone, None, &examples.dev, cfg.batch_size)?;
                let mut row = vec![("loss".to_string(), loss)];
                if !refs.items.is_empty() {
                    let hyps = generate_all(&backbone, None, &tok, &refs, &gen)?;
                    let (bleu, rouge) = generation_scores(&hyps, &refs);
                    row.extend([("bleu".into(), bleu), ("rouge_l".into(), rouge)]);
                }
                table.push(("the model without a prompt".into(), row));
            }
            let task = CausalLm {
                train: &examples.train,
                dev: &examples.dev,
                references: (!refs.items.is_empty()).then_some((&refs, &tok, gen)),
            };
            run(&backbone, &task, prompt, &cfg, &out, a.resume, &base)?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    write_report(&out, &a, &method, &dataset, &summary, &table, seconds)?;
    println!(
        "\n{method} on {model_name} / {dataset}, task {kind:?} ({} trainable parameters)",
        summary.trainable_parameters
    );
    if let Some(best) = &summary.best {
        table.push((
            format!("{method} (best epoch {})", summary.best_epoch),
            best.metrics.clone().into_iter().collect(),
        ));
        let names: Vec<&String> = best.metrics.keys().collect();
        println!(
            "| run | {} |",
            names.iter().map(|n| format!("dev {n}")).collect::<Vec<_>>().join(" | ")
        );
        println!("|---|{}", "---:|".repeat(names.len()));
        for (run, values) in &table {
            let cells: Vec<String> = names
                .iter()
                .map(|n| {
                    values
                        .iter()
                        .find(|(k, _)| k == *n)
                        .map_or("—".into(), |(_, v)| format!("{v:.4}"))
                })
                .collect();
            println!("| {run} | {} |", cells.join(" | "));
        }
    }
    if summary.interrupted {
        println!("\nstopped after step {} as asked; `--resume` continues", summary.steps);
    }
    println!("\ntotal {:.1} min; run folder {}", seconds / 60.0, out.display());
    Ok(())
}

fn run<B: AutodiffBackend + FrozenOps, T: Task<B>>(
    backbone: &dyn Backbone<B>,
    task: &T,
    model: T::Model,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    base: &str,
) -> Result<RunSummary> {
    let mut progress = crate::progress::Progress::new();
    Ok(ptune_train::train_observed(backbone, task, model, cfg, out, resume, base, &mut progress)?.1)
}

fn write_report(
    out: &Path,
    a: &TrainArgs,
    method: &str,
    dataset: &str,
    summary: &RunSummary,
    baselines: &[(String, Vec<(String, f64)>)],
    seconds: f64,
) -> Result<()> {
    let report = RunReport {
        method: Some(method.into()),
        dataset: Some(dataset.into()),
        settings: serde_json::to_value(a)?,
        summary: summary.clone(),
        baselines: baselines
            .iter()
            .map(|(name, values)| (name.clone(), values.iter().cloned().collect()))
            .collect(),
        seconds,
    };
    report.write(out)?;
    Ok(())
}
