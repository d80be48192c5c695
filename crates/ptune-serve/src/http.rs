//! The HTTP API (axum): JSON in, JSON out, every error a JSON body with a 4xx/5xx status.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::decode::{GenEvent, GenerateWork, Generated};
use crate::engine::{EncodeWork, Listing, Work};
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
        .route("/v1/tag", post(tag))
        .route("/v1/generate", post(generate))
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
        Ok(()) => answer.await.unwrap_or_else(|_| Err(dropped())),
        Err(e) => Err(e),
    };
    respond(&state, "reload", started, result.map(|l| Json(l).into_response()))
}

/// `POST /v1/classify` and `POST /v1/tag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextsRequest {
    /// The adapter's name.
    pub adapter: String,
    /// The texts.
    pub inputs: Vec<String>,
    /// Cut a text longer than the adapter reads (as `ptune predict` does) instead of refusing it.
    #[serde(default)]
    pub truncate: bool,
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

/// The answer to `POST /v1/tag`.
#[derive(Debug, Serialize)]
pub struct TagResponse {
    /// The adapter used.
    pub adapter: String,
    /// Per input, in order: its words (punctuation split off) with their tags.
    pub results: Vec<Vec<ptune_train::inference::TaggedWord>>,
}

async fn classify(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = classify_inner(&state, body).await;
    respond(&state, "classify", started, result.map(|r| Json(r).into_response()))
}

/// Reads a classify/tag body and checks its size.
fn texts_request(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<TextsRequest, ApiError> {
    let request: TextsRequest = parse(state, body)?;
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
    Ok(request)
}

/// Reads a classify/tag body, queues it as `work` and waits for the engine's answer; returns the
/// adapter's name with it.
async fn encode<T>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    work: fn(EncodeWork<T>) -> Work,
) -> Result<(String, T), ApiError> {
    let request = texts_request(state, body)?;
    let (reply, answer) = oneshot::channel();
    let adapter = request.adapter.clone();
    submit(
        state,
        work(EncodeWork {
            adapter: request.adapter,
            texts: request.inputs,
            truncate: request.truncate,
            queued: Instant::now(),
            reply,
        }),
    )?;
    let answer = answer.await.map_err(|_| dropped())??;
    Ok((adapter, answer))
}

async fn classify_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<ClassifyResponse, ApiError> {
    let (adapter, predictions) = encode(state, body, Work::Classify).await?;
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

async fn tag(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = encode(&state, body, Work::Tag)
        .await
        .map(|(adapter, results)| Json(TagResponse { adapter, results }).into_response());
    respond(&state, "tag", started, result)
}

/// How `POST /v1/generate` picks tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodingName {
    /// The most likely token (default).
    #[default]
    Greedy,
    /// Seeded sampling (`temperature`, `top_k`, `top_p`, `seed`).
    Sample,
    /// Beam search (`beams`, `length_penalty`); runs on its own, not in the shared batch.
    Beam,
}

/// `POST /v1/generate`; the fields and defaults of `ptune generate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The adapter's name; absent or `null` runs the frozen model alone.
    #[serde(default)]
    pub adapter: Option<String>,
    /// The text to continue.
    pub prompt: String,
    /// Most new tokens (default 48).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// `greedy` (default), `sample` or `beam`.
    #[serde(default)]
    pub decoding: DecodingName,
    /// Sampling temperature (default 1).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Sample among the k most likely tokens.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens reaching this probability.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Seed of the sampler (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Beams of beam search (default 4).
    #[serde(default = "four")]
    pub beams: usize,
    /// Beam search's length penalty (default 1).
    #[serde(default = "one")]
    pub length_penalty: f64,
    /// HF's repetition penalty (default 1, off).
    #[serde(default = "one")]
    pub repetition_penalty: f64,
    /// Texts that end the generation; the output stops before them.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Answer with server-sent events, one per new piece of text, then a `done` event.
    #[serde(default)]
    pub stream: bool,
}

fn default_max_tokens() -> usize {
    48
}
fn one() -> f64 {
    1.0
}
fn four() -> usize {
    4
}

impl GenerateRequest {
    /// The library's options for this request.
    pub fn options(&self) -> ptune_train::inference::GenerateOptions {
        use ptune_train::generate::Decoding;
        let decoding = match self.decoding {
            DecodingName::Greedy => Decoding::Greedy,
            DecodingName::Sample => Decoding::Sample {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            DecodingName::Beam => {
                Decoding::Beam { width: self.beams, length_penalty: self.length_penalty }
            }
        };
        ptune_train::inference::GenerateOptions {
            max_new_tokens: self.max_tokens,
            decoding,
            stop: self.stop.clone(),
            repetition_penalty: self.repetition_penalty,
        }
    }
}

/// The answer to `POST /v1/generate` without streaming (and the data of the `done` event).
#[derive(Debug, Serialize)]
pub struct GenerateResponse {
    /// The adapter used (`null`: the frozen model alone).
    pub adapter: Option<String>,
    /// The text, tokens and finish reason.
    #[serde(flatten)]
    pub generated: Generated,
}

async fn generate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let request: GenerateRequest = match parse(&state, body) {
        Ok(r) => r,
        Err(e) => return respond(&state, "generate", started, Err(e)),
    };
    if request.beams == 0 || request.beams > 16 {
        let e = ApiError::BadInput(format!("beams must be 1 to 16, not {}", request.beams));
        return respond(&state, "generate", started, Err(e));
    }
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let work = GenerateWork {
        adapter: request.adapter.clone(),
        prompt: request.prompt.clone(),
        options: request.options(),
        queued: Instant::now(),
        events,
    };
    if let Err(e) = submit(&state, Work::Generate(work)) {
        return respond(&state, "generate", started, Err(e));
    }
    let adapter = request.adapter.clone();
    if !request.stream {
        let result = loop {
            match received.recv().await {
                Some(GenEvent::Text(_)) => continue,
                Some(GenEvent::Done(generated)) => {
                    break Ok(GenerateResponse { adapter, generated })
                }
                Some(GenEvent::Failed(e)) => break Err(e),
                None => break Err(dropped()),
            }
        };
        return respond(&state, "generate", started, result.map(|r| Json(r).into_response()));
    }
    // Streaming: a request refused before any text is still a plain JSON error.
    let first = received.recv().await;
    let first = match first {
        Some(GenEvent::Failed(e)) => return respond(&state, "generate", started, Err(e)),
        None => return respond(&state, "generate", started, Err(dropped())),
        Some(event) => event,
    };
    let metrics = state.metrics.clone();
    let stream = futures_util::stream::unfold(
        (Some(first), received, false, adapter),
        move |(next, mut received, ended, adapter)| {
            let metrics = metrics.clone();
            async move {
                if ended {
                    return None;
                }
                let event = match next {
                    Some(e) => Some(e),
                    None => received.recv().await,
                };
                let (sse, ended) = match event {
                    Some(GenEvent::Text(text)) => {
                        (Event::default().json_data(serde_json::json!({"text": text})), false)
                    }
                    Some(GenEvent::Done(generated)) => {
                        metrics.request("generate", 200, started.elapsed());
                        let done = GenerateResponse { adapter: adapter.clone(), generated };
                        (Event::default().event("done").json_data(done), true)
                    }
                    Some(GenEvent::Failed(e)) => {
                        metrics.request("generate", e.status().as_u16(), started.elapsed());
                        let body = serde_json::json!({"kind": e.kind(), "message": e.to_string()});
                        (Event::default().event("error").json_data(body), true)
                    }
                    None => {
                        let e = dropped();
                        let body = serde_json::json!({"kind": e.kind(), "message": e.to_string()});
                        (Event::default().event("error").json_data(body), true)
                    }
                };
                Some((sse, (None, received, ended, adapter)))
            }
        },
    );
    Sse::new(stream).into_response()
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

/// The engine dropped a request without answering it: only a fault does (shutting down, it
/// finishes every queued request first).
fn dropped() -> ApiError {
    ApiError::Internal("the engine failed on this request".into())
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
