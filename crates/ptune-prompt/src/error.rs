//! The error type of `ptune-prompt`.

use std::path::PathBuf;

/// Errors of method configuration, wiring and adapter I/O.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// From the backbone (shapes, positions, tokenizer).
    #[error(transparent)]
    Transformer(#[from] ptune_transformer::TransformerError),
    /// A method config is inconsistent (with itself or with the backbone).
    #[error("invalid method config: {0}")]
    Config(String),
    /// A prompt template could not be parsed.
    #[error("bad template `{template}`: {message}")]
    Template {
        /// The template.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// An adapter folder is unreadable, incomplete or inconsistent.
    #[error("adapter {path}: {message}")]
    Adapter {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, PromptError>;

pub(crate) fn adapter_err(path: &std::path::Path, message: impl std::fmt::Display) -> PromptError {
    PromptError::Adapter { path: path.to_path_buf(), message: message.to_string() }
}
