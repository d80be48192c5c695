//! Sequence classification with a soft prompt (or none: the linear probe) on a frozen backbone.
//!
//! Run folder (`out`): `metrics.jsonl` (one line per optimizer step and per evaluation),
//! `metrics.json` (the summary), `curve.svg`, `adapter/` (best dev accuracy, PEFT format) and
//! `state/` (module + optimizer + progress after every epoch, for `resume`).

use std::io::Write;
use std::path::Path;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use ptune_data::tasks::Example;
use ptune_data::ClassificationSet;
use ptune_prompt::training_state::{load_training_state, save_training_state, TrainingProgress};
use ptune_prompt::{ClassifierHead, PromptedBatch, SoftPrompt};
use ptune_transformer::{AnyBackbone, Backbone};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, TrainError};
use crate::metrics::{accuracy, macro_f1};
use crate::schedule::{lr_at, Schedule};

/// How a sequence becomes one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// HF `BertPooler` on the first position (PEFT's `BertForSequenceClassification`; with an
    /// input-level prompt the first position is a virtual token, as in PEFT).
    Pooler,
    /// Mean of the last hidden state over the text tokens (virtual tokens stripped): how
    /// sentence-transformer checkpoints such as all-MiniLM-L6-v2 were trained.
    Mean,
}

/// A classifier: optional soft prompt plus head (the only trainable parts).
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// The soft prompt (`None`: linear probe).
    pub prompt: Option<SoftPrompt<B>>,
    /// The head.
    pub head: ClassifierHead<B>,
}

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
    /// Stop after this many evaluations without a better dev accuracy.
    pub patience: Option<usize>,
    /// Seed of shuffles and of the backend RNG (reseeded every epoch, so a resumed run repeats).
    pub seed: u64,
    /// Pooling for the head.
    pub pooling: Pooling,
    /// Stop this invocation after this many epochs (counted from the start of training), as if
    /// killed after that epoch's checkpoint; `resume` continues. For time-boxed sessions and tests.
    #[serde(default)]
    pub stop_after_epochs: Option<usize>,
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
            pooling: Pooling::Mean,
            stop_after_epochs: None,
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
    /// Dev accuracy.
    pub dev_accuracy: f64,
    /// Dev macro-F1.
    pub dev_macro_f1: f64,
    /// Seconds spent in the epoch.
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Best dev accuracy.
    pub best_dev_accuracy: f64,
    /// Dev macro-F1 at the best accuracy.
    pub best_dev_macro_f1: f64,
    /// Epoch of the best accuracy.
    pub best_epoch: usize,
    /// Every evaluation.
    pub history: Vec<EpochRecord>,
    /// Optimizer steps.
    pub steps: usize,
    /// Trainable parameters.
    pub trainable_parameters: usize,
}

/// Pooled representations of `rows` (`[b, d]`).
pub fn pooled<B: Backend>(
    backbone: &AnyBackbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    rows: &[Vec<u32>],
    pooling: Pooling,
) -> Result<Tensor<B, 2>> {
    let batch = match prompt {
        Some(p) => p.prepare(backbone, rows)?,
        None => PromptedBatch::plain(backbone, rows)?,
    };
    let hidden = backbone.forward(batch.input.clone())?;
    match pooling {
        Pooling::Pooler => match backbone {
            AnyBackbone::Bert(bert) => bert.pool(hidden).ok_or_else(|| {
                TrainError::Config("this checkpoint has no pooler: use --pooling mean".into())
            }),
            AnyBackbone::Llama(_) => {
                Err(TrainError::Config("decoders have no pooler: use --pooling mean".into()))
            }
        },
        Pooling::Mean => {
            let text = batch.strip_virtual(hidden);
            let device = text.device();
            let keep = batch.text_padding(&device).bool_not().float().unsqueeze_dim::<3>(2);
            let sum = (text * keep.clone()).sum_dim(1);
            let count = keep.sum_dim(1).clamp_min(1.0);
            let [b, _, d] = sum.dims();
            Ok((sum / count).reshape([b, d]))
        }
    }
}

/// Mean cross-entropy of `[b, classes]` logits against class indices.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> Tensor<B, 1> {
    let b = labels.len();
    let t = Tensor::<B, 2, Int>::from_data(
        TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [b, 1]),
        &logits.device(),
    );
    log_softmax(logits, 1).gather(1, t).mean().neg()
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

/// Predicted classes of `examples` (batched by length, returned in input order).
pub fn predict<B: Backend>(
    backbone: &AnyBackbone<B>,
    model: &Classifier<B>,
    examples: &[Example],
    batch_size: usize,
    pooling: Pooling,
) -> Result<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let mut out = vec![0usize; examples.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| examples[i].ids.clone()).collect();
        let logits = model.head.forward(pooled(backbone, model.prompt.as_ref(), &rows, pooling)?);
        let classes = logits.argmax(1).into_data().convert::<i64>();
        for (&i, c) in chunk.iter().zip(classes.iter::<i64>()) {
            out[i] = c as usize;
        }
    }
    Ok(out)
}

/// Dev accuracy and macro-F1.
pub fn evaluate<B: Backend>(
    backbone: &AnyBackbone<B>,
    model: &Classifier<B>,
    examples: &[Example],
    n_classes: usize,
    batch_size: usize,
    pooling: Pooling,
) -> Result<(f64, f64)> {
    let pred = predict(backbone, model, examples, batch_size, pooling)?;
    let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
    Ok((accuracy(&pred, &gold), macro_f1(&pred, &gold, n_classes)))
}

/// Accuracy of always predicting the most frequent training label.
pub fn majority_baseline(data: &ClassificationSet) -> f64 {
    let mut counts = vec![0usize; data.labels.len()];
    for e in &data.splits.train {
        counts[e.label] += 1;
    }
    let majority = (0..counts.len()).max_by_key(|&c| counts[c]).unwrap_or(0);
    let gold: Vec<usize> = data.splits.dev.iter().map(|e| e.label).collect();
    accuracy(&vec![majority; gold.len()], &gold)
}

fn append_jsonl(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    writeln!(f, "{value}").map_err(|e| io_err(path, e))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    ptune_prompt::adapter::write_atomic(path, text.as_bytes()).map_err(TrainError::from)
}

/// Trains `model` on `data`, writing the run folder `out`. With `resume`, continues from
/// `out/state` if present (a run killed after an epoch's checkpoint finishes as if never stopped).
pub fn train_classifier<B: AutodiffBackend>(
    backbone: &AnyBackbone<B>,
    model: Classifier<B>,
    data: &ClassificationSet,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    base_model: &str,
) -> Result<(Classifier<B>, RunSummary)> {
    if cfg.batch_size == 0 || cfg.accumulation == 0 || cfg.epochs == 0 {
        return Err(TrainError::Config(
            "epochs, batch size and accumulation must be positive".into(),
        ));
    }
    if data.splits.train.is_empty() || data.splits.dev.is_empty() {
        return Err(TrainError::Config("the training and dev splits must not be empty".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let device = backbone.embedding_matrix().device();
    let mut adamw = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32);
    if let Some(clip) = cfg.grad_clip {
        adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(clip as f32)));
    }
    let mut optim = adamw.init::<B, Classifier<B>>();
    let mut model = model;
    let state_dir = out.join("state");
    let metrics_path = out.join("metrics.jsonl");
    let batches_per_epoch = data.splits.train.len().div_ceil(cfg.batch_size);
    let total_steps = (batches_per_epoch.div_ceil(cfg.accumulation)) * cfg.epochs;
    let warmup = (total_steps as f64 * cfg.warmup_ratio).round() as usize;
    let trainable_parameters = model.num_params();

    let mut history: Vec<EpochRecord> = Vec::new();
    let mut step = 0usize;
    let mut start_epoch = 0usize;
    let (mut best_acc, mut best_f1, mut best_epoch, mut since_best) =
        (-1.0f64, 0.0f64, 0usize, 0usize);
    if resume && state_dir.join("training_state.json").is_file() {
        let (m, o, progress) = load_training_state(&state_dir, model, optim, &device)?;
        model = m;
        optim = o;
        step = progress.step;
        start_epoch = progress.epoch;
        let extra = &progress.extra;
        history = serde_json::from_value(extra["history"].clone()).unwrap_or_default();
        best_acc = extra["best_acc"].as_f64().unwrap_or(-1.0);
        best_f1 = extra["best_f1"].as_f64().unwrap_or(0.0);
        best_epoch = extra["best_epoch"].as_u64().unwrap_or(0) as usize;
        since_best = extra["since_best"].as_u64().unwrap_or(0) as usize;
        eprintln!("resuming from {} at epoch {start_epoch}, step {step}", state_dir.display());
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| io_err(&metrics_path, e))?;
    }

    for epoch in start_epoch..cfg.epochs {
        let started = std::time::Instant::now();
        B::seed(&device, cfg.seed.wrapping_add(epoch as u64));
        let order =
            ptune_data::split::shuffled(data.splits.train.len(), cfg.seed ^ (epoch as u64 + 1));
        let lengths: Vec<usize> = data.splits.train.iter().map(|e| e.ids.len()).collect();
        let batches = length_bucketed_batches(
            &order,
            &lengths,
            cfg.batch_size,
            cfg.seed.wrapping_mul(31) ^ epoch as u64,
        );
        let bar = indicatif::ProgressBar::new(batches_per_epoch as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {msg} {bar:30} {pos}/{len} [{elapsed}<{eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{}/{}", epoch + 1, cfg.epochs));
        let mut accumulator = GradientsAccumulator::<Classifier<B>>::new();
        let (mut loss_sum, mut loss_n, mut pending) = (0.0f64, 0usize, 0usize);
        for (b, chunk) in batches.iter().enumerate() {
            let rows: Vec<Vec<u32>> =
                chunk.iter().map(|&i| data.splits.train[i].ids.clone()).collect();
            let labels: Vec<usize> = chunk.iter().map(|&i| data.splits.train[i].label).collect();
            let logits =
                model.head.forward(pooled(backbone, model.prompt.as_ref(), &rows, cfg.pooling)?);
            let loss = cross_entropy(logits, &labels);
            let value: f64 = loss.clone().into_scalar().elem();
            if !value.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFinite {
                    loss: value,
                    epoch: epoch + 1,
                    step,
                    state: state_dir.display().to_string(),
                });
            }
            loss_sum += value;
            loss_n += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
            pending += 1;
            if pending == cfg.accumulation || b + 1 == batches.len() {
                let lr = lr_at(cfg.lr, step, total_steps, warmup, cfg.schedule);
                model = optim.step(lr, model, accumulator.grads());
                step += 1;
                pending = 0;
                append_jsonl(
                    &metrics_path,
                    &serde_json::json!({"epoch": epoch + 1, "step": step, "loss": value, "lr": lr}),
                )?;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        // Evaluate with the parameters detached: no graph is kept for them.
        let frozen = model.clone().no_grad();
        let (acc, f1) = evaluate(
            backbone,
            &frozen,
            &data.splits.dev,
            data.labels.len(),
            cfg.batch_size,
            cfg.pooling,
        )?;
        let record = EpochRecord {
            epoch: epoch + 1,
            step,
            train_loss: loss_sum / loss_n.max(1) as f64,
            dev_accuracy: acc,
            dev_macro_f1: f1,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {}: train loss {:.4}, dev accuracy {:.4}, dev macro-F1 {:.4} ({:.0} s)",
            record.epoch, record.train_loss, acc, f1, record.seconds
        );
        append_jsonl(&metrics_path, &serde_json::json!({"eval": record}))?;
        history.push(record);
        if acc > best_acc {
            best_acc = acc;
            best_f1 = f1;
            best_epoch = epoch + 1;
            since_best = 0;
            if let Some(prompt) = &model.prompt {
                let dims = backbone.dims();
                ptune_prompt::adapter::save_adapter(
                    &out.join("adapter"),
                    &prompt.materialized(),
                    Some(&model.head),
                    &dims,
                    ptune_prompt::adapter::SEQ_CLS,
                    base_model,
                )?;
            }
        } else {
            since_best += 1;
        }
        let progress = TrainingProgress {
            step,
            epoch: epoch + 1,
            extra: serde_json::json!({
                "history": history, "best_acc": best_acc, "best_f1": best_f1,
                "best_epoch": best_epoch, "since_best": since_best, "config": cfg,
            }),
        };
        save_training_state(&state_dir, &model, &optim, &progress)?;
        write_curve(out, &metrics_path, &history)?;
        if cfg.patience.is_some_and(|p| since_best >= p) {
            eprintln!("early stop: no better dev accuracy for {since_best} epochs");
            break;
        }
        if cfg.stop_after_epochs.is_some_and(|n| epoch + 1 >= n && epoch + 1 < cfg.epochs) {
            eprintln!(
                "stopping after epoch {} (resume with the same settings to continue)",
                epoch + 1
            );
            break;
        }
    }
    let summary = RunSummary {
        best_dev_accuracy: best_acc,
        best_dev_macro_f1: best_f1,
        best_epoch,
        history,
        steps: step,
        trainable_parameters,
    };
    let text = serde_json::to_string_pretty(&summary).map_err(|e| io_err(out, e))?;
    write_atomic(&out.join("metrics.json"), &text)?;
    Ok((model, summary))
}

fn write_curve(out: &Path, metrics: &Path, history: &[EpochRecord]) -> Result<()> {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    let losses: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get("loss")?.as_f64()?)))
        .collect();
    let acc: Vec<(f64, f64)> = history.iter().map(|r| (r.epoch as f64, r.dev_accuracy)).collect();
    let svg =
        crate::plot::svg(&[("training loss per step", losses), ("dev accuracy per epoch", acc)]);
    write_atomic(&out.join("curve.svg"), &svg)
}

/// Trains the head alone on frozen, precomputed pooled features (the linear probe baseline); returns
/// (dev accuracy, dev macro-F1).
pub fn linear_probe<B: AutodiffBackend>(
    backbone: &AnyBackbone<B>,
    data: &ClassificationSet,
    cfg: &TrainConfig,
) -> Result<(f64, f64)> {
    let device = backbone.embedding_matrix().device();
    B::seed(&device, cfg.seed);
    let features = |examples: &[Example]| -> Result<Tensor<B, 2>> {
        let mut parts = Vec::new();
        for chunk in examples.chunks(cfg.batch_size.max(1)) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
            parts.push(pooled(backbone, None, &rows, cfg.pooling)?.detach());
        }
        Ok(Tensor::cat(parts, 0))
    };
    let train_x = features(&data.splits.train)?;
    let dev_x = features(&data.splits.dev)?;
    let d = backbone.dims().hidden_size;
    let mut head = ptune_prompt::ClassifierHeadConfig::new(d, data.labels.len()).init::<B>(&device);
    let mut optim = AdamWConfig::new().init::<B, ClassifierHead<B>>();
    let n = data.splits.train.len();
    let labels: Vec<usize> = data.splits.train.iter().map(|e| e.label).collect();
    for epoch in 0..(cfg.epochs * 10).max(10) {
        let order = ptune_data::split::shuffled(n, cfg.seed ^ (epoch as u64 + 101));
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(chunk.iter().map(|&i| i as i64).collect::<Vec<_>>(), [chunk.len()]),
                &device,
            );
            let y: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
            let loss = cross_entropy(head.forward(train_x.clone().select(0, idx)), &y);
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(1e-2, head, grads);
        }
    }
    let pred: Vec<usize> = head
        .forward(dev_x)
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|c| c as usize)
        .collect();
    let gold: Vec<usize> = data.splits.dev.iter().map(|e| e.label).collect();
    Ok((accuracy(&pred, &gold), macro_f1(&pred, &gold, data.labels.len())))
}

use burn::tensor::ElementConversion;
