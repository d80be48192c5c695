//! Causal-LM tasks on decoders, with the frozen LM head: generation (source → target, the loss on
//! target tokens only; dev loss, BLEU and ROUGE-L) and cloze classification with verbalizers (the
//! next-token logits of one word per label after a template such as `{text} Sentiment:`).

use ptune_transformer::FrozenOps;
use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use ptune_data::tasks::{Example, GenerationPair, LmExample};
use ptune_data::ClassificationSet;
use ptune_prompt::SoftPrompt;
use ptune_transformer::{Backbone, TextTokenizer};

use crate::classify::cross_entropy;
use crate::error::{Result, TrainError};
use crate::generate::{generate, GenerationConfig};
use crate::metrics::{accuracy, corpus_bleu, macro_f1, rouge_l};
use crate::task::{decoder, prompted_batch, Evaluation, Task};
use crate::trainer::metrics_map;

/// Mean next-token cross-entropy over the target tokens of `examples` (sources are context only).
/// The LM head runs only on the positions that predict a target token.
///
/// # Shapes
/// - output: `[1]`
pub fn target_loss<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    examples: &[&LmExample],
) -> Result<Tensor<B, 1>> {
    let llama = decoder(backbone, "generation")?;
    let rows: Vec<Vec<u32>> =
        examples.iter().map(|e| e.source.iter().chain(&e.target).copied().collect()).collect();
    let b = prompted_batch(backbone, prompt, &rows)?;
    let text = b.strip_virtual(backbone.forward(b.input.clone())?);
    let l = text.dims()[1];
    let mut index = Vec::new();
    let mut targets = Vec::new();
    for (r, e) in examples.iter().enumerate() {
        if e.source.is_empty() {
            return Err(TrainError::Config("a generation example has an empty source".into()));
        }
        for (k, &t) in e.target.iter().enumerate() {
            index.push(r * l + e.source.len() + k - 1);
            targets.push(t as usize);
        }
    }
    if targets.is_empty() {
        return Err(TrainError::Config(
            "a batch of generation examples has no target token".into(),
        ));
    }
    Ok(llama.loss_at(text, &index, &targets))
}

/// Dev sources for generation metrics: each distinct source once, with all its references.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSet {
    /// Source text, its ids, and its reference targets.
    pub items: Vec<(String, Vec<u32>, Vec<String>)>,
}

impl ReferenceSet {
    /// Groups `pairs` by source (first `limit` distinct sources, in order of appearance), encoding
    /// each source as [`ptune_data::tasks::tokenize_generation`] does.
    pub fn new(
        pairs: &[GenerationPair],
        tokenizer: &TextTokenizer,
        separator: &str,
        limit: usize,
    ) -> Result<Self> {
        let mut items: Vec<(String, Vec<u32>, Vec<String>)> = Vec::new();
        for p in pairs {
            if let Some(item) = items.iter_mut().find(|(s, _, _)| *s == p.source) {
                item.2.push(p.target.clone());
            } else if items.len() < limit {
                let ids = tokenizer.encode_plain(&format!("{}{separator}", p.source))?;
                items.push((p.source.clone(), ids, vec![p.target.clone()]));
            }
        }
        Ok(Self { items })
    }
}

/// Generations for every source of `refs`, decoded to text and cut to their first non-empty line
/// (an E2E description is one line; an untrained prompt runs on into other lines).
pub fn generate_all<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    tokenizer: &TextTokenizer,
    refs: &ReferenceSet,
    cfg: &GenerationConfig,
) -> Result<Vec<String>> {
    let phase = crate::progress::Phase::start("generation", refs.items.len());
    refs.items
        .iter()
        .map(|(_, ids, _)| {
            let out = generate(backbone, prompt, ids, cfg)?;
            phase.advance(1);
            // A target is one line: what follows a newline is not part of the answer.
            let text = tokenizer.decode(&out)?;
            Ok(text.split('\n').find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string())
        })
        .collect()
}

/// Corpus BLEU-4 and mean ROUGE-L of `hypotheses` against `refs`.
pub fn generation_scores(hypotheses: &[String], refs: &ReferenceSet) -> (f64, f64) {
    let references: Vec<Vec<String>> = refs.items.iter().map(|(_, _, r)| r.clone()).collect();
    let bleu = corpus_bleu(hypotheses, &references);
    let rouge = hypotheses.iter().zip(&references).map(|(h, r)| rouge_l(h, r)).sum::<f64>()
        / hypotheses.len().max(1) as f64;
    (bleu, rouge)
}

/// Mean target loss over `examples`, batched.
pub fn mean_target_loss<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    examples: &[LmExample],
    batch_size: usize,
) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    let phase = crate::progress::Phase::start("target loss", examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        phase.advance(chunk.len());
        let refs: Vec<&LmExample> = chunk.iter().collect();
        let tokens: usize = chunk.iter().map(|e| e.target.len()).sum();
        let loss: f64 = burn::tensor::ElementConversion::elem(
            target_loss(backbone, prompt, &refs)?.into_scalar(),
        );
        sum += loss * tokens as f64;
        n += tokens;
    }
    Ok(sum / n.max(1) as f64)
}

/// Causal-LM generation as a training [`Task`]: the soft prompt is the only trainable part. Dev:
/// target loss (and perplexity); with `references`, greedy generations scored by BLEU (which then
/// selects the best epoch) and ROUGE-L.
#[derive(Debug, Clone)]
pub struct CausalLm<'a> {
    /// Training examples.
    pub train: &'a [LmExample],
    /// Dev examples (loss).
    pub dev: &'a [LmExample],
    /// Dev sources and references for BLEU / ROUGE-L (`None`: loss only).
    pub references: Option<(&'a ReferenceSet, &'a TextTokenizer, GenerationConfig)>,
}

/// A language-model task whose loss and scores take the soft prompt as optional: with a prompt,
/// the prompt is what trains ([`Task`] on the task itself); without one, the decoder's own weights
/// do (full fine-tuning, [`crate::finetune::DecoderFineTuning`]). One definition of the task
/// serves both.
pub trait PromptOptional<B: FrozenOps> {
    /// Mean loss over the training examples `batch`.
    ///
    /// # Shapes
    /// - output: `[1]`
    fn loss_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>>;

    /// The dev metrics.
    fn evaluate_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch_size: usize,
    ) -> Result<Evaluation>;

    /// The test metrics, when the task holds a test split.
    fn test_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        let _ = (backbone, prompt, batch_size);
        Ok(None)
    }
}

impl<B: FrozenOps> PromptOptional<B> for CausalLm<'_> {
    fn loss_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        let examples: Vec<&LmExample> = batch.iter().map(|&i| &self.train[i]).collect();
        target_loss(backbone, prompt, &examples)
    }

    fn evaluate_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        let loss = mean_target_loss(backbone, prompt, self.dev, batch_size)?;
        let mut pairs = vec![("loss", loss), ("neg_loss", -loss), ("perplexity", loss.exp())];
        let Some((refs, tok, cfg)) = &self.references else {
            return Ok(Evaluation::new("neg_loss", metrics_map(&pairs)));
        };
        let hyps = generate_all(backbone, prompt, tok, refs, cfg)?;
        let (bleu, rouge) = generation_scores(&hyps, refs);
        pairs.extend([("bleu", bleu), ("rouge_l", rouge)]);
        Ok(Evaluation::new("bleu", metrics_map(&pairs)))
    }
}

impl<B: AutodiffBackend + FrozenOps> Task<B> for CausalLm<'_> {
    type Model = SoftPrompt<B>;

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|e| e.source.len() + e.target.len()).collect()
    }

    fn dev_len(&self) -> usize {
        self.dev.len()
    }

    fn loss(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        self.loss_with(backbone, Some(model), batch)
    }

    fn evaluate(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.evaluate_with(backbone, Some(model), batch_size)
    }

    fn save_adapter(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        dir: &Path,
        base_model: &str,
    ) -> Result<()> {
        save_lm_adapter(backbone, model, dir, base_model)
    }
}

/// Saves a prompt trained with the frozen LM head as a PEFT `CAUSAL_LM` adapter (materialized).
fn save_lm_adapter<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    model: &SoftPrompt<B>,
    dir: &Path,
    base_model: &str,
) -> Result<()> {
    ptune_prompt::adapter::save_adapter(
        dir,
        &model.materialized(),
        None,
        &backbone.dims(),
        ptune_prompt::adapter::CAUSAL_LM,
        base_model,
    )?;
    Ok(())
}

/// Greedy decoding settings for evaluation.
pub fn greedy(max_new_tokens: usize, eos: Option<u32>) -> GenerationConfig {
    GenerationConfig::greedy(max_new_tokens, eos)
}

/// The verbalizer: one single-token word per label (e.g. `" negative"`, `" positive"`).
pub fn verbalizer(tokenizer: &TextTokenizer, words: &[String]) -> Result<Vec<u32>> {
    words
        .iter()
        .map(|w| {
            let ids = tokenizer.encode_plain(w)?;
            match ids.as_slice() {
                [id] => Ok(*id),
                _ => Err(TrainError::Config(format!(
                    "verbalizer word {w:?} is {} tokens ({ids:?}); each label needs a single-token word",
                    ids.len()
                ))),
            }
        })
        .collect()
}

/// Verbalizer logits `[b, labels]`: the next-token logits after each row's last slot (the end of
/// the template), restricted to the verbalizer's tokens.
///
/// # Shapes
/// - rows: `b` token rows → `[b, labels]`
pub fn cloze_logits<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    rows: &[Vec<u32>],
    verbalizer: &[u32],
) -> Result<Tensor<B, 2>> {
    let llama = decoder(backbone, "cloze")?;
    let b = prompted_batch(backbone, prompt, rows)?;
    let input = b.input.clone();
    let s = input.embeds.dims()[1];
    // Each row's last filled slot: rows are right-padded.
    let lengths = b.row_lengths()?;
    let hidden = backbone.forward(input)?;
    let index: Vec<usize> =
        lengths.iter().enumerate().map(|(r, &n)| r * s + n.max(1) - 1).collect();
    let logits = llama.logits_at(hidden, &index);
    let cols = ptune_transformer::ids_tensor::<B>(verbalizer, &logits.device())
        .reshape([verbalizer.len()]);
    Ok(logits.select(1, cols))
}

/// Predicted labels of cloze examples.
pub fn cloze_predict<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    examples: &[Example],
    verbalizer: &[u32],
    batch_size: usize,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(examples.len());
    let phase = crate::progress::Phase::start("cloze scoring", examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        phase.advance(chunk.len());
        let rows: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
        let pred = cloze_logits(backbone, prompt, &rows, verbalizer)?.argmax(1);
        out.extend(pred.into_data().convert::<i64>().iter::<i64>().map(|c| c as usize));
    }
    Ok(out)
}

/// Cloze classification as a training [`Task`]: cross-entropy over the verbalizer logits; selected by
/// dev accuracy; only the soft prompt trains (the LM head is frozen). The examples' ids already hold
/// the template.
#[derive(Debug, Clone)]
pub struct Cloze<'a> {
    /// Tokenized, templated data.
    pub data: &'a ClassificationSet,
    /// One token per label.
    pub verbalizer: Vec<u32>,
}

impl Cloze<'_> {
    /// Accuracy and macro-F1 of the verbalizer's choice on `examples`, selected by accuracy.
    fn evaluate_on<B: FrozenOps>(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        examples: &[Example],
        batch_size: usize,
    ) -> Result<Evaluation> {
        let pred = cloze_predict(backbone, prompt, examples, &self.verbalizer, batch_size)?;
        let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
        let n = self.data.labels.len();
        Ok(Evaluation::new(
            "accuracy",
            metrics_map(&[
                ("accuracy", accuracy(&pred, &gold)),
                ("macro_f1", macro_f1(&pred, &gold, n)),
            ]),
        ))
    }
}

impl<B: FrozenOps> PromptOptional<B> for Cloze<'_> {
    fn loss_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        let train = &self.data.splits.train;
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| train[i].ids.clone()).collect();
        let labels: Vec<usize> = batch.iter().map(|&i| train[i].label).collect();
        Ok(cross_entropy(cloze_logits(backbone, prompt, &rows, &self.verbalizer)?, &labels))
    }

    fn evaluate_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.evaluate_on(backbone, prompt, &self.data.splits.dev, batch_size)
    }

    fn test_with(
        &self,
        backbone: &dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        let test = &self.data.splits.test;
        (!test.is_empty()).then(|| self.evaluate_on(backbone, prompt, test, batch_size)).transpose()
    }
}

impl<B: AutodiffBackend + FrozenOps> Task<B> for Cloze<'_> {
    type Model = SoftPrompt<B>;

    fn train_lengths(&self) -> Vec<usize> {
        self.data.splits.train.iter().map(|e| e.ids.len()).collect()
    }

    fn dev_len(&self) -> usize {
        self.data.splits.dev.len()
    }

    fn loss(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        batch: &[usize],
    ) -> Result<Tensor<B, 1>> {
        self.loss_with(backbone, Some(model), batch)
    }

    fn evaluate(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.evaluate_with(backbone, Some(model), batch_size)
    }

    fn test(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        batch_size: usize,
    ) -> Result<Option<Evaluation>> {
        self.test_with(backbone, Some(model), batch_size)
    }

    fn save_adapter(
        &self,
        backbone: &dyn Backbone<B>,
        model: &SoftPrompt<B>,
        dir: &Path,
        base_model: &str,
    ) -> Result<()> {
        save_lm_adapter(backbone, model, dir, base_model)
    }
}
