//! The error type of `ptune-train`.

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// From the methods (wiring, adapters, checkpoints).
    #[error(transparent)]
    Prompt(#[from] ptune_prompt::PromptError),
    /// From the backbone.
    #[error(transparent)]
    Transformer(#[from] ptune_transformer::TransformerError),
    /// From the data.
    #[error(transparent)]
    Data(#[from] ptune_data::DataError),
    /// The loss became NaN or infinite.
    #[error(
        "loss is {loss} at epoch {epoch}, step {step}: training stopped (lower the learning rate or \
         enable gradient clipping); the last good state is in {state}"
    )]
    NonFinite {
        /// Loss value.
        loss: f64,
        /// Epoch.
        epoch: usize,
        /// Optimizer step.
        step: usize,
        /// Where the last checkpoint is.
        state: String,
    },
    /// A gradient or a dev score became NaN or infinite while the loss stayed finite.
    #[error(
        "{what} is not finite at epoch {epoch}, step {step}: training stopped (lower the learning \
         rate or enable gradient clipping); the last good state is in {state}"
    )]
    NonFiniteValue {
        /// What: the gradient of a named parameter, or the dev metric.
        what: String,
        /// Epoch.
        epoch: usize,
        /// Optimizer step.
        step: usize,
        /// Where the last checkpoint is.
        state: String,
    },
    /// Bad training settings.
    #[error("invalid training config: {0}")]
    Config(String),
    /// Writing run files failed.
    #[error("cannot write {path}: {message}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.display().to_string(), message: e.to_string() }
}
