//! `ptune serve`: the adapters of a folder over one frozen model, behind HTTP (`ptune-serve`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ptune_serve::{ServeConfig, Server};
use ptune_transformer::FrozenOps;

/// Options of `ptune serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The frozen model every adapter runs on (`minilm`, `smollm2`, a folder, a GGUF file or a
    /// Hub id).
    #[arg(long)]
    pub model: String,
    /// Folder of adapter folders (each as `ptune train` writes `adapter/`: PEFT files plus its
    /// task.json); rescanned by `POST /v1/adapters/reload`.
    #[arg(long)]
    pub adapters: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most rows in one forward of the model.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Longest wait, in milliseconds, for more requests to batch with the first.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Requests that may wait for the model; more get 429.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Largest request body in bytes; larger gets 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Most inputs in one request.
    #[arg(long, default_value_t = 64)]
    pub max_inputs: usize,
    /// Most new tokens one generation request may ask for.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Serve one adapter at a time (as a server that switches its active adapter must) instead
    /// of batching rows of different adapters together: a baseline for comparisons.
    #[arg(long)]
    pub one_adapter_at_a_time: bool,
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub fn serve<B: FrozenOps>(args: ServeArgs) -> Result<()> {
    let config = ServeConfig {
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue,
        body_limit: args.body_limit,
        max_inputs: args.max_inputs,
        max_new_tokens: args.max_new_tokens,
        mixed: !args.one_adapter_at_a_time,
        handle_signals: true,
        ..ServeConfig::new(args.model, args.adapters)
    };
    let server = Server::start::<B>(config, &format!("{}:{}", args.host, args.port))?;
    // On stdout, so a script can read the address (with --port 0).
    println!("listening on http://{}", server.addr());
    server.wait();
    tracing::info!("stopped");
    Ok(())
}
