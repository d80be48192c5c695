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

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;
use ptune_prompt::adapter::load_adapter;
use ptune_prompt::{ClassifierHead, SoftPrompt};
use ptune_transformer::{load_model, AnyBackbone, Backbone, FrozenOps, TextTokenizer};

use crate::classify::{pooled, Pooling};
use crate::error::{Result, TrainError};
use crate::generate::{generate, Decoding, GenerationConfig};
use crate::lm::{cloze_logits, verbalizer};
use crate::run::{resolve_model, templated, TaskInfo, TaskKind};

/// Rows per forward pass when predicting.
const BATCH: usize = 32;

/// A run's model, tokenizer and trained parts.
struct Loaded<B: FrozenOps> {
    backbone: AnyBackbone<B>,
    tokenizer: TextTokenizer,
    info: TaskInfo,
    prompt: Option<SoftPrompt<B>>,
    head: Option<ClassifierHead<B>>,
}

fn load_run<B: FrozenOps>(run: &Path, device: &B::Device) -> Result<Loaded<B>> {
    let (info, dir) = TaskInfo::load(run)?;
    let (backbone, tokenizer) = load_backbone::<B>(&info.model, device)?;
    let adapter = dir.join("adapter");
    let (prompt, head) = if adapter.join("adapter_config.json").is_file() {
        let a = load_adapter::<B>(&adapter, &backbone.dims(), device)?;
        (Some(a.prompt), a.head)
    } else {
        (None, None)
    };
    Ok(Loaded { backbone, tokenizer, info, prompt, head })
}

fn load_backbone<B: FrozenOps>(
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

/// A trained sequence-classification or cloze run, ready to label texts.
pub struct TextClassifier<B: FrozenOps> {
    run: Loaded<B>,
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
        let mut run = load_run::<B>(run.as_ref(), device)?;
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
                    Ok(ptune_data::tasks::truncate(ids, info.max_len, true))
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
                let index =
                    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                out.push(Prediction {
                    label: info.labels[index].clone(),
                    index,
                    scores: row.to_vec(),
                });
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

/// Settings of [`Generator::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens (default 48).
    pub max_new_tokens: usize,
    /// Greedy (default), sampling or beam search.
    pub decoding: Decoding,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 48, decoding: Decoding::Greedy }
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
        let device = B::Device::default();
        let run = load_run::<B>(run.as_ref(), &device)?;
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
        let ids = self.tokenizer.encode_plain(&format!("{source}{}", self.separator))?;
        let eos = self.backbone.as_decoder().and_then(|d| d.eos_token_id());
        let config = GenerationConfig {
            max_new_tokens: options.max_new_tokens,
            eos,
            decoding: options.decoding.clone(),
        };
        let out = generate(&self.backbone, self.prompt.as_ref(), &ids, &config)?;
        Ok(self.tokenizer.decode(&out)?.trim().to_string())
    }
}
