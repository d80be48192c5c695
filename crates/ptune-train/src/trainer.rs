//! The training loop, for any [`Task`]: AdamW, warmup + linear/cosine decay, gradient clipping and
//! accumulation, evaluation every epoch, early stopping, the best adapter, checkpoints (every epoch
//! and every `checkpoint_every` optimizer steps) and resume after a kill, seeds and a NaN/inf guard.
//!
//! Run folder (`out`): `metrics.jsonl` (one line per optimizer step and per evaluation),
//! `metrics.json` (a [`RunReport`]), `curve.svg`, `adapter/` (best dev score) and `state/` (module +
//! optimizer + progress, for `resume`).
//!
//! Determinism: the batches of an epoch depend only on the seed and the epoch, and the backend RNG
//! (dropout) is reseeded before every batch from (seed, epoch, batch). A run resumed from any
//! checkpoint therefore takes exactly the steps an uninterrupted run takes.

use ptune_transformer::FrozenOps;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use ptune_prompt::training_state::{
    has_training_state, load_training_state, save_training_state, TrainingProgress,
};
use ptune_transformer::{Backbone, CachedLowerLayers, CheckpointedLayers};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, TrainError};
use crate::schedule::{lr_at, Schedule};
use crate::task::{Evaluation, Task};

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Batches per optimizer step (gradient accumulation).
    pub accumulation: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Fraction of steps with linear warmup.
    pub warmup_ratio: f64,
    /// Decay after warmup.
    pub schedule: Schedule,
    /// Clip the gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Stop after this many evaluations without a better dev score.
    pub patience: Option<usize>,
    /// Seed of shuffles and of the backend RNG.
    pub seed: u64,
    /// Also checkpoint every this many optimizer steps (besides the end of every epoch).
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Stop this invocation after this many optimizer steps (counted from the start of training),
    /// right after a checkpoint, as if killed there; `resume` continues. For time-boxed sessions
    /// and tests.
    #[serde(default)]
    pub stop_after_steps: Option<usize>,
    /// Gradient checkpointing: keep only each layer's input during the forward and run the layer
    /// again in the backward (less memory, about one more forward per step; works with prefixes).
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Remember, per training and dev row, the output of the layers below the first prefixed
    /// layer (P-Tuning v2 with `top_layers`) and run only the layers above it after the first
    /// epoch. Exact; it has no effect when the first layer has a prefix or there is none.
    #[serde(default = "yes")]
    pub lower_layer_cache: bool,
}

fn yes() -> bool {
    true
}

/// The gradients of `loss` for `model`: `loss.backward()`, or, when the loss was computed through
/// `checkpointed`, the sum of the backward passes of [`CheckpointedLayers::backward`].
///
/// # Shapes
/// - loss: `[1]`
pub fn gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    loss: Tensor<B, 1>,
    checkpointed: Option<&CheckpointedLayers<'_, B>>,
    model: &M,
) -> Result<GradientsParams> {
    let Some(c) = checkpointed else {
        return Ok(GradientsParams::from_grads(loss.backward(), model));
    };
    let mut sum = GradientsAccumulator::<M>::new();
    for grads in c.backward(loss)? {
        sum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Ok(sum.grads())
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 32,
            accumulation: 1,
            lr: 1e-2,
            weight_decay: 0.0,
            warmup_ratio: 0.06,
            schedule: Schedule::Linear,
            grad_clip: Some(1.0),
            patience: None,
            seed: 42,
            checkpoint_every: None,
            stop_after_steps: None,
            gradient_checkpointing: false,
            lower_layer_cache: true,
        }
    }
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: usize,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Dev metrics.
    pub dev: Evaluation,
    /// Seconds spent in the epoch (training and evaluation).
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The dev evaluation of the best epoch.
    pub best: Option<Evaluation>,
    /// Epoch of the best dev score.
    pub best_epoch: usize,
    /// The test evaluation of the best epoch (tasks with a test split: classify, tag, cloze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Evaluation>,
    /// Every evaluation.
    pub history: Vec<EpochRecord>,
    /// Optimizer steps.
    pub steps: usize,
    /// Trainable parameters.
    pub trainable_parameters: usize,
    /// Whether the run stopped early (`stop_after_steps`) and must be resumed to finish.
    pub interrupted: bool,
}

impl RunSummary {
    /// The best epoch's value of dev metric `name` (NaN when absent).
    pub fn best_metric(&self, name: &str) -> f64 {
        self.best.as_ref().and_then(|e| e.metrics.get(name).copied()).unwrap_or(f64::NAN)
    }

    /// The best epoch's value of test metric `name` (NaN when absent).
    pub fn test_metric(&self, name: &str) -> f64 {
        self.test.as_ref().and_then(|e| e.metrics.get(name).copied()).unwrap_or(f64::NAN)
    }
}

/// Batches of example indices with similar lengths (less padding): `order` is cut into windows of
/// 50 batches, each window sorted by length and cut into batches, and the batches are shuffled with
/// `seed`. Deterministic for a given order and seed.
pub fn length_bucketed_batches(
    order: &[usize],
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut batches = Vec::new();
    for window in order.chunks(batch_size * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lengths[i]);
        batches.extend(w.chunks(batch_size).map(<[usize]>::to_vec));
    }
    let shuffled = ptune_data::split::shuffled(batches.len(), seed);
    shuffled.into_iter().map(|i| std::mem::take(&mut batches[i])).collect()
}

/// The batches of `epoch`, a function of the seed and the epoch only.
fn epoch_batches(lengths: &[usize], cfg: &TrainConfig, epoch: usize) -> Vec<Vec<usize>> {
    let order = ptune_data::split::shuffled(lengths.len(), cfg.seed ^ (epoch as u64 + 1));
    length_bucketed_batches(
        &order,
        lengths,
        cfg.batch_size,
        cfg.seed.wrapping_mul(31) ^ epoch as u64,
    )
}

/// Seed of the backend RNG before batch `batch` of `epoch`.
fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    seed.wrapping_add((epoch as u64).wrapping_mul(1_000_003)).wrapping_add(batch as u64)
}

pub(crate) fn append_jsonl(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    writeln!(f, "{value}").map_err(|e| io_err(path, e))
}

/// Drops the lines of `metrics.jsonl` a killed run wrote after its last checkpoint (`step` optimizer
/// steps, `epochs` evaluated epochs), so a resumed run's log has each step once.
fn trim_metrics(path: &Path, step: usize, epochs: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return false };
            match (v.get("step").and_then(|s| s.as_u64()), v.get("eval")) {
                (Some(s), None) => s as usize <= step,
                (_, Some(e)) => {
                    e.get("epoch").and_then(|x| x.as_u64()).unwrap_or(0) as usize <= epochs
                }
                _ => false,
            }
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(path, &out)
}

pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    ptune_prompt::adapter::write_atomic(path, text.as_bytes()).map_err(TrainError::from)
}

/// What the loop reports while it runs. The library prints nothing itself: the CLI renders these
/// (a progress bar and log lines), a library user may pass [`Silent`] or their own observer.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'a> {
    /// Continuing from a checkpoint.
    Resumed {
        /// The state folder read.
        state_dir: &'a Path,
        /// Epoch (1-based) continued.
        epoch: usize,
        /// Batches of that epoch already done.
        batch: usize,
        /// Optimizer steps already taken.
        step: usize,
    },
    /// An epoch starts (or continues, `done` batches in).
    EpochStarted {
        /// Epoch (1-based).
        epoch: usize,
        /// Epochs in all.
        epochs: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Batches already done (after a resume).
        done: usize,
    },
    /// One batch's loss and gradients are done.
    BatchDone,
    /// An optimizer step was taken.
    Step {
        /// Epoch (1-based).
        epoch: usize,
        /// Steps so far.
        step: usize,
        /// Loss of the step's last batch.
        loss: f64,
        /// Learning rate of the step.
        lr: f64,
    },
    /// An epoch's training ended (the dev evaluation follows).
    EpochTrained,
    /// The dev evaluation of an epoch.
    Evaluated(&'a EpochRecord),
    /// Stopping early: no better dev score for `epochs` epochs.
    EarlyStop {
        /// Epochs without a better dev score.
        epochs: usize,
    },
    /// Stopping after `step` steps as asked (`stop_after_steps`); resume continues.
    Stopped {
        /// Steps taken.
        step: usize,
    },
    /// A line worth showing (data sizes, a baseline's result) from around the loop.
    Message(&'a str),
}

/// Receives the loop's [`TrainEvent`]s.
pub trait TrainObserver {
    /// One event.
    fn on(&mut self, event: TrainEvent<'_>);
}

/// An observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl TrainObserver for Silent {
    fn on(&mut self, _event: TrainEvent<'_>) {}
}

/// `metrics.json` of a run folder: one schema, written by the loop (summary only) and completed by
/// whoever runs it (method, data set, settings, baselines, wall time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The method (`linear-probe` for the head alone), if known.
    #[serde(default)]
    pub method: Option<String>,
    /// The data set, if known.
    #[serde(default)]
    pub dataset: Option<String>,
    /// The settings the run was started with (the CLI's arguments).
    #[serde(default)]
    pub settings: serde_json::Value,
    /// What the loop did.
    pub summary: RunSummary,
    /// Baselines by name, each metric by name.
    #[serde(default)]
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
    /// Wall-clock seconds of the whole run, baselines included.
    #[serde(default)]
    pub seconds: f64,
}

impl RunReport {
    /// A report holding only the loop's summary.
    pub fn new(summary: RunSummary) -> Self {
        Self {
            method: None,
            dataset: None,
            settings: serde_json::Value::Null,
            summary,
            baselines: BTreeMap::new(),
            seconds: 0.0,
        }
    }

    /// Writes `out/metrics.json` atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| io_err(out, e))?;
        write_atomic(&out.join("metrics.json"), &text)
    }

    /// Reads `run/metrics.json`.
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join("metrics.json");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_str(&text).map_err(|e| io_err(&path, e))
    }
}

/// Where the loop stands; saved with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    step: usize,
    /// Completed epochs.
    epoch: usize,
    /// Batches done in the current epoch (always at an optimizer-step boundary).
    batches_done: usize,
    loss_sum: f64,
    loss_n: usize,
    history: Vec<EpochRecord>,
    best: Option<Evaluation>,
    best_epoch: usize,
    #[serde(default)]
    best_test: Option<Evaluation>,
    since_best: usize,
}

impl Progress {
    fn save<B: AutodiffBackend + FrozenOps, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        dir: &Path,
        model: &M,
        optim: &O,
        cfg: &TrainConfig,
    ) -> Result<()> {
        let progress = TrainingProgress {
            step: self.step,
            epoch: self.epoch,
            extra: serde_json::json!({ "loop": self, "config": cfg }),
        };
        Ok(save_training_state(dir, model, optim, &progress)?)
    }
}

/// Where a run writes, and how it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// Continue from `out/state` if present.
    pub resume: bool,
    /// What the adapter's `base_model_name_or_path` records.
    pub base_model: String,
    /// Written as `task.json` into the adapter folder each time the adapter is saved, so the
    /// folder carries its task (labels, pooling, longest input) on its own.
    pub adapter_task: Option<String>,
}

impl RunOptions {
    /// A fresh run (no resume) in `out` for the model `base_model`.
    pub fn new(out: impl Into<PathBuf>, base_model: &str) -> Self {
        Self { out: out.into(), resume: false, base_model: base_model.into(), adapter_task: None }
    }
}

/// Trains `model` on `task`, writing the run folder `run.out`. With `run.resume`, continues from
/// `out/state` if present: a run killed after any checkpoint finishes as if never stopped.
/// Reports nothing while it runs; [`train_observed`] takes an observer.
pub fn train<B: AutodiffBackend + FrozenOps, T: Task<B>>(
    backbone: &dyn Backbone<B>,
    task: &T,
    model: T::Model,
    cfg: &TrainConfig,
    run: &RunOptions,
) -> Result<(T::Model, RunSummary)> {
    train_observed(backbone, task, model, cfg, run, &mut Silent)
}

/// [`train`], reporting progress to `observer`.
pub fn train_observed<B: AutodiffBackend + FrozenOps, T: Task<B>>(
    backbone: &dyn Backbone<B>,
    task: &T,
    model: T::Model,
    cfg: &TrainConfig,
    run: &RunOptions,
    observer: &mut dyn TrainObserver,
) -> Result<(T::Model, RunSummary)> {
    let (out, resume, base_model) = (run.out.as_path(), run.resume, run.base_model.as_str());
    if cfg.batch_size == 0 || cfg.accumulation == 0 || cfg.epochs == 0 {
        return Err(TrainError::Config(
            "epochs, batch size and accumulation must be positive".into(),
        ));
    }
    if cfg.checkpoint_every == Some(0) {
        return Err(TrainError::Config("checkpoint_every must be positive".into()));
    }
    let lengths = task.train_lengths();
    if lengths.is_empty() || task.dev_len() == 0 {
        return Err(TrainError::Config("the training and dev splits must not be empty".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let device = backbone.embedding_matrix().device();
    let mut adamw = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32);
    if let Some(clip) = cfg.grad_clip {
        adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(clip as f32)));
    }
    let mut optim = adamw.init::<B, T::Model>();
    let mut model = model;
    let state_dir = out.join("state");
    let metrics_path = out.join("metrics.jsonl");
    let batches_per_epoch = lengths.len().div_ceil(cfg.batch_size);
    let total_steps = batches_per_epoch.div_ceil(cfg.accumulation) * cfg.epochs;
    let warmup = (total_steps as f64 * cfg.warmup_ratio).round() as usize;
    let trainable_parameters = model.num_params();

    let mut p = Progress::default();
    if resume && has_training_state(&state_dir)? {
        let (m, o, saved) = load_training_state(&state_dir, model, optim, &device)?;
        model = m;
        optim = o;
        p = serde_json::from_value(saved.extra["loop"].clone()).map_err(|e| {
            TrainError::Config(format!("{}: unreadable progress: {e}", state_dir.display()))
        })?;
        // Steps after the checkpoint were logged by the killed run and will be taken again.
        trim_metrics(&metrics_path, p.step, p.epoch)?;
        observer.on(TrainEvent::Resumed {
            state_dir: &state_dir,
            epoch: p.epoch + 1,
            batch: p.batches_done,
            step: p.step,
        });
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| io_err(&metrics_path, e))?;
    }

    // Training runs the backbone through the wrappers the config asks for: gradient checkpointing
    // (whose backward replaces `loss.backward()`) and the lower-layer cache (evaluation gets its
    // own cache, of the dev rows, over the plain backbone).
    let checkpointed = cfg.gradient_checkpointing.then(|| CheckpointedLayers::new(backbone));
    let train_base: &dyn Backbone<B> = match &checkpointed {
        Some(c) => c,
        None => backbone,
    };
    let (train_cache, eval_cache) =
        (CachedLowerLayers::new(train_base), CachedLowerLayers::new(backbone));
    let (train_backbone, eval_backbone): (&dyn Backbone<B>, &dyn Backbone<B>) =
        if cfg.lower_layer_cache { (&train_cache, &eval_cache) } else { (train_base, backbone) };

    let mut interrupted = false;
    'epochs: while p.epoch < cfg.epochs {
        let epoch = p.epoch;
        let started = std::time::Instant::now();
        let batches = epoch_batches(&lengths, cfg, epoch);
        observer.on(TrainEvent::EpochStarted {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            batches: batches.len(),
            done: p.batches_done,
        });
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut pending = 0usize;
        for b in p.batches_done..batches.len() {
            B::seed(&device, batch_seed(cfg.seed, epoch, b));
            let loss = task.loss(train_backbone, &model, &batches[b])?;
            let value: f64 = loss.clone().into_scalar().elem();
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    loss: value,
                    epoch: epoch + 1,
                    step: p.step,
                    state: state_dir.display().to_string(),
                });
            }
            p.loss_sum += value;
            p.loss_n += 1;
            accumulator.accumulate(&model, gradients(loss, checkpointed.as_ref(), &model)?);
            pending += 1;
            observer.on(TrainEvent::BatchDone);
            if pending < cfg.accumulation && b + 1 < batches.len() {
                continue;
            }
            let lr = lr_at(cfg.lr, p.step, total_steps, warmup, cfg.schedule);
            let grads = accumulator.grads();
            if let Some(what) = non_finite_gradient(&model, &grads) {
                return Err(TrainError::NonFiniteValue {
                    what,
                    epoch: epoch + 1,
                    step: p.step,
                    state: state_dir.display().to_string(),
                });
            }
            model = optim.step(lr, model, grads);
            p.step += 1;
            p.batches_done = b + 1;
            pending = 0;
            append_jsonl(
                &metrics_path,
                &serde_json::json!({"epoch": epoch + 1, "step": p.step, "loss": value, "lr": lr}),
            )?;
            observer.on(TrainEvent::Step { epoch: epoch + 1, step: p.step, loss: value, lr });
            let last_of_epoch = b + 1 == batches.len();
            let stop_here = cfg.stop_after_steps.is_some_and(|n| p.step >= n);
            if !last_of_epoch
                && (stop_here || cfg.checkpoint_every.is_some_and(|k| p.step % k == 0))
            {
                p.save(&state_dir, &model, &optim, cfg)?;
                if stop_here {
                    observer.on(TrainEvent::Stopped { step: p.step });
                    interrupted = true;
                    break 'epochs;
                }
            }
        }
        observer.on(TrainEvent::EpochTrained);
        // Evaluate with the parameters detached: no graph is kept for them.
        let dev = task.evaluate(eval_backbone, &model.clone().no_grad(), cfg.batch_size)?;
        if !dev.score.is_finite() {
            return Err(TrainError::NonFiniteValue {
                what: format!("the dev {} ({})", dev.metric, dev.score),
                epoch: epoch + 1,
                step: p.step,
                state: state_dir.display().to_string(),
            });
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            step: p.step,
            train_loss: p.loss_sum / p.loss_n.max(1) as f64,
            dev: dev.clone(),
            seconds: started.elapsed().as_secs_f64(),
        };
        observer.on(TrainEvent::Evaluated(&record));
        append_jsonl(&metrics_path, &serde_json::json!({"eval": record}))?;
        p.history.push(record);
        if p.best.as_ref().is_none_or(|b| dev.score > b.score) {
            p.best = Some(dev);
            p.best_epoch = epoch + 1;
            p.best_test = task.test(backbone, &model.clone().no_grad(), cfg.batch_size)?;
            p.since_best = 0;
            let adapter = out.join("adapter");
            task.save_adapter(backbone, &model, &adapter, base_model)?;
            if let (Some(text), true) = (&run.adapter_task, adapter.is_dir()) {
                write_atomic(&adapter.join("task.json"), text)?;
            }
        } else {
            p.since_best += 1;
        }
        p.epoch += 1;
        p.batches_done = 0;
        p.loss_sum = 0.0;
        p.loss_n = 0;
        p.save(&state_dir, &model, &optim, cfg)?;
        write_curve(out, &metrics_path, &p.history)?;
        if cfg.patience.is_some_and(|k| p.since_best >= k) {
            observer.on(TrainEvent::EarlyStop { epochs: p.since_best });
            break;
        }
        if cfg.stop_after_steps.is_some_and(|n| p.step >= n) && p.epoch < cfg.epochs {
            observer.on(TrainEvent::Stopped { step: p.step });
            interrupted = true;
            break;
        }
    }
    let summary = RunSummary {
        best: p.best,
        best_epoch: p.best_epoch,
        test: p.best_test,
        history: p.history,
        steps: p.step,
        trainable_parameters,
        interrupted,
    };
    RunReport::new(summary.clone()).write(out)?;
    Ok((model, summary))
}

/// Names the first parameter of `model` whose gradient in `grads` holds a NaN or an infinity
/// (`"the gradient of head.linear.weight (NaN)"`), if any. One reduction per parameter tensor.
pub(crate) fn non_finite_gradient<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Option<String> {
    struct Check<'a> {
        grads: &'a GradientsParams,
        path: Vec<String>,
        found: Option<String>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Check<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.found.is_some() {
                return;
            }
            let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) else { return };
            // The sum of magnitudes is NaN with a NaN, infinite with an infinity (or past f32's
            // range, a gradient as unusable).
            let total: f64 = g.abs().sum().into_scalar().elem();
            let kind = if total.is_nan() {
                "NaN"
            } else if total.is_infinite() {
                "an infinity"
            } else {
                return;
            };
            let name =
                if self.path.is_empty() { "a parameter".into() } else { self.path.join(".") };
            self.found = Some(format!("the gradient of {name} ({kind})"));
        }
    }
    let mut check = Check { grads, path: Vec::new(), found: None };
    model.visit(&mut check);
    check.found
}

fn write_curve(out: &Path, metrics: &Path, history: &[EpochRecord]) -> Result<()> {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    let losses: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get("loss")?.as_f64()?)))
        .collect();
    let metric = history.first().map(|r| r.dev.metric.clone()).unwrap_or_default();
    let dev: Vec<(f64, f64)> = history.iter().map(|r| (r.epoch as f64, r.dev.score)).collect();
    let label = format!("dev {metric} per epoch");
    let svg = crate::plot::svg(&[("training loss per step", losses), (label.as_str(), dev)]);
    write_atomic(&out.join("curve.svg"), &svg)
}

/// `BTreeMap` from pairs (metric tables).
pub fn metrics_map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};

    type AD = Autodiff<NdArray>;

    /// A loss that stays finite while its gradient does not (`sqrt` at 0) is caught, naming the
    /// parameter; a finite gradient passes.
    #[test]
    fn a_non_finite_gradient_names_its_parameter() {
        let device = Default::default();
        let mut linear: Linear<AD> = LinearConfig::new(2, 2).init(&device);
        linear.weight = Param::from_tensor(Tensor::zeros([2, 2], &device));
        let loss = linear.weight.val().sqrt().sum();
        assert_eq!(loss.clone().into_scalar(), 0.0, "the loss itself is finite");
        let grads = GradientsParams::from_grads(loss.backward(), &linear);
        let what = non_finite_gradient(&linear, &grads).expect("sqrt'(0) is infinite");
        assert!(what.contains("weight") && what.contains("infinity"), "{what}");

        let loss = (linear.weight.val() + 1.0).sqrt().sum();
        let grads = GradientsParams::from_grads(loss.backward(), &linear);
        assert_eq!(non_finite_gradient(&linear, &grads), None);
    }
}
