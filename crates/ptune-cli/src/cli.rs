//! The command line's arguments: what `ptune --help` shows.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::backend::BackendChoice;
use crate::{compare, run, serve, train};

#[derive(Debug, Parser)]
#[command(name = "ptune", version, about = "Soft-prompt tuning of frozen pretrained transformers")]
pub struct Cli {
    /// Backend to run on (those compiled in).
    #[arg(long, global = true, default_value_t = BackendChoice::default())]
    pub backend: BackendChoice,
    /// More log lines (`-v`: every optimizer step; `-vv`: everything).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Warnings and errors only (no progress bar).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Shell completions for ptune: `ptune completions bash > /etc/bash_completion.d/ptune`
    /// (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// Serve a folder of adapters over one frozen model behind HTTP, batching requests of
    /// different adapters together (docs/serve.md).
    Serve(serve::ServeArgs),
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
