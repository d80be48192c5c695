//! `ptune`: the command line of ptune, and the only crate that picks Burn backends.
//!
//! ```text
//! ptune [--backend flex|ndarray|wgpu|cuda] info MODEL
//! ptune [--backend …] encode MODEL TEXT
//! ptune [--backend …] complete MODEL TEXT --max-tokens N
//! ptune [--backend …] params MODEL --virtual-tokens N
//! ptune [--backend …] inspect ADAPTER --model MODEL
//! ptune [--backend …] train [--model M] [--method METHOD] [--dataset D] [--task T] [--out DIR] …
//! ptune [--backend …] eval RUN [--split dev|test]
//! ptune [--backend …] predict RUN TEXT…
//! ptune [--backend …] generate [--run RUN] [--model M] TEXT [--decoding greedy|sample|beam]
//! ```
//! MODEL is an HF folder (config.json + model.safetensors + tokenizer.json), a GGUF file, or a
//! folder holding one GGUF file (what `cargo xtask fetch minilm|smollm2` prints).

mod backend;
mod commands;
mod compare;
mod run;
mod task;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use backend::BackendChoice;

#[derive(Debug, Parser)]
#[command(name = "ptune", version, about = "Soft-prompt tuning of frozen pretrained transformers")]
struct Cli {
    /// Backend to run on (those compiled in).
    #[arg(long, global = true, default_value_t = BackendChoice::default())]
    backend: BackendChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Architecture, layers, heads, KV heads, hidden size, vocabulary and parameter count of a model.
    Info {
        /// Model folder or GGUF file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Token ids of TEXT and the first values of the last hidden state.
    Encode {
        /// Model folder or GGUF file.
        model: PathBuf,
        /// Text to encode.
        text: String,
        /// How many values of each position's hidden state to print.
        #[arg(long, default_value_t = 6)]
        values: usize,
    },
    /// Greedy continuation of TEXT by a decoder, using the KV cache.
    Complete {
        /// Model folder or GGUF file (a decoder).
        model: PathBuf,
        /// Prompt.
        text: String,
        /// Tokens to generate.
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
    },
    /// The spec's comparison table for MODEL, counted from the real modules of each method.
    Params {
        /// Model folder or GGUF file.
        model: PathBuf,
        /// Virtual tokens (prefix slots).
        #[arg(long, default_value_t = 20)]
        virtual_tokens: usize,
        /// Hidden width of the reparameterization encoders (default: PEFT's, the token dim).
        #[arg(long)]
        encoder_hidden: Option<usize>,
    },
    /// Train a soft prompt (and head) on a task (classify, tag, cloze, generate); prints dev metrics
    /// beside baselines.
    Train(train::TrainArgs),
    /// A trained run's metrics on its data set's dev or test split.
    Eval(run::EvalArgs),
    /// Labels, tags or generations of a trained run for new texts.
    Predict(run::PredictArgs),
    /// A decoder's continuation of a text (greedy, top-k/top-p sampling or beam search), with or
    /// without a run's soft prompt.
    Generate(run::GenerateArgs),
    /// The same short seeded training job on several backends, as a table.
    Compare(compare::CompareArgs),
    /// Per virtual token of an adapter, its nearest vocabulary tokens (cosine similarity).
    Inspect {
        /// Adapter folder (adapter_config.json + adapter_model.safetensors).
        adapter: PathBuf,
        /// The model it was trained on.
        #[arg(long)]
        model: PathBuf,
        /// Tokens to list per virtual token.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Compare(args) = &cli.command {
        let mut results = Vec::new();
        for &choice in &args.backends {
            eprintln!("running the job on {choice} …");
            results.push((choice, backend::compare_job(choice, args)?));
        }
        compare::print(&results);
        return Ok(());
    }
    backend::dispatch(cli.backend, cli.command)
}
