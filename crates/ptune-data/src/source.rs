//! Where a task's rows come from: a packaged data set by name, or the user's own files — a
//! training file with optional dev and test files — with the columns named as the files name them.
//!
//! The split recipe (seed 13) runs only for what no file gives: with a training file alone it is
//! cut 80/10/10; with `dev` given, 90/10 into train/test; with `test` given, 90/10 into train/dev;
//! with both, nothing is cut. Generation files are cut by source (all targets of one source land in
//! one split), as the packaged E2E is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::formats::{read_table, ColumnMap, Record};
use crate::recipes::{self, TextSplits, SPLIT_SEED};
use crate::split::{split_groups, split_indices};
use crate::tagging::{self, read_tagged_jsonl, TaggedSentence, TaggedSplits};
use crate::tasks::{GenerationPair, GenerationSet, Splits};

/// Column names of user files (JSON keys or CSV/TSV header names); `None` is the default name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Columns {
    /// Text to classify (default `text`).
    pub text: Option<String>,
    /// Second text of a sentence pair (default: none, single sentences).
    pub text_pair: Option<String>,
    /// Class label (default `label`; text, integer or bool).
    pub label: Option<String>,
    /// Words of a tagged sentence, a JSON list (default `tokens`).
    pub tokens: Option<String>,
    /// BIO tags, a JSON list as long as the words (default `tags`).
    pub tags: Option<String>,
    /// Generation source (default `source`).
    pub source: Option<String>,
    /// Generation target (default `target`).
    pub target: Option<String>,
}

impl Columns {
    fn name<'a>(given: &'a Option<String>, default: &'a str) -> &'a str {
        given.as_deref().unwrap_or(default)
    }

    /// The columns of a classification file.
    pub fn classification(&self) -> ColumnMap {
        ColumnMap {
            text: Self::name(&self.text, "text").into(),
            pair: self.text_pair.clone(),
            label: Self::name(&self.label, "label").into(),
            label_is_text: false,
        }
    }

    /// The columns of a generation file (both free text).
    pub fn generation(&self) -> ColumnMap {
        ColumnMap {
            text: Self::name(&self.source, "source").into(),
            pair: None,
            label: Self::name(&self.target, "target").into(),
            label_is_text: true,
        }
    }

    /// The (words, tags) keys of a tagging file.
    pub fn tagging(&self) -> (&str, &str) {
        (Self::name(&self.tokens, "tokens"), Self::name(&self.tags, "tags"))
    }
}

/// A task's data: a packaged data set or a training file, optional dev / test files, column names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A packaged data set (`rt-sentences`, `uci-sentiment`, `e2e`, `e2e-slots`) or the training
    /// file (`.jsonl`, `.csv`, `.tsv`; tagging: `.jsonl`).
    pub dataset: String,
    /// The dev file (only with a training file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<PathBuf>,
    /// The test file (only with a training file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// Column names of the files.
    #[serde(default, skip_serializing_if = "is_default")]
    pub columns: Columns,
}

fn is_default(c: &Columns) -> bool {
    *c == Columns::default()
}

/// The packaged data sets, by task family.
pub const PACKAGED: &[&str] = &["rt-sentences", "uci-sentiment", "e2e", "e2e-slots"];

/// Dev and test fractions the recipe cuts from the training file: none for a split a file gives.
fn fractions(dev: bool, test: bool) -> (f64, f64) {
    (if dev { 0.0 } else { 0.1 }, if test { 0.0 } else { 0.1 })
}

fn pick<T: Clone>(rows: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().filter_map(|&i| rows.get(i).cloned()).collect()
}

/// Cuts `rows` into train / dev / test, leaving out the splits given as files.
fn carve<T: Clone>(rows: Vec<T>, dev: Option<Vec<T>>, test: Option<Vec<T>>) -> Splits<T> {
    let (f_dev, f_test) = fractions(dev.is_some(), test.is_some());
    let (train, d, t) = split_indices(rows.len(), f_dev, f_test, SPLIT_SEED);
    Splits {
        train: pick(&rows, &train),
        dev: dev.unwrap_or_else(|| pick(&rows, &d)),
        test: test.unwrap_or_else(|| pick(&rows, &t)),
    }
}

impl DataSpec {
    /// A packaged data set or a single training file, default columns.
    pub fn named(dataset: &str) -> Self {
        Self { dataset: dataset.into(), dev: None, test: None, columns: Columns::default() }
    }

    fn packaged(&self) -> Result<bool> {
        let packaged = PACKAGED.contains(&self.dataset.as_str());
        if packaged && (self.dev.is_some() || self.test.is_some()) {
            return Err(DataError::Dataset(format!(
                "`{}` is a packaged data set with its own splits: dev and test files go with a \
                 training file",
                self.dataset
            )));
        }
        if !packaged && !Path::new(&self.dataset).exists() {
            return Err(DataError::Dataset(format!(
                "`{}` is neither a packaged data set ({}) nor a file",
                self.dataset,
                PACKAGED.join(", ")
            )));
        }
        Ok(packaged)
    }

    fn train_path(&self) -> &Path {
        Path::new(&self.dataset)
    }

    /// Labelled texts (sequence classification, cloze). The labels are the sorted labels of the
    /// training file; a dev or test label outside them is an error naming file and line.
    pub fn classification(&self) -> Result<TextSplits> {
        if self.packaged()? {
            return recipes::classification(&self.dataset, &self.columns.classification());
        }
        let map = self.columns.classification();
        let train = read_table(self.train_path(), &map)?;
        let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect();
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(DataError::Dataset(format!(
                "{}: needs at least two labels, found {labels:?}",
                self.dataset
            )));
        }
        let read = |path: &Option<PathBuf>| -> Result<Option<Vec<Record>>> {
            let Some(path) = path else { return Ok(None) };
            let rows = read_table(path, &map)?;
            if let Some(r) = rows.iter().find(|r| !labels.contains(&r.label)) {
                return Err(DataError::UnknownLabel {
                    path: path.clone(),
                    line: r.line,
                    label: r.label.clone(),
                    known: labels.join(", "),
                });
            }
            Ok(Some(rows))
        };
        let (dev, test) = (read(&self.dev)?, read(&self.test)?);
        Ok(TextSplits {
            labels: labels.clone(),
            splits: carve(train, dev, test),
            source: self.train_path().to_path_buf(),
        })
    }

    /// Source → target pairs. Pairs of one source share a group id across all files; the training
    /// file is cut by group.
    pub fn generation(&self) -> Result<GenerationSet> {
        if self.packaged()? {
            return recipes::generation(&self.dataset);
        }
        let map = self.columns.generation();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut pairs_of = |path: &Path| -> Result<Vec<GenerationPair>> {
            Ok(read_table(path, &map)?
                .into_iter()
                .map(|r| {
                    let next = index.len();
                    let group = *index.entry(r.text.clone()).or_insert(next);
                    GenerationPair { source: r.text, target: r.label, group }
                })
                .collect())
        };
        let train = pairs_of(self.train_path())?;
        // The training file's sources are groups 0..n (numbered first).
        let n_train_groups = train.iter().map(|p| p.group + 1).max().unwrap_or(0);
        let dev = self.dev.as_deref().map(&mut pairs_of).transpose()?;
        let test = self.test.as_deref().map(&mut pairs_of).transpose()?;
        let (f_dev, f_test) = fractions(dev.is_some(), test.is_some());
        let which = split_groups(n_train_groups, f_dev, f_test, SPLIT_SEED);
        let part = |k: u8| -> Vec<GenerationPair> {
            train.iter().filter(|p| which.get(p.group) == Some(&k)).cloned().collect()
        };
        Ok(Splits {
            train: part(0),
            dev: dev.unwrap_or_else(|| part(1)),
            test: test.unwrap_or_else(|| part(2)),
        })
    }

    /// BIO-tagged sentences (JSONL with a words list and a tags list per row).
    pub fn tagging(&self) -> Result<TaggedSplits> {
        if self.packaged()? {
            return tagging::tagging(&self.dataset);
        }
        let (words, tags) = self.columns.tagging();
        let read =
            |path: &Path| -> Result<Vec<TaggedSentence>> { read_tagged_jsonl(path, words, tags) };
        let train = read(self.train_path())?;
        let dev = self.dev.as_deref().map(read).transpose()?;
        let test = self.test.as_deref().map(read).transpose()?;
        Ok(TaggedSplits {
            splits: carve(train, dev, test),
            source: self.train_path().to_path_buf(),
        })
    }
}
