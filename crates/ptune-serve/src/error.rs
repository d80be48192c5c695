//! What a request can get wrong, and the HTTP status and JSON body each gives.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ptune_train::TaskKind;

/// A failed request: a 4xx for what the client can fix, 503 while shutting down, 500 otherwise.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON the endpoint reads.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is over the size limit.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// No adapter of that name.
    #[error("unknown adapter `{name}` (loaded: {known:?})")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The adapters loaded.
        known: Vec<String>,
    },
    /// The adapter was trained for another task than the endpoint's.
    #[error("adapter `{adapter}` was trained for the {task:?} task; /v1/{endpoint} needs another")]
    WrongTask {
        /// The adapter.
        adapter: String,
        /// Its task.
        task: TaskKind,
        /// The endpoint.
        endpoint: &'static str,
    },
    /// A text is longer than the adapter reads (and the request did not ask to cut it).
    #[error(
        "inputs[{input}] has {tokens} tokens; adapter `{adapter}` reads at most {max} \
         (send \"truncate\": true to cut longer texts as `ptune predict` does)"
    )]
    TooLong {
        /// Which input.
        input: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The adapter.
        adapter: String,
        /// Its longest input.
        max: usize,
    },
    /// A generation would run past the model's position table.
    #[error(
        "the prompt has {tokens} tokens, the adapter {virtual_tokens} virtual tokens and \
         max_tokens is {max_tokens}: more than the model's {max} positions"
    )]
    TooLongPrompt {
        /// Prompt tokens.
        tokens: usize,
        /// The adapter's virtual tokens.
        virtual_tokens: usize,
        /// New tokens asked for.
        max_tokens: usize,
        /// The model's positions.
        max: usize,
    },
    /// Generation asked of an encoder.
    #[error("this server's model is a {0} encoder: it does not generate")]
    NotADecoder(String),
    /// Valid JSON, invalid content (empty input list, a text without tokens, too many inputs).
    #[error("{0}")]
    BadInput(String),
    /// The queue is full.
    #[error("the server is busy ({0} requests queued): retry later")]
    Busy(usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A fault of the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_)
            | ApiError::BadInput(_)
            | ApiError::TooLong { .. }
            | ApiError::TooLongPrompt { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotADecoder(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnknownAdapter { .. } => StatusCode::NOT_FOUND,
            ApiError::WrongTask { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::UnknownAdapter { .. } => "unknown_adapter",
            ApiError::WrongTask { .. } => "wrong_task",
            ApiError::BadInput(_) => "bad_input",
            ApiError::TooLong { .. } | ApiError::TooLongPrompt { .. } => "too_long",
            ApiError::NotADecoder(_) => "not_a_decoder",
            ApiError::Busy(_) => "busy",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"kind": self.kind(), "message": self.to_string()}});
        (self.status(), Json(body)).into_response()
    }
}
