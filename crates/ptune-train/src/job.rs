//! One training job as `ptune train` runs it, from Rust: [`TrainJob`] names the model, the data,
//! the task and the method; [`TrainJob::run`] loads the model, tokenizes the data for the task,
//! builds the method through the registry and the task's head, reports the task's baselines,
//! trains, and writes the run folder (`task.json`, `metrics.json`, `adapter/`, `state/`, curves).
//! The per-task behaviour lives here and in the task types, so the CLI only parses and prints.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use ptune_train::job::TrainJob;
//!
//! let mut job = TrainJob::new("minilm", "rt-sentences");
//! job.train.epochs = 1;
//! job.train_limit = Some(400);
//! let outcome = job.run::<Autodiff<Flex>>("runs/quick".as_ref(), false, &mut ptune_train::Silent)?;
//! println!("dev accuracy {:.4}", outcome.report.summary.best_metric("accuracy"));
//! # Ok::<(), ptune_train::TrainError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use ptune_data::formats::Record;
use ptune_data::tagging::{bio_labels, tokenize_tagging, TaggedSentence, TaggingSet};
use ptune_data::tasks::{tokenize_classification, tokenize_generation, GenerationPair, LmExample};
use ptune_data::Columns;
use ptune_data::{ClassificationSet, Splits};
use ptune_prompt::{ClassifierHeadConfig, MethodKind, MethodOptions, SoftPrompt};
use ptune_transformer::{load_model, AnyBackbone, Backbone, FrozenOps, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::classify::{
    linear_probe, majority_baseline, Classifier, Pooling, SequenceClassification,
};
use crate::error::{Result, TrainError};
use crate::finetune::{trainable, DecoderFineTuning, FineTuned, FullFineTuning, FULL_FINETUNE};
use crate::lm::{
    cloze_predict, generate_all, generation_scores, greedy, mean_target_loss, verbalizer, CausalLm,
    Cloze, PromptOptional, ReferenceSet,
};
use crate::run::{
    base_model_id, resolve_model, templated, TaskInfo, TaskKind, CLOZE_TEMPLATE, SEPARATOR,
};
use crate::tagging::{tagging_scores, TokenClassification};
use crate::task::Task;
use crate::trainer::{train_observed, RunOptions, RunReport, RunSummary, TrainConfig};
use crate::{TrainEvent, TrainObserver};

/// A task's tokenized data.
#[derive(Debug)]
pub enum TaskData {
    /// Classify or cloze (cloze ids hold the template).
    Labelled(ClassificationSet),
    /// Tag.
    Tagged(TaggingSet),
    /// Generate: tokenized examples and the text pairs (for references).
    Generation {
        /// Tokenized splits.
        examples: Splits<LmExample>,
        /// The text pairs.
        pairs: Splits<GenerationPair>,
    },
}

/// Loads and tokenizes `info.dataset` for `info.task` (train rows cut to `train_limit`); fills
/// `info.labels` from the data. Generation targets end with `eos`.
pub fn load_data(
    info: &mut TaskInfo,
    tok: &TextTokenizer,
    train_limit: usize,
    eos: Option<u32>,
) -> Result<TaskData> {
    match info.task {
        TaskKind::Classify | TaskKind::Cloze => {
            let text = info.data_spec().classification()?;
            info.labels = text.labels.clone();
            let template = info.cloze_template.clone().filter(|_| info.task == TaskKind::Cloze);
            let tokenize = |records: &[Record]| -> Result<_> {
                let records: Vec<Record> = match &template {
                    Some(t) => records
                        .iter()
                        .map(|r| Record { text: templated(t, &r.text), ..r.clone() })
                        .collect(),
                    None => records.to_vec(),
                };
                Ok(tokenize_classification(
                    &records,
                    &text.labels,
                    tok,
                    info.max_len,
                    &text.source,
                )?)
            };
            let train: Vec<Record> = text.splits.train.iter().take(train_limit).cloned().collect();
            Ok(TaskData::Labelled(ClassificationSet {
                labels: text.labels.clone(),
                splits: Splits {
                    train: tokenize(&train)?,
                    dev: tokenize(&text.splits.dev)?,
                    test: tokenize(&text.splits.test)?,
                },
            }))
        }
        TaskKind::Tag => {
            let tagged = info.data_spec().tagging()?;
            let s = &tagged.splits;
            let labels = bio_labels(s.train.iter().chain(&s.dev).chain(&s.test));
            info.labels = labels.clone();
            let train: Vec<_> = s.train.iter().take(train_limit).cloned().collect();
            let tokenize = |rows: &[TaggedSentence]| -> Result<_> {
                let mut ex = tokenize_tagging(rows, &labels, tok, info.max_len, &tagged.source)?;
                ex.retain(|e| !e.tags.is_empty());
                Ok(ex)
            };
            Ok(TaskData::Tagged(TaggingSet {
                labels: labels.clone(),
                splits: Splits {
                    train: tokenize(&train)?,
                    dev: tokenize(&s.dev)?,
                    test: tokenize(&s.test)?,
                },
            }))
        }
        TaskKind::Generate => {
            let mut pairs = info.data_spec().generation()?;
            pairs.train.truncate(train_limit);
            let sep = info.separator.clone().unwrap_or_else(|| SEPARATOR.into());
            let examples = pairs
                .clone()
                .try_map(|rows| tokenize_generation(&rows, tok, &sep, eos, info.max_len))?;
            Ok(TaskData::Generation { examples, pairs })
        }
    }
}

/// The decoder's stop token, if the model is a decoder that declares one.
pub fn eos_of<B: FrozenOps>(backbone: &dyn Backbone<B>) -> Option<u32> {
    backbone.as_decoder().and_then(|d| d.eos_token_id())
}

/// Everything a training job needs; `ptune train` and its TOML files fill one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    /// `minilm`, `smollm2` (fetched by `cargo xtask fetch`), an HF folder or a GGUF file.
    pub model: String,
    /// A recipe (`rt-sentences`, `uci-sentiment`, `e2e-slots`, `e2e`) or the training file.
    pub dataset: String,
    /// The dev file (with a training file; `None`: cut from the training file).
    #[serde(default)]
    pub dev: Option<PathBuf>,
    /// The test file (with a training file; `None`: cut from the training file).
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Column names of the data files.
    #[serde(default)]
    pub columns: Columns,
    /// The task (`None`: the data set's own, [`TaskKind::pick`]).
    pub task: Option<TaskKind>,
    /// The method; `None` trains the head alone (the linear probe), or the backbone (with the
    /// head, or as a decoder with its LM head) with `full_finetune`.
    pub method: Option<MethodKind>,
    /// Train the backbone's own weights (full fine-tuning, the baseline the methods are measured
    /// against; with `method` `None`): with the head for classify and tag, the decoder and its LM
    /// head for cloze and generate.
    #[serde(default)]
    pub full_finetune: bool,
    /// The method's options (the registry fills what is unset).
    pub method_options: MethodOptions,
    /// Loop settings.
    pub train: TrainConfig,
    /// Pooling of the classification head.
    pub pooling: Pooling,
    /// Longest tokenized input (`None`: 64, or 96 for generation).
    pub max_len: Option<usize>,
    /// Use only the first N training examples.
    pub train_limit: Option<usize>,
    /// Cloze template (`None`: [`CLOZE_TEMPLATE`]).
    pub cloze_template: Option<String>,
    /// Cloze verbalizer, one word per label (`None`: each label with a leading space).
    pub verbalizer: Option<Vec<String>>,
    /// Generation separator (`None`: [`SEPARATOR`]).
    pub separator: Option<String>,
    /// Generation: dev sources decoded for BLEU / ROUGE-L at each evaluation (0: loss only).
    pub eval_sources: usize,
    /// Generation: most new tokens when decoding.
    pub max_new_tokens: usize,
    /// Also measure the task's baselines.
    pub baselines: bool,
}

impl TrainJob {
    /// P-Tuning v2 of `model` on `dataset` with every other setting at its default.
    pub fn new(model: &str, dataset: &str) -> Self {
        Self {
            model: model.into(),
            dataset: dataset.into(),
            dev: None,
            test: None,
            columns: Columns::default(),
            task: None,
            method: Some(MethodKind::PTuningV2),
            full_finetune: false,
            method_options: MethodOptions::default(),
            train: TrainConfig::default(),
            pooling: Pooling::Mean,
            max_len: None,
            train_limit: None,
            cloze_template: None,
            verbalizer: None,
            separator: None,
            eval_sources: 20,
            max_new_tokens: 48,
            baselines: false,
        }
    }

    /// The method's name (`linear-probe` for the head alone, `full-finetune` for the backbone
    /// and the head).
    pub fn method_name(&self) -> String {
        match (self.method, self.full_finetune) {
            (Some(m), _) => m.to_string(),
            (None, true) => FULL_FINETUNE.to_string(),
            (None, false) => LINEAR_PROBE.to_string(),
        }
    }

    /// The task this job trains.
    pub fn task_kind(&self) -> Result<TaskKind> {
        match self.task {
            Some(t) => Ok(t),
            None => TaskKind::pick(None, &self.dataset),
        }
    }

    /// Runs the job on backend `B`, writing the run folder `out` (with `resume`, continuing from
    /// `out/state`). Baseline results and data sizes are reported to `observer` as
    /// [`TrainEvent::Message`]s, besides the loop's own events.
    pub fn run<B: AutodiffBackend + FrozenOps>(
        &self,
        out: &Path,
        resume: bool,
        observer: &mut dyn TrainObserver,
    ) -> Result<JobOutcome> {
        let started = Instant::now();
        let kind = self.task_kind()?;
        let lm_task = matches!(kind, TaskKind::Cloze | TaskKind::Generate);
        if self.full_finetune {
            if let Some(m) = self.method {
                return Err(TrainError::Config(format!(
                    "{FULL_FINETUNE} trains the backbone and a head, not a soft prompt: drop `{m}`"
                )));
            }
            if self.train.gradient_checkpointing {
                return Err(TrainError::Config(format!(
                    "gradient checkpointing reruns frozen layers; it does not apply to \
                     {FULL_FINETUNE}"
                )));
            }
        }
        if lm_task && self.method.is_none() && !self.full_finetune {
            return Err(TrainError::Config(format!(
                "{kind:?} trains a soft prompt with the frozen LM head: pick a method, not \
                 {LINEAR_PROBE} (or {FULL_FINETUNE}, the decoder's own weights)"
            )));
        }
        let device = B::Device::default();
        let model_path = resolve_model(&self.model)?;
        let loaded = load_model::<B>(&model_path, &device)?;
        let tok = loaded.tokenizer.clone().ok_or_else(|| {
            TrainError::Config(format!("model `{}` has no tokenizer", self.model))
        })?;
        let backbone = loaded.backbone;
        if lm_task {
            crate::task::decoder(&backbone, &format!("the {kind:?} task"))?;
        }
        let mut info = TaskInfo {
            task: kind,
            model: self.model.clone(),
            dataset: self.dataset.clone(),
            dev: self.dev.clone(),
            test: self.test.clone(),
            columns: self.columns.clone(),
            labels: Vec::new(),
            pooling: (kind == TaskKind::Classify).then_some(self.pooling),
            cloze_template: (kind == TaskKind::Cloze)
                .then(|| self.cloze_template.clone().unwrap_or_else(|| CLOZE_TEMPLATE.into())),
            verbalizer: None,
            separator: (kind == TaskKind::Generate)
                .then(|| self.separator.clone().unwrap_or_else(|| SEPARATOR.into())),
            max_len: self.max_len.unwrap_or(if kind == TaskKind::Generate { 96 } else { 64 }),
        };
        let limit = self.train_limit.unwrap_or(usize::MAX);
        let data = load_data(&mut info, &tok, limit, eos_of(&backbone))?;
        if kind == TaskKind::Cloze {
            info.verbalizer = Some(
                self.verbalizer
                    .clone()
                    .unwrap_or_else(|| info.labels.iter().map(|l| format!(" {l}")).collect()),
            );
        }
        info.save(out)?;
        // The lower-layer cache keeps frozen layers' outputs: never for a trained backbone.
        let cfg = &TrainConfig {
            lower_layer_cache: self.train.lower_layer_cache && !self.full_finetune,
            ..self.train.clone()
        };
        B::seed(&device, cfg.seed);
        let prompt = match self.method {
            Some(m) => Some(m.build(&self.method_options, &backbone, Some(&tok))?),
            None => None,
        };
        // The adapter folder carries the task too (labels, pooling, longest input, template), so
        // it can be copied on its own and still predict as the run does; PEFT ignores the file.
        let options = RunOptions {
            out: out.to_path_buf(),
            resume,
            base_model: base_model_id(&self.model),
            adapter_task: Some(info.to_json()?),
        };
        let mut baselines: Vec<(String, BTreeMap<String, f64>)> = Vec::new();
        let dataset = &self.dataset;
        let head_width = backbone.dims().hidden_size;
        let summary = match data {
            TaskData::Labelled(data) if kind == TaskKind::Classify => {
                note(
                    observer,
                    format!(
                        "{dataset}: {} train / {} dev / {} test, labels {:?}",
                        data.splits.train.len(),
                        data.splits.dev.len(),
                        data.splits.test.len(),
                        data.labels
                    ),
                );
                if self.baselines {
                    let majority = majority_baseline(&data);
                    note(observer, format!("baseline majority class: dev accuracy {majority:.4}"));
                    baselines.push(("majority class".into(), metrics(&[("accuracy", majority)])));
                    note(observer, "baseline linear probe: training the head alone …".into());
                    let t = Instant::now();
                    let (probe, f1) = linear_probe(&backbone, &data, cfg, self.pooling)?;
                    note(
                        observer,
                        format!(
                            "baseline linear probe: dev accuracy {probe:.4} ({:.0} s)",
                            t.elapsed().as_secs_f64()
                        ),
                    );
                    baselines.push((
                        "linear probe (frozen backbone, head only)".into(),
                        metrics(&[("accuracy", probe), ("macro_f1", f1)]),
                    ));
                }
                let head = ClassifierHeadConfig::new(head_width, data.labels.len()).init(&device);
                let task = SequenceClassification { data: &data, pooling: self.pooling };
                let model = Classifier { prompt, head };
                let summary = if self.full_finetune {
                    let model = FineTuned::new(backbone.clone(), model)?;
                    let task = FullFineTuning { task };
                    train_observed(&backbone, &task, model, cfg, &options, observer)?.1
                } else {
                    train_observed(&backbone, &task, model, cfg, &options, observer)?.1
                };
                if self.pooling != Pooling::Pooler && !self.full_finetune {
                    note(observer, pooling_warning(self.pooling, &out.join("adapter")));
                }
                summary
            }
            TaskData::Labelled(data) => {
                let words = info.verbalizer.clone().unwrap_or_default();
                let verbalizer = verbalizer(&tok, &words)?;
                if self.baselines {
                    let dev = &data.splits.dev;
                    let pred = cloze_predict(&backbone, None, dev, &verbalizer, cfg.batch_size)?;
                    let gold: Vec<usize> = dev.iter().map(|e| e.label).collect();
                    let acc = crate::metrics::accuracy(&pred, &gold);
                    note(observer, format!("baseline zero-shot cloze: dev accuracy {acc:.4}"));
                    baselines.push((
                        "zero-shot cloze (no prompt)".into(),
                        metrics(&[("accuracy", acc)]),
                    ));
                }
                let task = Cloze { data: &data, verbalizer };
                train_lm(
                    &backbone,
                    task,
                    prompt,
                    self.full_finetune,
                    "cloze",
                    cfg,
                    &options,
                    observer,
                )?
            }
            TaskData::Tagged(data) => {
                note(
                    observer,
                    format!(
                        "{dataset}: {} train / {} dev sentences, {} tags",
                        data.splits.train.len(),
                        data.splits.dev.len(),
                        data.labels.len()
                    ),
                );
                if self.baselines {
                    let dev = &data.splits.dev;
                    let all_o: Vec<Vec<usize>> =
                        dev.iter().map(|e| vec![0; e.tags.len()]).collect();
                    let (f1, acc) = tagging_scores(&all_o, dev, &data.labels);
                    baselines.push((
                        "every word `O`".into(),
                        metrics(&[("entity_f1", f1), ("word_accuracy", acc)]),
                    ));
                }
                let head = ClassifierHeadConfig::new(head_width, data.labels.len()).init(&device);
                let task = TokenClassification { data: &data };
                let model = Classifier { prompt, head };
                if self.full_finetune {
                    let model = FineTuned::new(backbone.clone(), model)?;
                    let task = FullFineTuning { task };
                    train_observed(&backbone, &task, model, cfg, &options, observer)?.1
                } else {
                    train_observed(&backbone, &task, model, cfg, &options, observer)?.1
                }
            }
            TaskData::Generation { examples, pairs } => {
                let sep = info.separator.clone().unwrap_or_default();
                let refs = ReferenceSet::new(&pairs.dev, &tok, &sep, self.eval_sources)?;
                let gen = greedy(self.max_new_tokens, eos_of(&backbone));
                note(
                    observer,
                    format!(
                        "{dataset}: {} train / {} dev pairs ({} dev sources decoded per evaluation)",
                        examples.train.len(),
                        examples.dev.len(),
                        refs.items.len()
                    ),
                );
                if self.baselines {
                    let loss = mean_target_loss(&backbone, None, &examples.dev, cfg.batch_size)?;
                    let mut row = vec![("loss", loss)];
                    if !refs.items.is_empty() {
                        let hyps = generate_all(&backbone, None, &tok, &refs, &gen)?;
                        let (bleu, rouge) = generation_scores(&hyps, &refs);
                        row.extend([("bleu", bleu), ("rouge_l", rouge)]);
                    }
                    baselines.push(("the model without a prompt".into(), metrics(&row)));
                }
                let task = CausalLm {
                    train: &examples.train,
                    dev: &examples.dev,
                    references: (!refs.items.is_empty()).then_some((&refs, &tok, gen)),
                };
                train_lm(
                    &backbone,
                    task,
                    prompt,
                    self.full_finetune,
                    "generation",
                    cfg,
                    &options,
                    observer,
                )?
            }
        };
        let report = RunReport {
            method: Some(self.method_name()),
            dataset: Some(self.dataset.clone()),
            settings: serde_json::to_value(self).map_err(|e| TrainError::Config(e.to_string()))?,
            summary,
            baselines: baselines.iter().cloned().collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        report.write(out)?;
        // Again at the end: a run killed between an adapter save and its task.json, then
        // resumed without a better epoch, still ends with the file.
        let adapter = out.join("adapter");
        if adapter.join("adapter_config.json").is_file() {
            info.save(&adapter)?;
        }
        Ok(JobOutcome { report, baselines, info })
    }
}

/// The method name that trains only the head (no soft prompt).
pub const LINEAR_PROBE: &str = "linear-probe";

/// Trains a language-model task (cloze, generation): the soft `prompt`, or with `full_finetune`
/// the decoder's own weights through [`DecoderFineTuning`].
#[allow(clippy::too_many_arguments)]
fn train_lm<B, T>(
    backbone: &AnyBackbone<B>,
    task: T,
    prompt: Option<SoftPrompt<B>>,
    full_finetune: bool,
    what: &str,
    cfg: &TrainConfig,
    options: &RunOptions,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary>
where
    B: AutodiffBackend + FrozenOps,
    T: Task<B, Model = SoftPrompt<B>> + PromptOptional<B>,
{
    if full_finetune {
        let (task, decoder) = (DecoderFineTuning { task }, trainable(backbone.clone()));
        Ok(train_observed(backbone, &task, decoder, cfg, options, observer)?.1)
    } else {
        let prompt = needs_prompt(prompt, what)?;
        Ok(train_observed(backbone, &task, prompt, cfg, options, observer)?.1)
    }
}

fn needs_prompt<B: FrozenOps>(prompt: Option<SoftPrompt<B>>, task: &str) -> Result<SoftPrompt<B>> {
    prompt.ok_or_else(|| {
        TrainError::Config(format!(
            "{task} trains a soft prompt: pick a method, not {LINEAR_PROBE}"
        ))
    })
}

/// What a PEFT user must know about a classifier adapter whose head reads another pooling than
/// PEFT's `…ForSequenceClassification` (which applies it to HF's pooler output).
pub fn pooling_warning(pooling: Pooling, adapter: &Path) -> String {
    format!(
        "note: {} holds a head trained on {pooling:?} pooling; PEFT's sequence-classification \
         models apply their head to the pooler output, so in PEFT the head would read other \
         features. Use it through ptune (`ptune predict`, `TextClassifier`), or train with \
         `--pooling pooler` for an adapter PEFT reads as trained",
        adapter.display()
    )
}

fn note(observer: &mut dyn TrainObserver, text: String) {
    observer.on(TrainEvent::Message(&text));
}

fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    crate::trainer::metrics_map(pairs)
}

/// What [`TrainJob::run`] did.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// `metrics.json` as written.
    pub report: RunReport,
    /// The baselines, in the order they ran.
    pub baselines: Vec<(String, BTreeMap<String, f64>)>,
    /// `task.json` as written.
    pub info: TaskInfo,
}

/// A run folder path for `model` and `method` under `runs/` (the CLI's default `--out`).
pub fn default_out(model: &str, method: &str) -> PathBuf {
    let name = Path::new(model).file_name().map_or(model.into(), |n| n.to_string_lossy());
    PathBuf::from("runs").join(format!("{name}-{method}"))
}
