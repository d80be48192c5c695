//! # ptune-train
//!
//! Training soft prompts on a frozen backbone over `B: AutodiffBackend + FrozenOps`: the classification loop
//! (AdamW, warmup + linear/cosine decay, gradient clipping and accumulation, evaluation every epoch,
//! early stopping, best-adapter checkpoint, resume after a kill, seeds, a NaN/inf guard), the linear
//! probe and majority baselines, metrics, a metrics JSONL and an SVG training curve per run.

pub mod classify;
pub mod error;
pub mod finetune;
pub mod generate;
pub mod inference;
pub mod job;
pub mod lm;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod tagging;
pub mod task;
pub mod trainer;

pub use classify::{Classifier, Pooling, SequenceClassification};
pub use error::{Result, TrainError};
pub use finetune::{FineTuned, FullFineTuning};
pub use inference::{
    GenerateOptions, Generator, Prediction, StopText, Tagger, TextClassifier, TrainedRun,
};
pub use job::{JobOutcome, TrainJob};
pub use run::{TaskInfo, TaskKind};
pub use task::{Evaluation, Task};
pub use trainer::{
    train, train_observed, EpochRecord, RunOptions, RunReport, RunSummary, Silent, TrainConfig,
    TrainEvent, TrainObserver,
};
