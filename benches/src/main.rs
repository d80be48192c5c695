//! `ptune-bench`: times one workload (model × method, both phases) on one CPU backend and prints one
//! JSON line per phase: seconds per iteration (median), examples per second, peak RSS of this process
//! (after both phases, like the PEFT peer script). `cargo xtask bench` runs it once per workload so
//! every peak RSS is the workload's own.

use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use ptune_benches::{peak_rss_mb, shape, Workload, VIRTUAL_TOKENS};
use ptune_transformer::FrozenOps;

#[derive(Debug, Parser)]
struct Args {
    /// `minilm` or `smollm2`.
    #[arg(long)]
    model: String,
    /// A method of `ptune_benches::METHODS`.
    #[arg(long)]
    method: String,
    /// `flex` or `ndarray`.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 3)]
    iters: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run<B: AutodiffBackend + FrozenOps>(a: &Args) -> Result<()> {
    let mut w = Workload::<B>::new(&a.model, &a.method)?;
    let (batch, seq_len) = shape(&a.model)?;
    let params = w.trainable_parameters();
    let mut times = Vec::new();
    for i in 0..a.warmup + a.iters {
        let t = std::time::Instant::now();
        w.forward()?;
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let forward = median(times);
    let mut optim = w.optimizer();
    let mut times = Vec::new();
    for i in 0..a.warmup + a.iters {
        let t = std::time::Instant::now();
        w.train_step(&mut optim)?;
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let train = median(times);
    let rss = peak_rss_mb();
    for (phase, s) in [("forward", forward), ("train-step", train)] {
        println!(
            "{}",
            serde_json::json!({
                "framework": "ptune", "backend": a.backend, "model": a.model, "method": a.method,
                "phase": phase, "batch": batch, "seq_len": seq_len, "virtual_tokens": VIRTUAL_TOKENS,
                "iters": a.iters, "seconds_per_iter": s, "examples_per_s": batch as f64 / s,
                "peak_rss_mb": rss, "trainable_params": params,
            })
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.iters == 0 {
        bail!("--iters must be positive");
    }
    match a.backend.as_str() {
        #[cfg(feature = "flex")]
        "flex" => run::<burn::backend::Autodiff<burn::backend::Flex>>(&a),
        #[cfg(feature = "ndarray")]
        "ndarray" => run::<burn::backend::Autodiff<burn::backend::NdArray>>(&a),
        other => bail!("backend `{other}` is not compiled into ptune-bench (flex, ndarray)"),
    }
}
