//! Using a trained run from Rust: [`TextClassifier`] (sequence classification and cloze runs)
//! and [`Generator`] (generation runs, or a bare decoder). Each loads everything it needs from the
//! run folder (`task.json`, `adapter/`) and the model the run names, so a prediction here is the
//! one `ptune predict` makes.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use ptune_train::inference::{GenerateOptions, Generator, TextClassifier};
//!
//! let classifier = TextClassifier::<Flex>::from_run("runs/minilm-p-tuning-v2")?;
//! for p in classifier.predict(&["a gorgeous, witty film", "a tedious mess"])? {
//!     println!("{} ({:.2})", p.label, p.scores[p.index]);
//! }
//!
//! let generator = Generator::<Flex>::from_run("runs/smollm2-e2e")?;
//! let text = generator.generate("name[The Eagle], food[French]", &GenerateOptions::default())?;
//! println!("{text}");
//! # Ok::<(), ptune_train::TrainError>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;
use ptune_data::tagging::{tokenize_tagging, words_of, TaggedSentence};
use ptune_prompt::adapter::load_adapter;
use ptune_prompt::{ClassifierHead, ClassifierHeadConfig, SoftPrompt};
use ptune_transformer::{load_model, AnyBackbone, Backbone, FrozenOps, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::classify::{evaluate, pooled, Classifier, Pooling};
use crate::error::{Result, TrainError};
use crate::finetune::{has_finetuned, load_weights, FineTuned};
use crate::generate::{generate_streaming, Decoding, Flow, GenerationConfig};
use crate::job::{eos_of, load_data, TaskData};
use crate::lm::{
    cloze_logits, cloze_predict, generate_all, generation_scores, mean_target_loss, verbalizer,
    ReferenceSet,
};
use crate::metrics::{accuracy, macro_f1};
use crate::run::{resolve_model, templated, TaskInfo, TaskKind};
use crate::tagging::{predict_tags, tagging_scores};
use crate::trainer::metrics_map;

/// Rows per forward pass when predicting.
const BATCH: usize = 32;

/// A run folder loaded: the model it names (or another), its tokenizer, its `task.json` and its
/// trained parts. [`TextClassifier`], [`Tagger`] and [`Generator`] are built on one.
pub struct TrainedRun<B: FrozenOps> {
    /// The frozen model.
    pub backbone: AnyBackbone<B>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The run's `task.json`.
    pub info: TaskInfo,
    /// The trained soft prompt (`None` for a linear probe, or a run without an adapter yet).
    pub prompt: Option<SoftPrompt<B>>,
    /// The trained head (classify, tag).
    pub head: Option<ClassifierHead<B>>,
}

/// A data split to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The dev split (used to pick the best epoch).
    Dev,
    /// The test split.
    Test,
}

impl std::str::FromStr for Split {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dev" => Ok(Split::Dev),
            "test" => Ok(Split::Test),
            other => Err(TrainError::Config(format!("unknown split `{other}` (dev, test)"))),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Dev => "dev",
            Split::Test => "test",
        })
    }
}

impl Split {
    fn pick<T>(self, splits: &ptune_data::Splits<T>) -> &[T] {
        match self {
            Split::Dev => &splits.dev,
            Split::Test => &splits.test,
        }
    }
}

/// Settings of [`TrainedRun::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Rows per forward pass (default 32).
    pub batch_size: usize,
    /// Generation: sources decoded for BLEU / ROUGE-L (default 50).
    pub eval_sources: usize,
    /// Generation: most new tokens (default 48).
    pub max_new_tokens: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: BATCH, eval_sources: 50, max_new_tokens: 48 }
    }
}

/// What [`TrainedRun::evaluate`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The data set evaluated.
    pub dataset: String,
    /// The split.
    pub split: Split,
    /// Every metric of the task, by name.
    pub metrics: BTreeMap<String, f64>,
    /// Examples evaluated (rows; generation: target rows for the loss).
    #[serde(default)]
    pub examples: usize,
    /// Generation: the first few (source, generation) pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<(String, String)>,
}

impl<B: FrozenOps> TrainedRun<B> {
    /// The longest input a prediction reads ([`TaskInfo::longest_input`] for this run's prompt
    /// and model).
    pub fn longest_input(&self) -> usize {
        let virtual_tokens = self.prompt.as_ref().map_or(0, |p| p.spec.num_virtual_tokens);
        self.info.longest_input(virtual_tokens, self.backbone.dims().max_positions)
    }

    /// Loads the run folder `run` (or its `adapter/` folder, alone or inside the run: it carries
    /// its own `task.json`) with the model its `task.json` names, or with `model` instead, on
    /// `device`.
    pub fn load(run: impl AsRef<Path>, model: Option<&str>, device: &B::Device) -> Result<Self> {
        let (info, dir) = TaskInfo::load(run.as_ref())?;
        let (backbone, tokenizer) = load_backbone::<B>(model.unwrap_or(&info.model), device)?;
        // `dir` is a run folder, or an adapter folder carrying its own task.json.
        let adapter = if dir.join("adapter_config.json").is_file() || has_finetuned(&dir) {
            dir.clone()
        } else {
            dir.join("adapter")
        };
        if has_finetuned(&adapter) {
            if matches!(info.task, TaskKind::Cloze | TaskKind::Generate) {
                // A fully fine-tuned decoder: its weights over the base model (no prompt, no head).
                let backbone = load_weights(backbone, &adapter, device)?;
                return Ok(Self { backbone, tokenizer, info, prompt: None, head: None });
            }
            // A fully fine-tuned classifier: its weights over the base model, and its head.
            let head = ClassifierHeadConfig::new(backbone.dims().hidden_size, info.labels.len())
                .init::<B>(device);
            let model = FineTuned { backbone, classifier: Classifier { prompt: None, head } };
            let model = model.load(&adapter, device)?;
            let head = Some(model.classifier.head);
            return Ok(Self { backbone: model.backbone, tokenizer, info, prompt: None, head });
        }
        let (prompt, head) = if adapter.join("adapter_config.json").is_file() {
            let a = load_adapter::<B>(&adapter, &backbone.dims(), device)?;
            (Some(a.prompt), a.head)
        } else {
            (None, None)
        };
        if let Some(head) = &head {
            let [d_in, _] = head.linear.weight.dims();
            let hidden = backbone.dims().hidden_size;
            if d_in != hidden {
                return Err(TrainError::Config(format!(
                    "the run's head reads {d_in} features, but the model's hidden size is {hidden}"
                )));
            }
        }
        Ok(Self { backbone, tokenizer, info, prompt, head })
    }

    /// The prompt and head as one classifier (classify and tag runs).
    fn classifier(&self) -> Result<Classifier<B>> {
        let head = self.head.clone().ok_or_else(|| {
            TrainError::Config("the run's adapter has no head (train it first)".into())
        })?;
        let n = head.linear.weight.dims()[1];
        if n != self.info.labels.len() {
            return Err(TrainError::Config(format!(
                "the run's head has {n} outputs, but its task.json has {} labels",
                self.info.labels.len()
            )));
        }
        Ok(Classifier { prompt: self.prompt.clone(), head })
    }

    /// The run's task metrics on `split` of its data set (or of `dataset`, another data set
    /// for the same task): accuracy and macro-F1 (classify, cloze), entity F1 and word accuracy
    /// (tag), target loss, BLEU and ROUGE-L (generate).
    pub fn evaluate(
        &self,
        split: Split,
        dataset: Option<&str>,
        options: &EvalOptions,
    ) -> Result<EvalReport> {
        let mut info = self.info.clone();
        if let Some(d) = dataset {
            // Another data set: the run's own dev / test files do not apply to it.
            info.dataset = d.to_string();
            info.dev = None;
            info.test = None;
        }
        let labels_before = info.labels.clone();
        let data = load_data(&mut info, &self.tokenizer, usize::MAX, eos_of(&self.backbone))?;
        if matches!(info.task, TaskKind::Classify | TaskKind::Tag | TaskKind::Cloze)
            && info.labels != labels_before
        {
            return Err(TrainError::Config(format!(
                "{} has the labels {:?}, the run was trained on {:?}",
                info.dataset, info.labels, labels_before
            )));
        }
        let backbone: &dyn Backbone<B> = &self.backbone;
        let prompt = self.prompt.as_ref();
        let batch = options.batch_size.max(1);
        let mut samples = Vec::new();
        let examples = match &data {
            TaskData::Labelled(d) => split.pick(&d.splits).len(),
            TaskData::Tagged(d) => split.pick(&d.splits).len(),
            TaskData::Generation { examples, .. } => split.pick(examples).len(),
        };
        let pairs: Vec<(&str, f64)> = match &data {
            TaskData::Labelled(d) if info.task == TaskKind::Classify => {
                let ex = split.pick(&d.splits);
                let pooling = info.pooling.unwrap_or(Pooling::Mean);
                let (acc, f1) =
                    evaluate(backbone, &self.classifier()?, ex, d.labels.len(), batch, pooling)?;
                vec![("accuracy", acc), ("macro_f1", f1)]
            }
            TaskData::Labelled(d) => {
                let ex = split.pick(&d.splits);
                let words = info.verbalizer.clone().unwrap_or_default();
                let verbalizer = verbalizer(&self.tokenizer, &words)?;
                let pred = cloze_predict(backbone, prompt, ex, &verbalizer, batch)?;
                let gold: Vec<usize> = ex.iter().map(|e| e.label).collect();
                vec![
                    ("accuracy", accuracy(&pred, &gold)),
                    ("macro_f1", macro_f1(&pred, &gold, d.labels.len())),
                ]
            }
            TaskData::Tagged(d) => {
                let ex = split.pick(&d.splits);
                let pred = predict_tags(backbone, &self.classifier()?, ex, batch)?;
                let (f1, acc) = tagging_scores(&pred, ex, &d.labels);
                vec![("entity_f1", f1), ("word_accuracy", acc)]
            }
            TaskData::Generation { examples, pairs } => {
                let ex = split.pick(examples);
                let loss = mean_target_loss(backbone, prompt, ex, batch)?;
                let sep = info.separator.clone().unwrap_or_default();
                let rows = split.pick(pairs);
                let refs = ReferenceSet::new(rows, &self.tokenizer, &sep, options.eval_sources)?;
                let cfg = crate::lm::greedy(options.max_new_tokens, eos_of(backbone));
                let hyps = generate_all(backbone, prompt, &self.tokenizer, &refs, &cfg)?;
                let (bleu, rouge) = generation_scores(&hyps, &refs);
                samples = refs
                    .items
                    .iter()
                    .zip(&hyps)
                    .take(3)
                    .map(|((source, _, _), h)| (source.clone(), h.clone()))
                    .collect();
                vec![("loss", loss), ("bleu", bleu), ("rouge_l", rouge)]
            }
        };
        for (name, v) in &pairs {
            if !v.is_finite() {
                return Err(TrainError::Config(format!(
                    "evaluation of {} ({split}) gave a non-finite {name} ({v})",
                    info.dataset
                )));
            }
        }
        Ok(EvalReport {
            dataset: info.dataset,
            split,
            metrics: metrics_map(&pairs),
            examples,
            samples,
        })
    }
}

/// The model `model` names (`minilm`, `smollm2`, a path or a Hub id) and its tokenizer.
pub fn load_backbone<B: FrozenOps>(
    model: &str,
    device: &B::Device,
) -> Result<(AnyBackbone<B>, TextTokenizer)> {
    let loaded = load_model::<B>(&resolve_model(model)?, device)?;
    let tokenizer = loaded
        .tokenizer
        .ok_or_else(|| TrainError::Config(format!("model `{model}` has no tokenizer")))?;
    Ok((loaded.backbone, tokenizer))
}

/// One text's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most likely label.
    pub label: String,
    /// Its index in [`TextClassifier::labels`].
    pub index: usize,
    /// The probability of every label, in label order.
    pub scores: Vec<f32>,
}

impl Prediction {
    /// The most likely of `labels` under `scores` (every label's probability, in label order);
    /// an error when the scores do not match the labels.
    pub fn from_scores(labels: &[String], scores: Vec<f32>) -> Result<Self> {
        let index =
            scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        let label = labels.get(index).cloned().ok_or_else(|| {
            TrainError::Config(format!("score {index} of {} labels", labels.len()))
        })?;
        Ok(Self { label, index, scores })
    }
}

/// A trained sequence-classification or cloze run, ready to label texts.
pub struct TextClassifier<B: FrozenOps> {
    run: TrainedRun<B>,
    /// Classify: the head. Cloze: `None` (the LM head reads the verbalizer).
    head: Option<ClassifierHead<B>>,
    /// Cloze: one token per label.
    verbalizer: Vec<u32>,
    pooling: Pooling,
}

impl<B: FrozenOps> TextClassifier<B> {
    /// Loads a `classify` or `cloze` run folder (written by `ptune train`) on the default device.
    pub fn from_run(run: impl AsRef<Path>) -> Result<Self> {
        Self::from_run_on(run, &B::Device::default())
    }

    /// [`TextClassifier::from_run`] on `device`.
    pub fn from_run_on(run: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let mut run = TrainedRun::<B>::load(run, None, device)?;
        let dims = run.backbone.dims();
        let n_labels = run.info.labels.len();
        let (head, verbalizer) = match run.info.task {
            TaskKind::Classify => {
                let head = run.head.take().ok_or_else(|| {
                    TrainError::Config("the run's adapter has no classification head".into())
                })?;
                let [d_in, d_out] = head.linear.weight.dims();
                if d_in != dims.hidden_size || d_out != n_labels {
                    return Err(TrainError::Config(format!(
                        "the head maps {d_in} → {d_out}, but the model's hidden size is {} and the \
                         run has {n_labels} labels",
                        dims.hidden_size
                    )));
                }
                (Some(head), Vec::new())
            }
            TaskKind::Cloze => {
                let words = run.info.verbalizer.clone().unwrap_or_default();
                let ids = verbalizer(&run.tokenizer, &words)?;
                if ids.len() != n_labels {
                    return Err(TrainError::Config(format!(
                        "the verbalizer has {} words for {n_labels} labels",
                        ids.len()
                    )));
                }
                (None, ids)
            }
            other => {
                return Err(TrainError::Config(format!(
                    "a {other:?} run does not classify texts (use a classify or cloze run)"
                )))
            }
        };
        let pooling = run.info.pooling.unwrap_or(Pooling::Mean);
        Ok(Self { run, head, verbalizer, pooling })
    }

    /// The label names, in the order of [`Prediction::scores`].
    pub fn labels(&self) -> &[String] {
        &self.run.info.labels
    }

    /// The most likely label of each text, with every label's probability.
    pub fn predict<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Prediction>> {
        let info = &self.run.info;
        let max_len = self.run.longest_input();
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let rows = chunk
                .iter()
                .map(|t| {
                    let text = match (info.task, &info.cloze_template) {
                        (TaskKind::Cloze, Some(template)) => templated(template, t.as_ref()),
                        _ => t.as_ref().to_string(),
                    };
                    let ids = self.run.tokenizer.encode(&text)?;
                    if ids.is_empty() {
                        return Err(TrainError::Config(format!("`{text}` has no tokens")));
                    }
                    Ok(ptune_data::tasks::truncate(ids, max_len, true))
                })
                .collect::<Result<Vec<_>>>()?;
            let logits = self.logits(&rows)?;
            let [b, n] = logits.dims();
            let probs = softmax(logits, 1)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| TrainError::Config(format!("reading probabilities: {e:?}")))?;
            for row in probs.chunks(n).take(b) {
                out.push(Prediction::from_scores(&info.labels, row.to_vec())?);
            }
        }
        Ok(out)
    }

    /// Label logits `[b, labels]` of tokenized rows.
    ///
    /// # Shapes
    /// - rows: `b` token rows → `[b, labels]`
    fn logits(&self, rows: &[Vec<u32>]) -> Result<Tensor<B, 2>> {
        let backbone = &self.run.backbone;
        let prompt = self.run.prompt.as_ref();
        match &self.head {
            Some(head) => Ok(head.forward(pooled(backbone, prompt, rows, self.pooling)?)),
            None => cloze_logits(backbone, prompt, rows, &self.verbalizer),
        }
    }
}

/// A trained token-classification (`tag`) run, ready to tag texts word by word.
pub struct Tagger<B: FrozenOps> {
    run: TrainedRun<B>,
    model: Classifier<B>,
}

/// One word and its predicted tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedWord {
    /// The word (punctuation is split from words as in the training data).
    pub word: String,
    /// Its BIO tag.
    pub tag: String,
}

impl<B: FrozenOps> Tagger<B> {
    /// Loads a `tag` run folder (written by `ptune train`) on the default device.
    pub fn from_run(run: impl AsRef<Path>) -> Result<Self> {
        Self::from_loaded(TrainedRun::load(run, None, &B::Device::default())?)
    }

    /// A tagger of a loaded `tag` run.
    pub fn from_loaded(run: TrainedRun<B>) -> Result<Self> {
        if run.info.task != TaskKind::Tag {
            return Err(TrainError::Config(format!(
                "a {:?} run does not tag words (use a tag run)",
                run.info.task
            )));
        }
        let model = run.classifier()?;
        Ok(Self { run, model })
    }

    /// The tag names.
    pub fn labels(&self) -> &[String] {
        &self.run.info.labels
    }

    /// Each text split into words, each word with its tag. A text whose words do not all fit in
    /// the run's longest input keeps only the words that do.
    pub fn tag<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<TaggedWord>>> {
        let info = &self.run.info;
        let sentences: Vec<TaggedSentence> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let words = words_of(t.as_ref());
                let tags = vec!["O".to_string(); words.len()];
                TaggedSentence { words, tags, line: i + 1 }
            })
            .collect();
        let examples = tokenize_tagging(
            &sentences,
            &info.labels,
            &self.run.tokenizer,
            self.run.longest_input(),
            Path::new("<input>"),
        )?;
        let pred = predict_tags(&self.run.backbone, &self.model, &examples, BATCH)?;
        Ok(sentences
            .iter()
            .zip(pred)
            .map(|(s, tags)| {
                s.words
                    .iter()
                    .zip(tags)
                    .map(|(w, t)| TaggedWord {
                        word: w.clone(),
                        tag: info.labels.get(t).cloned().unwrap_or_else(|| "O".into()),
                    })
                    .collect()
            })
            .collect())
    }
}

/// Settings of [`Generator::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens (default 48).
    pub max_new_tokens: usize,
    /// Greedy (default), sampling or beam search.
    pub decoding: Decoding,
    /// Texts that end the generation where they first appear; the output stops before them
    /// (as OpenAI-style servers do). Empty strings are ignored.
    pub stop: Vec<String>,
    /// HF's `repetition_penalty` (1.0, the default, is off).
    pub repetition_penalty: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 48,
            decoding: Decoding::Greedy,
            stop: Vec::new(),
            repetition_penalty: 1.0,
        }
    }
}

/// Turns the decoded text after each token into streamable pieces: leading whitespace dropped,
/// the text cut before the first stop string, and nothing emitted that a stop string could still
/// claim (a suffix that begins a stop string) or that is an incomplete character (`U+FFFD` at the
/// end of a partial byte sequence).
#[derive(Debug, Clone)]
pub struct StopText {
    stops: Vec<String>,
    emitted: usize,
    text: String,
    stopped: bool,
}

impl StopText {
    /// Watches for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        Self { stops, emitted: 0, text: String::new(), stopped: false }
    }

    /// Takes the whole decoded output so far; returns the new text safe to show and whether a
    /// stop string was reached.
    pub fn update(&mut self, decoded: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let text = decoded.trim_start();
        let cut = self.stops.iter().filter_map(|s| text.find(s.as_str())).min();
        let (visible, stopped) = match cut {
            Some(at) => (text.get(..at).unwrap_or(text), true),
            None => (text, false),
        };
        // Hold back a suffix that could grow into a stop string, and a trailing partial character.
        let mut safe = visible.len();
        if !stopped {
            for stop in &self.stops {
                for (i, _) in stop.char_indices().skip(1) {
                    if let Some(prefix) = stop.get(..i) {
                        if visible.ends_with(prefix) {
                            safe = safe.min(visible.len() - prefix.len());
                        }
                    }
                }
            }
            if let Some(pos) = visible.rfind('\u{FFFD}') {
                if visible.get(pos..).is_some_and(|rest| rest.chars().count() == 1) {
                    safe = safe.min(pos);
                }
            }
        }
        let mut delta = String::new();
        // Decoding may rewrite earlier text (rarely); only text that extends what was shown is
        // emitted.
        if safe > self.emitted && visible.get(..self.emitted) == self.text.get(..self.emitted) {
            delta = visible.get(self.emitted..safe).unwrap_or_default().to_string();
            self.emitted = safe;
        }
        self.text = visible.to_string();
        self.stopped = stopped;
        (delta, stopped)
    }

    /// At the end of decoding: the text held back so far (a partial stop string that never
    /// completed, a last character), trailing whitespace dropped.
    pub fn flush(&mut self) -> String {
        let end = self.text.trim_end().len();
        let rest = if end > self.emitted {
            self.text.get(self.emitted..end).unwrap_or_default().to_string()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(end);
        rest
    }

    /// The final text: cut before the first stop string, surrounding whitespace trimmed.
    pub fn finish(&self) -> String {
        self.text.trim().to_string()
    }
}

/// A decoder with a trained generation run's soft prompt (or none), ready to continue texts.
pub struct Generator<B: FrozenOps> {
    backbone: AnyBackbone<B>,
    tokenizer: TextTokenizer,
    prompt: Option<SoftPrompt<B>>,
    separator: String,
}

impl<B: FrozenOps> Generator<B> {
    /// Loads a `generate` run folder (written by `ptune train`) on the default device.
    pub fn from_run(run: impl AsRef<Path>) -> Result<Self> {
        Self::from_loaded(TrainedRun::<B>::load(run, None, &B::Device::default())?)
    }

    /// A generator of a loaded `generate` run.
    pub fn from_loaded(run: TrainedRun<B>) -> Result<Self> {
        if run.info.task != TaskKind::Generate {
            return Err(TrainError::Config(format!(
                "a {:?} run does not generate (use a generate run, or Generator::from_model)",
                run.info.task
            )));
        }
        let separator = run.info.separator.clone().unwrap_or_default();
        Self::new(run.backbone, run.tokenizer, run.prompt, separator)
    }

    /// A decoder without a prompt: `model` is `smollm2`, an HF folder or a GGUF file.
    pub fn from_model(model: &str) -> Result<Self> {
        let (backbone, tokenizer) = load_backbone::<B>(model, &B::Device::default())?;
        Self::new(backbone, tokenizer, None, String::new())
    }

    fn new(
        backbone: AnyBackbone<B>,
        tokenizer: TextTokenizer,
        prompt: Option<SoftPrompt<B>>,
        separator: String,
    ) -> Result<Self> {
        if backbone.as_decoder().is_none() {
            return Err(TrainError::Config(format!(
                "generation needs a decoder, not a {} encoder",
                backbone.family()
            )));
        }
        Ok(Self { backbone, tokenizer, prompt, separator })
    }

    /// The continuation of `source` (followed by the run's separator), decoded to text.
    pub fn generate(&self, source: &str, options: &GenerateOptions) -> Result<String> {
        self.generate_stream(source, options, &mut |_| {})
    }

    /// [`Generator::generate`], handing each new piece of text to `on_text` as it is decoded
    /// (greedy and sampling stream token by token; beam search hands over its result at the end).
    /// Returns the whole text, as `generate` does.
    pub fn generate_stream(
        &self,
        source: &str,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<String> {
        generate_text(
            &self.backbone,
            &self.tokenizer,
            self.prompt.as_ref(),
            &self.separator,
            source,
            options,
            on_text,
        )
    }
}

/// What [`Generator::generate_stream`] runs, for callers that hold the parts themselves (a server
/// with one backbone and many prompts): `source` followed by `separator`, continued under
/// `prompt` (or none) until the decoder's eos, a stop string or `max_new_tokens`; each new piece
/// of text goes to `on_text`; returns the whole text.
pub fn generate_text<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    tokenizer: &TextTokenizer,
    prompt: Option<&SoftPrompt<B>>,
    separator: &str,
    source: &str,
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<String> {
    let ids = tokenizer.encode_plain(&format!("{source}{separator}"))?;
    let eos = backbone.as_decoder().and_then(|d| d.eos_token_id());
    let config = GenerationConfig {
        max_new_tokens: options.max_new_tokens,
        eos,
        decoding: options.decoding.clone(),
        repetition_penalty: options.repetition_penalty,
    };
    let mut text = StopText::new(&options.stop);
    let mut failure = None;
    generate_streaming(backbone, prompt, &ids, &config, &mut |out| match tokenizer.decode(out) {
        Ok(decoded) => {
            let (delta, stopped) = text.update(&decoded);
            if !delta.is_empty() {
                on_text(&delta);
            }
            if stopped {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
        Err(e) => {
            failure = Some(e);
            Flow::Stop
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let rest = text.flush();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(text.finish())
}

#[cfg(test)]
mod tests {
    use super::StopText;

    /// Feeds growing decodings; returns what was streamed and the final text.
    fn stream(stops: &[&str], decodings: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = StopText::new(&stops);
        let mut pieces = Vec::new();
        let mut stopped = false;
        for d in decodings {
            let (delta, stop) = t.update(d);
            if !delta.is_empty() {
                pieces.push(delta);
            }
            if stop {
                stopped = true;
                break;
            }
        }
        let rest = t.flush();
        if !rest.is_empty() {
            pieces.push(rest);
        }
        (pieces, t.finish(), stopped)
    }

    #[test]
    fn stop_strings_cut_the_text_and_are_never_streamed() {
        let (pieces, text, stopped) = stream(
            &["Usage:", "\n"],
            &[" The", " The Eagle", " The Eagle Us", " The Eagle Usage", " The Eagle Usage:", " x"],
        );
        assert!(stopped);
        assert_eq!(text, "The Eagle");
        assert_eq!(pieces.concat(), "The Eagle ");
        assert!(pieces.iter().all(|p| !p.contains("Us")), "{pieces:?}");
        let (_, text, stopped) = stream(&["\n"], &["A", "A.", "A.\nB"]);
        assert_eq!((text.as_str(), stopped), ("A.", true));
        // A partial stop string at the end is shown once decoding ends without it.
        let (pieces, text, stopped) = stream(&["Usage:"], &["The", "The Us"]);
        assert_eq!((pieces.concat().as_str(), text.as_str(), stopped), ("The Us", "The Us", false));
    }

    #[test]
    fn partial_characters_wait_for_their_last_byte() {
        let (pieces, text, _) = stream(&[], &["caf", "caf\u{FFFD}", "café", "café!"]);
        assert_eq!(pieces, ["caf", "é", "!"]);
        assert_eq!(text, "café!");
        // Without stop strings everything streams.
        let (pieces, _, _) = stream(&[], &["a", "a b", "a b c"]);
        assert_eq!(pieces.concat(), "a b c");
    }
}
