//! `ptune compare`: the same short seeded job on several backends, side by side.
//!
//! The job: P-Tuning v2 (prefixes initialized from the model's own keys/values of a fixed text,
//! no dropout) with a head drawn from a host-side seeded stream, trained for a few steps on a fixed
//! slice of a classification data set; every backend starts from identical values.

use ptune_transformer::FrozenOps;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use clap::Args;
use ptune_data::formats::ColumnMap;
use ptune_data::tasks::tokenize_classification;
use ptune_prompt::p_tuning_v2::PTuningV2Config;
use ptune_prompt::prefix_tuning::PrefixInit;
use ptune_prompt::ClassifierHeadConfig;
use ptune_train::classify::{cross_entropy, evaluate, pooled};
use ptune_train::{Classifier, Pooling};
use ptune_transformer::{load_model, Backbone};

use crate::backend::{BackendChoice, OnBackend};

/// Options of `ptune compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Backends, comma-separated (those compiled in; the CPU ones by default, `wgpu` and `cuda` with
    /// the cargo features of the same names).
    #[arg(long, default_value = "flex,ndarray", value_delimiter = ',')]
    pub backends: Vec<BackendChoice>,
    /// Model (`minilm`, `smollm2`, or a path).
    #[arg(long, default_value = "minilm")]
    pub model: String,
    /// Classification data set (`rt-sentences`, `uci-sentiment`, or a file).
    #[arg(long, default_value = "rt-sentences")]
    pub dataset: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Dev rows for the final metric.
    #[arg(long, default_value_t = 64)]
    pub dev_rows: usize,
}

/// What one backend produced.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Loss of each step.
    pub losses: Vec<f64>,
    /// Dev accuracy after the steps.
    pub accuracy: f64,
    /// Mean seconds per training step.
    pub seconds_per_step: f64,
}

/// Runs the job on backend `B`.
/// The compare job on one backend (see [`crate::backend::with_backend`]).
pub struct Job<'a>(pub &'a CompareArgs);

impl OnBackend for Job<'_> {
    type Output = JobResult;
    fn run<B: FrozenOps>(self) -> Result<JobResult> {
        job::<burn::backend::Autodiff<B>>(self.0)
    }
}

fn job<B: AutodiffBackend + FrozenOps>(args: &CompareArgs) -> Result<JobResult> {
    let device = B::Device::default();
    let path = ptune_train::run::resolve_model(&args.model)?;
    let loaded = load_model::<B>(&path, &device)?;
    let tok = loaded.tokenizer.clone().context("model has no tokenizer")?;
    let backbone = loaded.backbone;
    let text = ptune_data::recipes::classification(&args.dataset, &ColumnMap::default())?;
    let n_train = args.steps * args.batch_size;
    let train_records: Vec<_> = text.splits.train.iter().take(n_train).cloned().collect();
    let dev_records: Vec<_> = text.splits.dev.iter().take(args.dev_rows).cloned().collect();
    let train = tokenize_classification(&train_records, &text.labels, &tok, 48, &text.source)?;
    let dev = tokenize_classification(&dev_records, &text.labels, &tok, 48, &text.source)?;
    let prompt = PTuningV2Config::new(8)
        .with_prefix_dropout(0.0)
        .with_init(PrefixInit::Text("an opinion about a movie".into()))
        .init(&backbone, Some(&tok))?;
    let head = ClassifierHeadConfig::new(backbone.dims().hidden_size, text.labels.len())
        .init_seeded(7, &device);
    let mut model = Classifier { prompt: Some(prompt), head };
    let mut optim = AdamWConfig::new().init::<B, Classifier<B>>();
    let mut losses = Vec::new();
    let started = Instant::now();
    for chunk in train.chunks(args.batch_size) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
        let labels: Vec<usize> = chunk.iter().map(|e| e.label).collect();
        let logits =
            model.head.forward(pooled(&backbone, model.prompt.as_ref(), &rows, Pooling::Mean)?);
        let loss = cross_entropy(logits, &labels);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let seconds_per_step = started.elapsed().as_secs_f64() / losses.len().max(1) as f64;
    let (accuracy, _) =
        evaluate(&backbone, &model.clone().no_grad(), &dev, text.labels.len(), 16, Pooling::Mean)?;
    Ok(JobResult { losses, accuracy, seconds_per_step })
}

/// Prints the comparison table.
pub fn print(results: &[(BackendChoice, JobResult)]) {
    let Some((_, first)) = results.first() else { return };
    let steps = first.losses.len();
    let mut header = String::from("| backend |");
    for s in 1..=steps {
        header.push_str(&format!(" loss {s} |"));
    }
    header.push_str(" dev accuracy | max |Δloss| vs first | s / step |");
    println!("{header}");
    println!("|---|{}---:|---:|---:|", "---:|".repeat(steps));
    for (name, r) in results {
        let diff =
            r.losses.iter().zip(&first.losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let cells: Vec<String> = r.losses.iter().map(|l| format!("{l:.6}")).collect();
        println!(
            "| {name} | {} | {:.4} | {diff:.2e} | {:.3} |",
            cells.join(" | "),
            r.accuracy,
            r.seconds_per_step
        );
    }
}
