//! The HTTP API (axum): JSON in, JSON out, every error a JSON body with a 4xx/5xx status.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::engine::{Listing, Work};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine's queue.
    pub queue: SyncSender<Work>,
    /// Its capacity (for the 429 message).
    pub capacity: usize,
    /// The adapters loaded.
    pub listing: Arc<RwLock<Listing>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Largest body.
    pub body_limit: usize,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/adapters", get(adapters))
        .route("/v1/adapters/reload", post(reload))
        .route("/v1/classify", post(classify))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn adapters(State(state): State<AppState>) -> Response {
    let listing = state.listing.read().map(|l| l.clone()).unwrap_or_default();
    Json(listing).into_response()
}

async fn reload(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let (reply, answer) = oneshot::channel();
    let result = match submit(&state, Work::Reload { reply }) {
        Ok(()) => answer.await.unwrap_or(Err(ApiError::ShuttingDown)),
        Err(e) => Err(e),
    };
    respond(&state, "reload", started, result.map(|l| Json(l).into_response()))
}

/// `POST /v1/classify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// The adapter's name.
    pub adapter: String,
    /// The texts.
    pub inputs: Vec<String>,
}

/// One text's answer.
#[derive(Debug, Serialize)]
pub struct Classified {
    /// The most likely label.
    pub label: String,
    /// Its index in the adapter's labels.
    pub index: usize,
    /// Every label's probability, in the adapter's label order.
    pub scores: Vec<f32>,
}

/// The answer to `POST /v1/classify`.
#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    /// The adapter used.
    pub adapter: String,
    /// Its labels, the order of every `scores`.
    pub labels: Vec<String>,
    /// One per input, in order.
    pub results: Vec<Classified>,
}

async fn classify(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = classify_inner(&state, body).await;
    respond(&state, "classify", started, result.map(|r| Json(r).into_response()))
}

async fn classify_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<ClassifyResponse, ApiError> {
    let request: ClassifyRequest = parse(state, body)?;
    if request.inputs.is_empty() {
        return Err(ApiError::BadInput("`inputs` is empty".into()));
    }
    if request.inputs.len() > state.max_inputs {
        return Err(ApiError::BadInput(format!(
            "{} inputs; at most {} per request",
            request.inputs.len(),
            state.max_inputs
        )));
    }
    let (reply, answer) = oneshot::channel();
    let adapter = request.adapter.clone();
    submit(
        state,
        Work::Classify {
            adapter: request.adapter,
            texts: request.inputs,
            queued: Instant::now(),
            reply,
        },
    )?;
    let predictions = answer.await.map_err(|_| ApiError::ShuttingDown)??;
    let labels = state
        .listing
        .read()
        .ok()
        .and_then(|l| l.adapters.iter().find(|a| a.name == adapter).map(|a| a.labels.clone()))
        .unwrap_or_default();
    Ok(ClassifyResponse {
        adapter,
        labels,
        results: predictions
            .into_iter()
            .map(|p| Classified { label: p.label, index: p.index, scores: p.scores })
            .collect(),
    })
}

/// Reads a JSON body, or says what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit: state.body_limit }
        } else {
            ApiError::Malformed(r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(e.to_string()))
}

/// Queues work without waiting: a full queue is a 429, a stopped engine a 503.
fn submit(state: &AppState, work: Work) -> Result<(), ApiError> {
    state.queue.try_send(work).map_err(|e| match e {
        TrySendError::Full(_) => ApiError::Busy(state.capacity),
        TrySendError::Disconnected(_) => ApiError::ShuttingDown,
    })
}

fn respond(
    state: &AppState,
    endpoint: &str,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let response = result.unwrap_or_else(IntoResponse::into_response);
    state.metrics.request(endpoint, response.status().as_u16(), started.elapsed());
    response
}
