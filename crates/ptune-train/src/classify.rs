//! Sequence classification (single texts and pairs) with a soft prompt on a frozen backbone, and
//! its baselines: the linear probe (head only) and the majority class.

use ptune_transformer::FrozenOps;
use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use ptune_data::tasks::Example;
use ptune_data::ClassificationSet;
use ptune_prompt::{ClassifierHead, PromptedBatch, SoftPrompt};
use ptune_transformer::Backbone;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::metrics::{accuracy, macro_f1};
use crate::task::{prompted_batch, Evaluation, Task};
use crate::trainer::{metrics_map, TrainConfig};

/// How a sequence becomes one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// HF `BertPooler` on the first position (PEFT's `BertForSequenceClassification`; with an
    /// input-level prompt the first position is a virtual token, as in PEFT).
    Pooler,
    /// The last hidden state of the first text token (BERT's `[CLS]`), virtual tokens stripped.
    Cls,
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

/// Pooled representations of `rows` (`[b, d]`).
///
/// # Shapes
/// - rows: `b` token rows → `[b, d]`
pub fn pooled<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    rows: &[Vec<u32>],
    pooling: Pooling,
) -> Result<Tensor<B, 2>> {
    let batch = prompted_batch(backbone, prompt, rows)?;
    let hidden = backbone.forward(batch.input.clone())?;
    pool_hidden(backbone, &batch, hidden, pooling)
}

/// Pools the last hidden state of a prompted batch (the rows may use different prompts, as
/// `ptune_prompt::prepare_mixed` builds them): one vector per row.
///
/// # Shapes
/// - hidden: `[b, s, d]` (the forward of `batch`) → `[b, d]`
pub fn pool_hidden<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    batch: &PromptedBatch<B>,
    hidden: Tensor<B, 3>,
    pooling: Pooling,
) -> Result<Tensor<B, 2>> {
    match pooling {
        Pooling::Pooler => match backbone.as_encoder() {
            Some(encoder) => encoder.pooler(hidden).ok_or_else(|| {
                TrainError::Config("this checkpoint has no pooler: use --pooling mean".into())
            }),
            None => Err(TrainError::Config(format!(
                "a {} decoder has no pooler: use --pooling mean",
                backbone.family()
            ))),
        },
        Pooling::Cls => {
            let text = batch.strip_virtual(hidden);
            let [b, _, d] = text.dims();
            Ok(text.narrow(1, 0, 1).reshape([b, d]))
        }
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
///
/// # Shapes
/// - logits: `[b, classes]`, labels: `b` → `[1]`
pub fn cross_entropy<B: FrozenOps>(logits: Tensor<B, 2>, labels: &[usize]) -> Tensor<B, 1> {
    ptune_transformer::frozen::cross_entropy(logits, labels)
}

/// Predicted classes of `examples` (batched by length, returned in input order).
pub fn predict<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    model: &Classifier<B>,
    examples: &[Example],
    batch_size: usize,
    pooling: Pooling,
) -> Result<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let mut out = vec![0usize; examples.len()];
    let phase = crate::progress::Phase::start("classifying", examples.len());
    for chunk in order.chunks(batch_size.max(1)) {
        phase.advance(chunk.len());
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
pub fn evaluate<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
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

/// Trains the head alone on frozen, precomputed pooled features (the linear probe baseline); returns
/// (dev accuracy, dev macro-F1).
pub fn linear_probe<B: AutodiffBackend + FrozenOps>(
    backbone: &dyn Backbone<B>,
    data: &ClassificationSet,
    cfg: &TrainConfig,
    pooling: Pooling,
) -> Result<(f64, f64)> {
    let device = backbone.embedding_matrix().device();
    B::seed(&device, cfg.seed);
    let features = |examples: &[Example]| -> Result<Tensor<B, 2>> {
        let mut parts = Vec::new();
        let phase = crate::progress::Phase::start("linear probe: features", examples.len());
        for chunk in examples.chunks(cfg.batch_size.max(1)) {
            phase.advance(chunk.len());
            let rows: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
            parts.push(pooled(backbone, None, &rows, pooling)?.detach());
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
            let idx = ptune_transformer::index_tensor::<B>(chunk, &device);
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

/// Sequence classification as a training [`Task`]: cross-entropy of the head on the pooled output;
/// selected by dev accuracy; the adapter is PEFT's `SEQ_CLS` with the head.
#[derive(Debug, Clone, Copy)]
pub struct SequenceClassification<'a> {
    /// The tokenized data.
    pub data: &'a ClassificationSet,
    /// How a sequence becomes one vector.
    pub pooling: Pooling,
}

impl SequenceClassification<'_> {
    /// Accuracy and macro-F1 on `examples`, selected by accuracy.
    fn evaluate_on<B: FrozenOps>(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        examples: &[Example],
        batch_size: usize,
    ) -> Result<Evaluation> {
        let n = self.data.labels.len();
        let (acc, f1) = evaluate(backbone, model, examples, n, batch_size, self.pooling)?;
        Ok(Evaluation::new("accuracy", metrics_map(&[("accuracy", acc), ("macro_f1", f1)])))
    }
}

impl<B: AutodiffBackend + FrozenOps> Task<B> for SequenceClassification<'_> {
    type Model = Classifier<B>;

    fn train_lengths(&self) -> Vec<usize> {
        self.data.splits.train.iter().map(|e| e.ids.len()).collect()
    }

    fn dev_len(&self) -> usize {
        self.data.splits.dev.len()
    }

    fn loss(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        let train = &self.data.splits.train;
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| train[i].ids.clone()).collect();
        let labels: Vec<usize> = batch.iter().map(|&i| train[i].label).collect();
        let pooled = pooled(backbone, model.prompt.as_ref(), &rows, self.pooling)?;
        Ok(cross_entropy(model.head.forward(pooled), &labels))
    }

    fn evaluate(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.evaluate_on(backbone, model, &self.data.splits.dev, batch_size)
    }

    fn test(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        let test = &self.data.splits.test;
        (!test.is_empty()).then(|| self.evaluate_on(backbone, model, test, batch_size)).transpose()
    }

    fn save_adapter(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        dir: &Path,
        base_model: &str,
    ) -> Result<()> {
        save_classifier_adapter(backbone, model, dir, base_model, ptune_prompt::adapter::SEQ_CLS)
    }
}

/// Saves a classifier's prompt (materialized) and head as a PEFT adapter; a linear probe (no prompt)
/// saves nothing.
pub fn save_classifier_adapter<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    model: &Classifier<B>,
    dir: &Path,
    base_model: &str,
    task_type: &str,
) -> Result<()> {
    if let Some(prompt) = &model.prompt {
        ptune_prompt::adapter::save_adapter(
            dir,
            &prompt.materialized(),
            Some(&model.head),
            &backbone.dims(),
            task_type,
            base_model,
        )?;
    }
    Ok(())
}
