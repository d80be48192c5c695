//! `ptune train`: a soft prompt of any method on any task (classify, tag, cloze, generate), with
//! baselines. The arguments become a [`ptune_train::TrainJob`], which does the work; this module
//! merges the TOML file, and prints the result table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use ptune_prompt::{MethodKind, MethodOptions};
use ptune_train::finetune::{DEFAULT_LR, DEFAULT_WEIGHT_DECAY, FULL_FINETUNE};
use ptune_train::job::{default_out, LINEAR_PROBE};
use ptune_train::schedule::Schedule;
use ptune_train::{JobOutcome, Pooling, TaskKind, TrainConfig, TrainJob};
use ptune_transformer::FrozenOps;
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
    /// A method of the registry (`prompt-tuning`, `p-tuning`, `prefix-tuning`, `p-tuning-v2`),
    /// `linear-probe` (no prompt, head only) or `full-finetune` (the backbone's own weights: with
    /// the head, or a decoder with its LM head for cloze and generate) [default: p-tuning-v2].
    #[arg(long, value_parser = method_names())]
    pub method: Option<String>,
    /// `rt-sentences`, `uci-sentiment` (classify, cloze), `e2e-slots` (tag), `e2e` (generate), or a
    /// file: .jsonl/.csv/.tsv with `text`+`label` (classify, cloze), `source`+`target` (generate),
    /// or .jsonl with `tokens`+`tags` lists (tag).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Dev file, with a training file as `--dataset` (default: cut from the training file).
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Test file, with a training file as `--dataset` (default: cut from the training file).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Column (JSON key or CSV/TSV header) of the text [default: text].
    #[arg(long)]
    pub text_column: Option<String>,
    /// Column of the second text of sentence pairs (classify; default: single sentences).
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// Column of the class label (text, integer or bool) [default: label].
    #[arg(long)]
    pub label_column: Option<String>,
    /// Tagging: key of the words list [default: tokens].
    #[arg(long)]
    pub tokens_column: Option<String>,
    /// Tagging: key of the BIO tags list [default: tags].
    #[arg(long)]
    pub tags_column: Option<String>,
    /// Generation: column of the source [default: source].
    #[arg(long)]
    pub source_column: Option<String>,
    /// Generation: column of the target [default: target].
    #[arg(long)]
    pub target_column: Option<String>,
    /// The task (default: from the data set; `classify` for files).
    #[arg(long, value_enum)]
    pub task: Option<TaskKind>,
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
    /// Epochs [default: 3].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Gradient accumulation (batches per optimizer step) [default: 1].
    #[arg(long)]
    pub accumulation: Option<usize>,
    /// Peak learning rate [default: 1e-2; full-finetune 2e-5].
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay [default: 0; full-finetune 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Decay after warmup [default: linear].
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Stop after this many epochs without a better dev score [default: never].
    #[arg(long)]
    pub patience: Option<usize>,
    /// Longest tokenized text (longer ones are truncated, keeping the final special token)
    /// [default: 64; generate 96].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Use only the first N training examples (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Seed [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Classification pooling: mean over text tokens, the first text token, or HF's pooler (as
    /// PEFT) [default: mean].
    #[arg(long, value_enum)]
    pub pooling: Option<Pooling>,
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

/// Every `--method` value: the registry's methods and the two baselines.
fn method_names() -> clap::builder::PossibleValuesParser {
    let methods = MethodKind::ALL.iter().map(|m| m.info().name);
    methods.chain([LINEAR_PROBE, FULL_FINETUNE]).collect::<Vec<&'static str>>().into()
}

/// The options of a TOML run file (`ptune train --config FILE`): the long options of `ptune
/// train` with `_` for `-`; an unknown key is an error naming the known ones.
fn parse_run_file(text: &str) -> Result<TrainArgs> {
    let table: toml::Table = toml::from_str(text)?;
    let command = <TrainArgs as clap::Args>::augment_args(clap::Command::new("train"));
    let known: Vec<String> = command
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "config")
        .collect();
    if let Some(key) = table.keys().find(|k| !known.contains(k)) {
        anyhow::bail!("unknown option `{key}` (run files take: {})", known.join(", "));
    }
    Ok(table.try_into()?)
}

fn merged(cli: TrainArgs) -> Result<TrainArgs> {
    let Some(path) = &cli.config else { return Ok(cli) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = parse_run_file(&text).with_context(|| format!("parsing {}", path.display()))?;
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
        dev,
        test,
        text_column,
        text_pair_column,
        label_column,
        tokens_column,
        tags_column,
        source_column,
        target_column,
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
        weight_decay,
        schedule,
        patience,
        max_len,
        train_limit,
        seed,
        pooling
    ))
}

impl TrainArgs {
    /// The job these arguments describe (every name checked before anything loads).
    pub fn job(&self) -> Result<TrainJob> {
        let model = self.model.clone().unwrap_or_else(|| "minilm".into());
        let dataset = self.dataset.clone().unwrap_or_else(|| "rt-sentences".into());
        let mut job = TrainJob::new(&model, &dataset);
        job.method = match self.method.as_deref() {
            None => Some(MethodKind::PTuningV2),
            Some(LINEAR_PROBE | FULL_FINETUNE) => None,
            Some(name) => Some(name.parse().map_err(|e| {
                anyhow::anyhow!(
                    "{e}; or `{LINEAR_PROBE}` for the head only, `{FULL_FINETUNE}` for the \
                     backbone and the head"
                )
            })?),
        };
        job.full_finetune = self.method.as_deref() == Some(FULL_FINETUNE);
        job.dev = self.dev.clone();
        job.test = self.test.clone();
        job.columns = ptune_data::Columns {
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: self.label_column.clone(),
            tokens: self.tokens_column.clone(),
            tags: self.tags_column.clone(),
            source: self.source_column.clone(),
            target: self.target_column.clone(),
        };
        job.task = self.task;
        job.method_options = self.method_options.clone();
        let defaults = TrainConfig::default();
        job.train = TrainConfig {
            epochs: self.epochs.unwrap_or(defaults.epochs),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            accumulation: self.accumulation.unwrap_or(defaults.accumulation),
            lr: self.lr.unwrap_or(if job.full_finetune { DEFAULT_LR } else { defaults.lr }),
            weight_decay: self.weight_decay.unwrap_or(if job.full_finetune {
                DEFAULT_WEIGHT_DECAY
            } else {
                defaults.weight_decay
            }),
            schedule: self.schedule.unwrap_or(defaults.schedule),
            patience: self.patience,
            seed: self.seed.unwrap_or(defaults.seed),
            checkpoint_every: self.checkpoint_every,
            stop_after_steps: self.stop_after_steps,
            gradient_checkpointing: self.gradient_checkpointing,
            lower_layer_cache: !self.no_layer_cache,
            ..defaults
        };
        job.pooling = self.pooling.unwrap_or(Pooling::Mean);
        job.max_len = self.max_len;
        job.train_limit = self.train_limit;
        job.cloze_template = self.cloze_template.clone();
        job.verbalizer = self.verbalizer.clone();
        job.separator = self.separator.clone();
        job.eval_sources = self.eval_sources.unwrap_or(job.eval_sources);
        job.max_new_tokens = self.max_new_tokens.unwrap_or(job.max_new_tokens);
        job.baselines = self.baselines;
        Ok(job)
    }
}

/// Runs `ptune train` on backend `B`.
pub fn train<B: AutodiffBackend + FrozenOps>(args: TrainArgs) -> Result<()> {
    let a = merged(args)?;
    let job = a.job()?;
    let method = job.method_name();
    let out = a.out.clone().unwrap_or_else(|| default_out(&job.model, &method));
    let mut progress = crate::progress::Progress::new();
    let outcome = job.run::<B>(&out, a.resume, &mut progress)?;
    print_table(&job, &outcome);
    let summary = &outcome.report.summary;
    if summary.interrupted {
        println!("\nstopped after step {} as asked; `--resume` continues", summary.steps);
    }
    println!("\ntotal {:.1} min; run folder {}", outcome.report.seconds / 60.0, out.display());
    Ok(())
}

/// The dev metrics of the best epoch beside the baselines, as a Markdown table.
fn print_table(job: &TrainJob, outcome: &JobOutcome) {
    let summary = &outcome.report.summary;
    let method = job.method_name();
    println!(
        "\n{method} on {} / {}, task {:?} ({} trainable parameters)",
        job.model, job.dataset, outcome.info.task, summary.trainable_parameters
    );
    let Some(best) = &summary.best else { return };
    let mut table = outcome.baselines.clone();
    table.push((format!("{method} (best epoch {})", summary.best_epoch), best.metrics.clone()));
    let names: Vec<&String> = best.metrics.keys().collect();
    println!(
        "| run | {} |",
        names.iter().map(|n| format!("dev {n}")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---:|".repeat(names.len()));
    for (run, values) in &table {
        let cells: Vec<String> = names
            .iter()
            .map(|n| values.get(*n).map_or("—".into(), |v| format!("{v:.4}")))
            .collect();
        println!("| {run} | {} |", cells.join(" | "));
    }
    if let Some(test) = &summary.test {
        let cells: Vec<String> =
            test.metrics.iter().map(|(name, v)| format!("test {name} {v:.4}")).collect();
        println!("\nbest epoch on the test split: {}", cells.join(", "));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ptune_testkit::{mutate_text, Rng, Tally};

    const RUN_FILE: &str = "model = \"minilm\"\nmethod = \"p-tuning\"\nencoder = \"lstm\"\n\
        encoder_hidden = 64\ndataset = \"uci-sentiment\"\ntask = \"classify\"\n\
        virtual_tokens = 8\nepochs = 1\nlr = 1e-2\nbatch_size = 16\nschedule = \"cosine\"\n\
        pooling = \"cls\"\nverbalizer = [\" bad\", \" good\"]\nmax_len = 48\nseed = 7\n\
        out = \"runs/x\"\nbaselines = true\n";

    #[test]
    fn the_example_run_files_parse_into_jobs() {
        let job = parse_run_file(RUN_FILE).unwrap().job().unwrap();
        assert_eq!(job.method, Some(MethodKind::PTuning));
        assert_eq!(job.train.schedule, Schedule::Cosine);
        assert_eq!(job.pooling, Pooling::Cls);
        assert_eq!(job.train.seed, 7);
        let example = include_str!("../../../runs.example.toml");
        assert_eq!(parse_run_file(example).unwrap().job().unwrap().dataset, "uci-sentiment");
        let e = parse_run_file("pooling = \"max\"").unwrap_err().to_string();
        assert!(e.contains("max"), "{e}");
        let e = parse_run_file("lr = 1e-2\nlearning_rate = 3").unwrap_err().to_string();
        assert!(e.contains("unknown option `learning_rate`") && e.contains("lr"), "{e}");
        let e = parse_run_file("config = \"x.toml\"").unwrap_err().to_string();
        assert!(e.contains("unknown option `config`"), "{e}");
        let job =
            parse_run_file("dataset = \"a.csv\"\ndev = \"b.csv\"\ntext_column = \"sentence\"")
                .unwrap()
                .job()
                .unwrap();
        assert_eq!(job.dev, Some(PathBuf::from("b.csv")));
        assert_eq!(job.columns.text.as_deref(), Some("sentence"));
    }

    /// Mutated run files parse into a job or give an error, never a panic.
    #[test]
    fn mutated_run_files_never_panic() {
        let mut rng = Rng(31);
        let mut tally = Tally::default();
        for i in 0..1000 {
            let mutant = mutate_text(RUN_FILE, &mut rng);
            tally.run(&format!("run file mutant {i}"), || {
                parse_run_file(&mutant).and_then(|a| a.job()).is_ok()
            });
        }
        tally.check("TOML run files");
    }
}
