//! What the training loop needs from a task: a loss on a batch of training examples, an evaluation
//! on the dev split, and how to save the trainable part as an adapter. Sequence classification,
//! token classification, cloze and causal-LM generation implement it; [`crate::trainer::train`]
//! runs any of them.

use ptune_transformer::FrozenOps;
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use ptune_prompt::{PromptedBatch, SoftPrompt};
use ptune_transformer::{Backbone, Decoder};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The backbone input for `rows` under `prompt`, or plain padded embeddings without one (baselines).
pub fn prompted_batch<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    rows: &[Vec<u32>],
) -> Result<PromptedBatch<B>> {
    Ok(match prompt {
        Some(p) => p.prepare(backbone, rows)?,
        None => PromptedBatch::plain(backbone, rows)?,
    })
}

/// The decoder in `backbone`; `what` (e.g. "generation") names what needs it in the error.
pub(crate) fn decoder<'a, B: FrozenOps>(
    backbone: &'a dyn Backbone<B>,
    what: &str,
) -> Result<&'a dyn Decoder<B>> {
    backbone.as_decoder().ok_or_else(|| {
        TrainError::Config(format!(
            "{what} needs a decoder with an LM head (e.g. smollm2), not a {} encoder such as MiniLM",
            backbone.family()
        ))
    })
}

/// One evaluation: the score that selects the best epoch (higher is better) and every metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Name of the selecting metric (a key of `metrics`).
    pub metric: String,
    /// Its value (higher is better).
    pub score: f64,
    /// All metrics by name.
    pub metrics: BTreeMap<String, f64>,
}

impl Evaluation {
    /// An evaluation selected by `metric`, which must be one of `metrics`.
    pub fn new(metric: &str, metrics: BTreeMap<String, f64>) -> Self {
        let score = metrics.get(metric).copied().unwrap_or(f64::NAN);
        Self { metric: metric.to_string(), score, metrics }
    }
}

/// A trainable task over a frozen backbone.
pub trait Task<B: AutodiffBackend + FrozenOps> {
    /// The trainable module (soft prompt, head, or both).
    type Model: AutodiffModule<B> + Clone;

    /// Token lengths of the training examples (batches group similar lengths).
    fn train_lengths(&self) -> Vec<usize>;

    /// Number of dev examples (the loop refuses to train without any).
    fn dev_len(&self) -> usize;

    /// Mean loss over the training examples `batch` (indices into the training split).
    ///
    /// # Shapes
    /// - output: `[1]`
    fn loss(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Self::Model,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>>;

    /// Evaluates `model` (parameters detached) on the dev split.
    fn evaluate(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Self::Model,
        batch_size: usize,
    ) -> Result<Evaluation>;

    /// The same metrics as [`Task::evaluate`] on the test split, when the task holds one (`None`:
    /// it does not). The loop measures it at each new best dev score, so a run reports the test
    /// score of the epoch its dev score selects.
    fn test(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Self::Model,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        let _ = (backbone, model, batch_size);
        Ok(None)
    }

    /// Writes the trainable part of `model` as an adapter in `dir` (PEFT format where PEFT has one).
    fn save_adapter(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Self::Model,
        dir: &Path,
        base_model: &str,
    ) -> Result<()>;
}
