//! Tasks: sequence classification (single texts and pairs) and causal-LM generation (source → target),
//! tokenized in parallel with rayon.

use rayon::prelude::*;

use ptune_transformer::TextTokenizer;

use crate::error::{DataError, Result};
use crate::formats::Record;

/// Train / dev / test parts of a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits<T> {
    /// Training rows.
    pub train: Vec<T>,
    /// Development rows (model selection, early stopping).
    pub dev: Vec<T>,
    /// Held-out rows.
    pub test: Vec<T>,
}

impl<T> Splits<T> {
    /// Applies `f` to every part.
    pub fn try_map<U>(self, mut f: impl FnMut(Vec<T>) -> Result<Vec<U>>) -> Result<Splits<U>> {
        Ok(Splits { train: f(self.train)?, dev: f(self.dev)?, test: f(self.test)? })
    }
}

/// A tokenized classification example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids with the tokenizer's special tokens, truncated to the maximum length.
    pub ids: Vec<u32>,
    /// Class index into the label set.
    pub label: usize,
}

/// A tokenized classification data set.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationSet {
    /// Label names; `Example::label` indexes them.
    pub labels: Vec<String>,
    /// The examples.
    pub splits: Splits<Example>,
}

/// Truncates `ids` to `max_len`, keeping the final token (e.g. BERT's `[SEP]`) when `keep_last`.
pub fn truncate(mut ids: Vec<u32>, max_len: usize, keep_last: bool) -> Vec<u32> {
    if ids.len() > max_len && max_len > 0 {
        let last = ids.last().copied();
        ids.truncate(max_len);
        if let (true, Some(last), Some(end)) = (keep_last, last, ids.last_mut()) {
            *end = last;
        }
    }
    ids
}

/// Tokenizes labelled records (in parallel) against a fixed label set; an unknown label is an error
/// naming file and line. Pairs are joined by the tokenizer's pair template when it has one, else by a
/// space.
pub fn tokenize_classification(
    records: &[Record],
    labels: &[String],
    tokenizer: &TextTokenizer,
    max_len: usize,
    path: &std::path::Path,
) -> Result<Vec<Example>> {
    records
        .par_iter()
        .map(|r| {
            let label = labels.iter().position(|l| *l == r.label).ok_or_else(|| {
                DataError::UnknownLabel {
                    path: path.to_path_buf(),
                    line: r.line,
                    label: r.label.clone(),
                    known: labels.join(", "),
                }
            })?;
            let ids = match &r.pair {
                None => tokenizer.encode(&r.text)?,
                Some(pair) => tokenizer.encode_pair(&r.text, pair)?,
            };
            Ok(Example { ids: truncate(ids, max_len, true), label })
        })
        .collect()
}

/// A source → target pair for causal-LM generation; `group` ties rows that share a source (E2E's
/// meaning representation), so splits never separate them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationPair {
    /// The prompt text (e.g. a meaning representation).
    pub source: String,
    /// The text to generate.
    pub target: String,
    /// Group id.
    pub group: usize,
}

/// A generation data set.
pub type GenerationSet = Splits<GenerationPair>;

/// Tokenized `source` and `target` ids: the model reads `source` then learns to continue with
/// `target`; the loss covers target tokens only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    /// Source ids.
    pub source: Vec<u32>,
    /// Target ids (ending with EOS when the tokenizer has one).
    pub target: Vec<u32>,
}

/// Tokenizes generation pairs in parallel; the target gets `eos` appended.
pub fn tokenize_generation(
    pairs: &[GenerationPair],
    tokenizer: &TextTokenizer,
    separator: &str,
    eos: Option<u32>,
    max_len: usize,
) -> Result<Vec<LmExample>> {
    pairs
        .par_iter()
        .map(|p| {
            let source = tokenizer.encode_plain(&format!("{}{separator}", p.source))?;
            let mut target = tokenizer.encode_plain(&format!(" {}", p.target))?;
            target.extend(eos);
            let keep = max_len.saturating_sub(source.len()).max(1);
            target.truncate(keep);
            Ok(LmExample { source, target })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_final_special_token() {
        assert_eq!(truncate(vec![101, 1, 2, 3, 102], 4, true), vec![101, 1, 2, 102]);
        assert_eq!(truncate(vec![1, 2, 3], 2, false), vec![1, 2]);
        assert_eq!(truncate(vec![1, 2], 5, true), vec![1, 2]);
    }
}
