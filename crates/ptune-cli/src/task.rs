//! Loading a data set for a task (the run folder's `task.json` is `ptune_train::run::TaskInfo`).

use anyhow::Result;
use ptune_data::formats::{ColumnMap, Record};
use ptune_data::tagging::{bio_labels, tokenize_tagging, TaggingSet};
use ptune_data::tasks::{tokenize_classification, tokenize_generation, GenerationPair, LmExample};
use ptune_data::{ClassificationSet, Splits};
pub use ptune_train::run::{templated, TaskInfo, TaskKind, CLOZE_TEMPLATE, SEPARATOR};
use ptune_transformer::TextTokenizer;

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
            let text = ptune_data::recipes::classification(&info.dataset, &ColumnMap::default())?;
            info.labels = text.labels.clone();
            let template = info.cloze_template.clone();
            let source = text.source.clone();
            let tokenize = |records: &[Record]| -> Result<_> {
                let records: Vec<Record> = match &template {
                    Some(t) if info.task == TaskKind::Cloze => records
                        .iter()
                        .map(|r| Record { text: templated(t, &r.text), ..r.clone() })
                        .collect(),
                    _ => records.to_vec(),
                };
                Ok(tokenize_classification(&records, &text.labels, tok, info.max_len, &source)?)
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
            let tagged = ptune_data::tagging::tagging(&info.dataset)?;
            let s = &tagged.splits;
            let labels = bio_labels(s.train.iter().chain(&s.dev).chain(&s.test));
            info.labels = labels.clone();
            let train: Vec<_> = s.train.iter().take(train_limit).cloned().collect();
            let tokenize = |rows: &[ptune_data::tagging::TaggedSentence]| -> Result<_> {
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
            let mut pairs = ptune_data::recipes::generation(&info.dataset)?;
            pairs.train.truncate(train_limit);
            let sep = info.separator.clone().unwrap_or_else(|| SEPARATOR.into());
            let examples = pairs
                .clone()
                .try_map(|rows| tokenize_generation(&rows, tok, &sep, eos, info.max_len))?;
            Ok(TaskData::Generation { examples, pairs })
        }
    }
}
