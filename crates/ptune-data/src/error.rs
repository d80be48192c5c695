//! The error type of `ptune-data`: every bad input names its file and, where it has one, its line.

use std::path::PathBuf;

/// Data errors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// A row could not be parsed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A label outside the declared label set.
    #[error("{path}:{line}: unknown label `{label}` (known: {known})")]
    UnknownLabel {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The label found.
        label: String,
        /// The labels allowed.
        known: String,
    },
    /// The file has no usable rows.
    #[error("{path}: no examples")]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// A data set name that is not packaged, or a data set that was not fetched.
    #[error("{0}")]
    Dataset(String),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] ptune_transformer::TransformerError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
