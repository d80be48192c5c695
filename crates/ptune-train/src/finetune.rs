//! Full fine-tuning: the backbone's own weights trained with the task's head, the baseline the
//! soft-prompt methods are measured against (P-Tuning v2's claim is that it matches this on small
//! models with a thousandth of the trainable parameters).
//!
//! The loaders freeze every backbone parameter; [`trainable`] turns them back on. The fused
//! frozen ops see a tracked weight and fall back to their composed forms, which Burn's autodiff
//! differentiates as usual (module docs of `ptune_transformer::frozen`), so the model code is the
//! same for both. [`FullFineTuning`] wraps a classification or tagging [`Task`] so that its model
//! holds the backbone too: the same loop, AdamW (with weight decay), schedule, checkpoints and
//! metrics train it. [`DecoderFineTuning`] does the same for the decoder tasks (cloze and
//! generation): the decoder, its LM head included, is the whole model.
//!
//! The best epoch's weights are written to `adapter/` as [`FINETUNED_FILE`] (Burn's named
//! MessagePack record of the backbone and head, f32) beside the run's `task.json`;
//! [`crate::TrainedRun::load`] reads them over the base model. PEFT has no adapter format for a
//! fully fine-tuned model, so this folder is for ptune only.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use ptune_prompt::files::replace_dir;
use ptune_prompt::PromptError;
use ptune_transformer::{AnyBackbone, Backbone, FrozenOps};

use crate::classify::Classifier;
use crate::error::{Result, TrainError};
use crate::lm::PromptOptional;
use crate::task::{Evaluation, Task};

/// The method name of full fine-tuning (`ptune train --method full-finetune`).
pub const FULL_FINETUNE: &str = "full-finetune";

/// The learning rate full fine-tuning uses when none is given (BERT's fine-tuning range, far below
/// a soft prompt's).
pub const DEFAULT_LR: f64 = 2e-5;

/// The AdamW weight decay full fine-tuning uses when none is given (HF `Trainer` practice for
/// BERT-style models).
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;

/// The file of a fine-tuned run's weights in its `adapter/` folder (without Burn's `.mpk`).
pub const FINETUNED_FILE: &str = "finetuned";

/// Sets every float parameter to require gradients.
struct Unfreeze;

impl<B: Backend> ModuleMapper<B> for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// `module` with every parameter trainable (a loaded backbone has them all frozen).
pub fn trainable<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Unfreeze)
}

/// A fully fine-tuned classifier: the backbone and the head (no soft prompt).
#[derive(Module, Debug)]
pub struct FineTuned<B: Backend> {
    /// The backbone, trainable.
    pub backbone: AnyBackbone<B>,
    /// The head (its `prompt` is `None`).
    pub classifier: Classifier<B>,
}

impl<B: FrozenOps> FineTuned<B> {
    /// `backbone` made trainable, with `classifier`'s head; a classifier with a soft prompt is an
    /// error (full fine-tuning trains the backbone instead).
    pub fn new(backbone: AnyBackbone<B>, classifier: Classifier<B>) -> Result<Self> {
        if classifier.prompt.is_some() {
            return Err(TrainError::Config(format!(
                "{FULL_FINETUNE} trains the backbone and the head, without a soft prompt"
            )));
        }
        Ok(Self { backbone: trainable(backbone), classifier })
    }

    /// Writes the weights to `dir/`[`FINETUNED_FILE`]`.mpk` (the folder replaced atomically, with
    /// checksums).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_weights(self, dir)
    }

    /// Loads weights written by [`FineTuned::save`] into `self` (the base model and a head of the
    /// run's width); a damaged file or a record of another shape is an error, not a panic.
    pub fn load(self, dir: &Path, device: &B::Device) -> Result<Self> {
        load_weights(self, dir, device)
    }
}

/// Writes `model`'s weights to `dir/`[`FINETUNED_FILE`]`.mpk` (the folder replaced atomically,
/// with checksums): a [`FineTuned`] classifier, or a fine-tuned decoder ([`AnyBackbone`]).
pub fn save_weights<B: Backend, M: Module<B>>(model: &M, dir: &Path) -> Result<()> {
    replace_dir(dir, |tmp| {
        let path = tmp.join(FINETUNED_FILE);
        NamedMpkFileRecorder::<FullPrecisionSettings>::new()
            .record(model.clone().into_record(), path.clone())
            .map_err(|e| PromptError::Adapter { path, message: e.to_string() })
    })?;
    Ok(())
}

/// Loads weights written by [`save_weights`] into `model` (of the same structure: the base model,
/// with a head of the run's width for a classifier); a damaged file or a record of another shape
/// is an error, not a panic.
pub fn load_weights<B: Backend, M: Module<B>>(
    model: M,
    dir: &Path,
    device: &B::Device,
) -> Result<M> {
    ptune_prompt::files::recover_dir(dir)?;
    ptune_prompt::files::verify_dir(dir)?;
    let path = dir.join(FINETUNED_FILE);
    let unreadable = |e: String| {
        TrainError::Config(format!("{}.mpk: unreadable fine-tuned weights: {e}", path.display()))
    };
    // Burn's record loading panics on some malformed contents instead of returning an error.
    let load = || -> Result<M> {
        let record = NamedMpkFileRecorder::<FullPrecisionSettings>::new()
            .load(path.clone(), device)
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(model.load_record(record))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
        .map_err(|_| unreadable("the record does not fit this model".into()))?
}

/// Whether `dir` (an adapter folder) holds fine-tuned weights.
pub fn has_finetuned(dir: &Path) -> bool {
    dir.join(format!("{FINETUNED_FILE}.mpk")).is_file()
}

/// A classification or tagging task with the backbone trained too: the wrapped task's loss,
/// evaluation and data, with [`FineTuned`] as the model. The backbone the loop passes (the frozen
/// one) is not used: the model's own runs every batch.
#[derive(Debug, Clone, Copy)]
pub struct FullFineTuning<T> {
    /// The task whose head is trained with the backbone.
    pub task: T,
}

impl<B, T> Task<B> for FullFineTuning<T>
where
    B: AutodiffBackend + FrozenOps,
    T: Task<B, Model = Classifier<B>>,
{
    type Model = FineTuned<B>;

    fn train_lengths(&self) -> Vec<usize> {
        self.task.train_lengths()
    }

    fn dev_len(&self) -> usize {
        self.task.dev_len()
    }

    fn loss(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &FineTuned<B>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        self.task.loss(&model.backbone, &model.classifier, batch)
    }

    fn evaluate(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &FineTuned<B>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.task.evaluate(&model.backbone, &model.classifier, batch_size)
    }

    fn test(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &FineTuned<B>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        self.task.test(&model.backbone, &model.classifier, batch_size)
    }

    fn save_adapter(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &FineTuned<B>,
        dir: &Path,
        _base_model: &str,
    ) -> Result<()> {
        model.save(dir)
    }
}

/// A language-model task (cloze or generation) with the decoder's own weights trained instead of
/// a soft prompt: the wrapped task's loss and scores without a prompt, with the trainable decoder
/// as the model (its LM head included, tied to the embeddings where the checkpoint ties them).
/// The best epoch's decoder is written as [`FINETUNED_FILE`] like a fine-tuned classifier.
#[derive(Debug, Clone, Copy)]
pub struct DecoderFineTuning<T> {
    /// The cloze or generation task.
    pub task: T,
}

impl<B, T> Task<B> for DecoderFineTuning<T>
where
    B: AutodiffBackend + FrozenOps,
    T: Task<B> + PromptOptional<B>,
{
    type Model = AnyBackbone<B>;

    fn train_lengths(&self) -> Vec<usize> {
        self.task.train_lengths()
    }

    fn dev_len(&self) -> usize {
        self.task.dev_len()
    }

    fn loss(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &AnyBackbone<B>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        self.task.loss_with(model, None, batch)
    }

    fn evaluate(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &AnyBackbone<B>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.task.evaluate_with(model, None, batch_size)
    }

    fn test(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &AnyBackbone<B>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        self.task.test_with(model, None, batch_size)
    }

    fn save_adapter(
        &self,
        _frozen: &dyn Backbone<B>,
        model: &AnyBackbone<B>,
        dir: &Path,
        _base_model: &str,
    ) -> Result<()> {
        save_weights(model, dir)
    }
}
