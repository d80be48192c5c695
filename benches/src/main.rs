//! `ptune-bench`: times one workload (model × method, both phases) on one CPU backend and prints one
//! JSON line per phase: seconds per iteration (median), examples per second, peak RSS of this process
//! (after both phases, like the PEFT peer script). `cargo xtask bench` runs it once per workload so
//! every peak RSS is the workload's own.

use anyhow::{bail, Result};
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use ptune_benches::{peak_rss_mb, shape, Trainable, Workload, VIRTUAL_TOKENS};
use ptune_transformer::FrozenOps;

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
struct Args {
    /// `minilm` or `smollm2`.
    #[arg(long, required_unless_present = "list_methods", default_value = "")]
    model: String,
    /// A method of `ptune_benches::METHODS`.
    #[arg(long, required_unless_present = "list_methods", default_value = "")]
    method: String,
    /// Print the methods benchmarked (comma-separated) and exit.
    #[arg(long)]
    list_methods: bool,
    /// `flex` or `ndarray`.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Run the backbone with gradient checkpointing (as `ptune train --gradient-checkpointing`).
    #[arg(long)]
    gradient_checkpointing: bool,
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
    w.gradient_checkpointing = a.gradient_checkpointing;
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
    let bounds = product_bounds(a, &mut w, &mut optim)?;
    for ((phase, s), bound) in [("forward", forward), ("train-step", train)].into_iter().zip(bounds)
    {
        let mut line = serde_json::json!({
            "framework": "ptune", "backend": a.backend, "model": a.model, "method": a.method,
            "phase": phase, "batch": batch, "seq_len": seq_len, "virtual_tokens": VIRTUAL_TOKENS,
            "iters": a.iters, "seconds_per_iter": s, "examples_per_s": batch as f64 / s,
            "peak_rss_mb": rss, "trainable_params": params,
            "gradient_checkpointing": a.gradient_checkpointing,
        });
        if let Some((gflop, bound_s)) = bound {
            line["product_gflop"] = serde_json::json!(gflop);
            line["product_bound_s"] = serde_json::json!(bound_s);
            line["fraction_of_bound"] = serde_json::json!(bound_s / s);
        }
        println!("{line}");
    }
    Ok(())
}

/// Per phase (forward, training step): the GFLOP of its matrix products and the seconds those
/// products take when each is run alone through the same kernel — the time the phase would take
/// if everything but the products were free. Recorded from one more forward and one more step
/// (flex only: the products are the flex kernels' own; `None` on other backends).
type Bound = Option<(f64, f64)>;

fn product_bounds<B: AutodiffBackend + FrozenOps, O: Optimizer<Trainable<B>, B>>(
    a: &Args,
    w: &mut Workload<B>,
    optim: &mut O,
) -> Result<[Bound; 2]> {
    #[cfg(feature = "flex")]
    if a.backend == "flex" {
        use ptune_transformer::frozen::products::{
            record_products, recorded_products, time_product, ProductShape,
        };
        use std::collections::HashMap;
        let phase = |run: &mut dyn FnMut() -> Result<f64>| -> Result<(f64, f64)> {
            record_products(true);
            run()?;
            let shapes = recorded_products();
            record_products(false);
            let mut counts: HashMap<ProductShape, usize> = HashMap::new();
            for s in &shapes {
                *counts.entry(*s).or_default() += 1;
            }
            let gflop = shapes.iter().map(ProductShape::flops).sum::<f64>() / 1e9;
            let seconds = counts.iter().map(|(s, &c)| c as f64 * time_product(*s, 3)).sum();
            Ok((gflop, seconds))
        };
        let forward = phase(&mut || w.forward())?;
        let step = phase(&mut || w.train_step(optim))?;
        return Ok([Some(forward), Some(step)]);
    }
    let _ = (a, w, optim);
    Ok([None, None])
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.list_methods {
        println!("{}", ptune_benches::METHODS.join(","));
        return Ok(());
    }
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
