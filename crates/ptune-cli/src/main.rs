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
//! ptune [--backend …] serve --model M --adapters DIR [--host H --port P]
//! ptune completions bash|zsh|fish|elvish|powershell
//! ```
//! MODEL is an HF folder (config.json + model.safetensors + tokenizer.json), a GGUF file, or a
//! folder holding one GGUF file (what `cargo xtask fetch minilm|smollm2` prints).
//!
//! Modules depend one way: `main` → `commands` (the subcommands) → `cli` (the arguments, which name
//! the argument types of `train`, `run`, `compare` and `serve`) → `backend` (the one backend
//! dispatch, [`backend::with_backend`]); nothing depends back on `main` or `commands`.

mod backend;
mod cli;
mod commands;
mod compare;
mod progress;
mod run;
mod serve;
mod train;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

/// jemalloc as the process allocator (feature `jemalloc`, on by default): it reuses the large
/// activation buffers of one step in the next, where glibc's `malloc` maps and zeroes fresh pages
/// for each (measured in `docs/performance.md`).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit codes: 0 success, 1 a failure (a bad file, a failed run: the error is printed), 2 a
/// command-line usage error (clap's: an unknown flag, a value outside its choices).
fn main() -> Result<()> {
    let cli = Cli::parse();
    progress::init_logging(cli.verbose, cli.quiet);
    progress::install_phase_bars(cli.quiet);
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ptune", &mut std::io::stdout());
            Ok(())
        }
        Command::Compare(args) => {
            let mut results = Vec::new();
            for &choice in &args.backends {
                tracing::info!("running the job on {choice} …");
                results.push((choice, backend::with_backend(choice, compare::Job(&args))?));
            }
            compare::print(&results);
            Ok(())
        }
        command => backend::with_backend(cli.backend, commands::Run(command)),
    }
}
