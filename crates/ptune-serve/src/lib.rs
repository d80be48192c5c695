//! `ptune serve`: many soft-prompt adapters over one frozen model, behind HTTP.
//!
//! One engine thread owns the backbone and every adapter found under the adapters folder; the
//! HTTP side (axum on tokio) parses requests and queues them; the engine batches the rows of
//! concurrent requests, whatever their adapters, into shared forwards of the frozen model
//! ([`engine`]). Endpoints, limits and errors: `docs/serve.md`.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use ptune_serve::{ServeConfig, Server};
//!
//! let config = ServeConfig::new("minilm", "runs/adapters");
//! let server = Server::start::<Flex>(config, "127.0.0.1:8080")?;
//! println!("listening on {}", server.addr());
//! server.wait();
//! # Ok::<(), ptune_serve::ServeError>(())
//! ```

pub mod adapters;
pub mod decode;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ptune_transformer::FrozenOps;

pub use decode::{FinishReason, Generated};
pub use engine::{BatchPolicy, Listing};
pub use error::ApiError;

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model or the adapters folder did not load.
    #[error("{0}")]
    Load(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread or the async runtime could not start.
    #[error("{0}")]
    Runtime(String),
}

/// What a server serves and how it batches.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The frozen model (`minilm`, an HF folder, a GGUF file or a Hub id).
    pub model: String,
    /// The folder whose sub-folders are adapters (`ptune train`'s `adapter/` folders or PEFT's).
    pub adapters: PathBuf,
    /// Most rows in one forward.
    pub max_batch: usize,
    /// Longest wait for more requests to batch with the first.
    pub max_wait: Duration,
    /// Requests that may wait; more get 429.
    pub queue: usize,
    /// Largest request body, bytes; larger gets 413.
    pub body_limit: usize,
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Most new tokens one generation request may ask for.
    pub max_new_tokens: usize,
    /// Rows of different adapters share forwards (default `true`); `false` serves one adapter at
    /// a time, as a server that switches its active adapter must (a benchmark baseline).
    pub mixed: bool,
    /// Stop gracefully on SIGTERM or Ctrl-C (the CLI; tests stop the server themselves).
    pub handle_signals: bool,
}

impl ServeConfig {
    /// Defaults: batches of up to 32 rows gathered for at most 5 ms, 256 queued requests, 1 MiB
    /// bodies, 64 inputs per request, 512 new tokens per generation.
    pub fn new(model: impl Into<String>, adapters: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            adapters: adapters.into(),
            max_batch: 32,
            max_wait: Duration::from_millis(5),
            queue: 256,
            body_limit: 1 << 20,
            max_inputs: 64,
            max_new_tokens: 512,
            mixed: true,
            handle_signals: false,
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<()>>,
    engine: Option<JoinHandle<()>>,
    metrics: Arc<metrics::Metrics>,
}

impl Server {
    /// Loads the model and the adapters on backend `B`, binds `addr` (`host:port`; port 0 picks
    /// a free one) and starts serving. Returns once the server accepts connections.
    pub fn start<B: FrozenOps>(config: ServeConfig, addr: &str) -> Result<Self, ServeError> {
        let listing = Arc::new(RwLock::new(Listing::default()));
        let metrics = Arc::new(metrics::Metrics::default());
        let (queue, work) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let engine = {
            let (model, dir) = (config.model.clone(), config.adapters.clone());
            let policy = BatchPolicy {
                max_batch: config.max_batch.max(1),
                max_wait: config.max_wait,
                max_new_tokens: config.max_new_tokens,
                mixed: config.mixed,
            };
            let (listing, metrics) = (listing.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("ptune-engine".into())
                .spawn(move || {
                    match engine::Engine::<B>::load(&model, dir, policy, listing, metrics) {
                        Ok(engine) => {
                            let _ = ready_tx.send(Ok(()));
                            engine.run(work);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| ServeError::Runtime(format!("starting the engine: {e}")))?
        };
        ready
            .recv()
            .map_err(|_| ServeError::Load("the engine stopped while loading".into()))?
            .map_err(ServeError::Load)?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
        let state = http::AppState {
            queue,
            capacity: config.queue.max(1),
            listing,
            metrics: metrics.clone(),
            max_inputs: config.max_inputs,
            body_limit: config.body_limit,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime(format!("starting the async runtime: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let signals = config.handle_signals;
        let http = std::thread::Builder::new()
            .name("ptune-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        tracing::error!("cannot hand the socket to the async runtime");
                        return;
                    };
                    let app = http::router(state);
                    let shutdown = async move {
                        if signals {
                            tokio::select! {
                                _ = stopped => {}
                                _ = signal() => tracing::info!("signal received: finishing in-flight requests"),
                            }
                        } else {
                            let _ = stopped.await;
                        }
                    };
                    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                        tracing::error!("server: {e}");
                    }
                });
            })
            .map_err(|e| ServeError::Runtime(format!("starting the HTTP thread: {e}")))?;
        Ok(Self { addr: bound, stop: Some(stop), http: Some(http), engine: Some(engine), metrics })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards run and rows in them so far (mean batch size = rows / forwards).
    pub fn forwards(&self) -> (u64, u64) {
        self.metrics.forwards()
    }

    /// Decoding steps of running generations so far, and the rows in them (mean running
    /// generations per step = rows / steps).
    pub fn decode_steps(&self) -> (u64, u64) {
        self.metrics.decode_steps()
    }

    /// Stops accepting, finishes the requests in flight, and returns when both threads are done.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join();
    }

    /// Serves until a signal (with [`ServeConfig::handle_signals`]) or [`Server::stop`].
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        // The HTTP side is gone, and with it every sender: the engine finishes its queue and ends.
        if let Some(h) = self.engine.take() {
            let _ = h.join();
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
