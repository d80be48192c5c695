//! The one error type of `ptune-transformer`. Every failure on user input (files, configs, shapes,
//! sequence lengths) is a variant here; nothing in this crate panics on user data.

use std::path::PathBuf;

/// Errors raised while loading, configuring or running a backbone.
#[derive(Debug, thiserror::Error)]
pub enum TransformerError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` (or GGUF metadata) is malformed or inconsistent.
    #[error("invalid model config {origin}: {message}")]
    Config {
        /// Where the config came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A model name is neither an existing path nor a Hub id in the local HF cache.
    #[error("model `{name}` not found: {looked}")]
    ModelNotFound {
        /// The name as given.
        name: String,
        /// Every place looked in, and why each failed.
        looked: String,
    },
    /// Downloading a Hub model failed (feature `hub-download`).
    #[error("cannot download `{name}` ({file}): {reason}")]
    Download {
        /// The Hub id as given.
        name: String,
        /// The file being fetched (empty before the first one).
        file: String,
        /// Why.
        reason: String,
    },
    /// The config names an architecture this crate does not implement.
    #[error(
        "unknown architecture `{0}` (supported: {supported})",
        supported = crate::config::supported_model_types()
    )]
    UnknownArchitecture(String),
    /// A weight file is truncated, corrupt or not in the expected format.
    #[error("corrupt weight file {path}: {message}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the architecture needs is not in the weight file.
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor {
        /// The HF tensor name looked for.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A weight holds NaN or an infinity (a corrupt or badly converted file).
    #[error("tensor `{name}` holds {value} at flat index {index}: the weight file is corrupt")]
    NonFiniteWeight {
        /// The tensor.
        name: String,
        /// Flat index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A tensor has another shape than the config implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype this crate cannot read.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The tensor.
        name: String,
        /// The dtype, as the file names it.
        dtype: String,
    },
    /// Prefix slots plus tokens do not fit in the model's position table.
    #[error(
        "sequence too long: {prefix} prefix positions + {tokens} tokens = {} > {max} positions of the model",
        prefix + tokens
    )]
    TooManyPositions {
        /// Positions taken before the tokens (shifted prefix slots and cached tokens).
        prefix: usize,
        /// Tokens in this call.
        tokens: usize,
        /// `max_position_embeddings` of the model.
        max: usize,
    },
    /// A tensor passed to a forward call has the wrong shape.
    #[error("bad input: {0}")]
    Input(String),
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TransformerError>;
