//! Token classification (BIO tagging) with a soft prompt on a frozen backbone. Virtual tokens are
//! stripped from the sequence output before the head ([`ptune_prompt::PromptedBatch::strip_virtual`]), then the
//! head reads each word's first piece: predictions come back one per word, whatever the method.

use ptune_transformer::FrozenOps;
use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use ptune_data::tagging::{TaggedExample, TaggingSet};
use ptune_transformer::Backbone;

use crate::classify::{cross_entropy, save_classifier_adapter, Classifier};
use crate::error::Result;
use crate::metrics::{accuracy, entity_f1};
use crate::task::{prompted_batch, Evaluation, Task};
use crate::trainer::metrics_map;

/// Tag logits of every word of `examples`, in order (sentence by sentence, word by word).
///
/// # Shapes
/// - returns `[Σ words, num_labels]`
pub fn word_logits<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    model: &Classifier<B>,
    examples: &[&TaggedExample],
) -> Result<Tensor<B, 2>> {
    let rows: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
    let batch = prompted_batch(backbone, model.prompt.as_ref(), &rows)?;
    let text = batch.strip_virtual(backbone.forward(batch.input.clone())?);
    let l = text.dims()[1];
    let index: Vec<usize> = examples
        .iter()
        .enumerate()
        .flat_map(|(r, e)| e.word_starts.iter().map(move |&s| r * l + s))
        .collect();
    Ok(model.head.forward(ptune_transformer::rows_at(text, &index)))
}

/// Predicted tag indices, one list per example (one tag per kept word).
pub fn predict_tags<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    model: &Classifier<B>,
    examples: &[TaggedExample],
    batch_size: usize,
) -> Result<Vec<Vec<usize>>> {
    let mut out = Vec::with_capacity(examples.len());
    let phase = crate::progress::Phase::start("tagging", examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        phase.advance(chunk.len());
        let refs: Vec<&TaggedExample> = chunk.iter().collect();
        let flat: Vec<usize> = word_logits(backbone, model, &refs)?
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .iter::<i64>()
            .map(|c| c as usize)
            .collect();
        let mut at = 0;
        for e in chunk {
            out.push(flat[at..at + e.tags.len()].to_vec());
            at += e.tags.len();
        }
    }
    Ok(out)
}

/// Entity-level F1 and word accuracy of `pred` against the examples' tags.
pub fn tagging_scores(
    pred: &[Vec<usize>],
    examples: &[TaggedExample],
    labels: &[String],
) -> (f64, f64) {
    let names = |tags: &[usize]| tags.iter().map(|&t| labels[t].as_str()).collect::<Vec<_>>();
    let gold: Vec<Vec<&str>> = examples.iter().map(|e| names(&e.tags)).collect();
    let guess: Vec<Vec<&str>> = pred.iter().map(|p| names(p)).collect();
    let flat_pred: Vec<usize> = pred.iter().flatten().copied().collect();
    let flat_gold: Vec<usize> = examples.iter().flat_map(|e| e.tags.iter().copied()).collect();
    (entity_f1(&guess, &gold), accuracy(&flat_pred, &flat_gold))
}

/// Token classification as a training [`Task`]: cross-entropy over words' first pieces; selected by
/// dev entity F1; the adapter is PEFT's `TOKEN_CLS` with the head.
#[derive(Debug, Clone, Copy)]
pub struct TokenClassification<'a> {
    /// The tokenized data.
    pub data: &'a TaggingSet,
}

impl TokenClassification<'_> {
    /// Entity F1 and word accuracy on `examples`, selected by entity F1.
    fn evaluate_on<B: FrozenOps>(
        &self,
        backbone: &dyn Backbone<B>,
        model: &Classifier<B>,
        examples: &[TaggedExample],
        batch_size: usize,
    ) -> Result<Evaluation> {
        let pred = predict_tags(backbone, model, examples, batch_size)?;
        let (f1, acc) = tagging_scores(&pred, examples, &self.data.labels);
        Ok(Evaluation::new("entity_f1", metrics_map(&[("entity_f1", f1), ("word_accuracy", acc)])))
    }
}

impl<B: AutodiffBackend + FrozenOps> Task<B> for TokenClassification<'_> {
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
        let examples: Vec<&TaggedExample> =
            batch.iter().map(|&i| &self.data.splits.train[i]).collect();
        let labels: Vec<usize> = examples.iter().flat_map(|e| e.tags.iter().copied()).collect();
        Ok(cross_entropy(word_logits(backbone, model, &examples)?, &labels))
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
        save_classifier_adapter(backbone, model, dir, base_model, ptune_prompt::adapter::TOKEN_CLS)
    }
}
