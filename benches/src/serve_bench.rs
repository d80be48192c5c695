//! `ptune-serve-bench`: N concurrent HTTP clients over M adapters against a real `ptune serve`
//! (in this process, on 127.0.0.1), once with rows of all adapters batched together and once one
//! adapter at a time (what a server that switches its active adapter does). Prints one JSON line
//! per mode: requests per second, p50/p99 latency, mean batch size. `cargo xtask bench-serve`
//! runs it for MiniLM classification and SmolLM2 generation and writes the table into
//! `docs/serve.md`.
//!
//! The adapters are made here (each method's initialization, a seeded random head, the
//! `task.json` a trained adapter carries): throughput does not depend on trained values, and both
//! modes serve exactly the same requests, whose greedy outputs are the same in both.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ptune_prompt::adapter::{save_adapter, CAUSAL_LM, SEQ_CLS};
use ptune_prompt::{ClassifierHeadConfig, MethodKind, MethodOptions};
use ptune_serve::{ServeConfig, Server};
use ptune_train::inference::load_backbone;
use ptune_train::{Pooling, TaskInfo, TaskKind};
use ptune_transformer::{Backbone, FrozenOps};
use serde_json::{json, Value};

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
struct Args {
    /// `minilm` (classification) or `smollm2` (generation).
    #[arg(long)]
    model: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Adapters (methods in turn: Prompt Tuning, Prefix-Tuning, P-Tuning v2, P-Tuning).
    #[arg(long, default_value_t = 4)]
    adapters: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 8)]
    requests: usize,
    /// New tokens per generation request.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// `mixed`, `one-at-a-time`, `unbatched` (one request per forward, one adapter at a time)
    /// or `all` (the three in turn).
    #[arg(long, default_value = "all")]
    mode: String,
    /// `flex` or `ndarray`.
    #[arg(long, default_value = "flex")]
    backend: String,
}

/// Short movie-review sentences (classification inputs).
const REVIEWS: [&str; 8] = [
    "a gorgeous, witty and seductive movie",
    "the plot is nothing but boilerplate cliches from start to finish",
    "an utterly charming and hilarious film that reminded me why I love movies",
    "too long, too slow and too pleased with itself",
    "the performances are uniformly excellent",
    "it's a bad sign when you're rooting for the film to end",
    "a thoughtful, moving portrait of a family",
    "nothing more than a tired retread of better films",
];

/// Restaurant meaning representations (generation inputs, as in E2E).
const MEANINGS: [&str; 8] = [
    "name[The Eagle], eatType[coffee shop], food[French], area[riverside]",
    "name[The Mill], eatType[pub], food[Italian], priceRange[cheap]",
    "name[Zizzi], eatType[restaurant], customer rating[5 out of 5]",
    "name[Aromi], food[Chinese], area[city centre], familyFriendly[yes]",
    "name[Bibimbap House], food[English], priceRange[moderate], near[Clare Hall]",
    "name[Blue Spice], eatType[coffee shop], area[riverside], familyFriendly[no]",
    "name[Cotto], food[Indian], customer rating[average], near[The Portland Arms]",
    "name[Fitzbillies], eatType[coffee shop], priceRange[high], area[city centre]",
];

const METHODS: [MethodKind; 4] = [
    MethodKind::PromptTuning,
    MethodKind::PrefixTuning,
    MethodKind::PTuningV2,
    MethodKind::PTuning,
];

/// Writes `n` adapter folders for `model` under `dir`; returns their names and whether the model
/// generates.
fn make_adapters<B: FrozenOps>(model: &str, dir: &Path, n: usize) -> Result<(Vec<String>, bool)> {
    let device = B::Device::default();
    let (backbone, tokenizer) = load_backbone::<B>(model, &device)?;
    let dims = backbone.dims();
    let generate = backbone.as_decoder().is_some();
    let mut names = Vec::new();
    for i in 0..n {
        let method = METHODS[i % METHODS.len()];
        B::seed(&device, 100 + i as u64);
        let options = MethodOptions { virtual_tokens: Some(10), ..MethodOptions::default() };
        let prompt = method.build::<B>(&options, &backbone, Some(&tokenizer))?.materialized();
        let name = format!("{}-{i}", method);
        let folder = dir.join(&name);
        let (task, head, labels, pooling, separator, task_type) = if generate {
            (TaskKind::Generate, None, vec![], None, Some("\nDescription:".into()), CAUSAL_LM)
        } else {
            let head = ClassifierHeadConfig { d_model: dims.hidden_size, num_labels: 2 }
                .init_seeded::<B>(7 + i as u64, &device);
            let pooling = [Pooling::Mean, Pooling::Cls][i % 2];
            let labels = vec!["negative".to_string(), "positive".to_string()];
            (TaskKind::Classify, Some(head), labels, Some(pooling), None, SEQ_CLS)
        };
        save_adapter(&folder, &prompt, head.as_ref(), &dims, task_type, model)?;
        let info = TaskInfo {
            task,
            model: model.to_string(),
            dataset: "bench".into(),
            dev: None,
            test: None,
            columns: Default::default(),
            labels,
            pooling,
            cloze_template: None,
            verbalizer: None,
            separator,
            max_len: 64,
        };
        info.save(&folder)?;
        names.push(name);
    }
    Ok((names, generate))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Serves the adapters in one mode and measures the load.
fn measure<B: FrozenOps>(
    a: &Args,
    dir: &Path,
    names: &[String],
    generate: bool,
    mode: &str,
) -> Result<Value> {
    let mut config = ServeConfig::new(&a.model, dir);
    config.mixed = mode == "mixed";
    config.max_batch = if mode == "unbatched" { 1 } else { 64 };
    config.queue = 4096;
    let server = Server::start::<B>(config, "127.0.0.1:0")?;
    let base = format!("http://{}", server.addr());
    let endpoint = if generate { "generate" } else { "classify" };
    let url = format!("{base}/v1/{endpoint}");
    // One warm-up request per adapter (first-use costs out of the timing).
    for name in names {
        let body = if generate {
            json!({"adapter": name, "prompt": MEANINGS[0], "max_tokens": 2})
        } else {
            json!({"adapter": name, "inputs": [REVIEWS[0]]})
        };
        ureq::post(&url).send_json(body).context("warm-up request")?;
    }
    let (f0, r0) = server.forwards();
    let (s0, sr0) = server.decode_steps();
    let started = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.clients)
            .map(|c| {
                let url = url.clone();
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut out = Vec::new();
                    for k in 0..a.requests {
                        let i = c * a.requests + k;
                        // Concurrent requests spread over the adapters.
                        let adapter = &names[(c + k) % names.len()];
                        let body = if generate {
                            json!({"adapter": adapter, "prompt": MEANINGS[i % MEANINGS.len()],
                                   "max_tokens": a.max_tokens})
                        } else {
                            json!({"adapter": adapter, "inputs": [REVIEWS[i % REVIEWS.len()]]})
                        };
                        let t = Instant::now();
                        let response = ureq::post(&url).send_json(body);
                        match response {
                            Ok(r) => {
                                let _: Value = r.into_json()?;
                            }
                            Err(e) => bail!("request {i}: {e}"),
                        }
                        out.push(t.elapsed().as_secs_f64());
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => all.extend(v),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("a client thread panicked"),
            }
        }
        Ok(all)
    })?;
    let wall = started.elapsed().as_secs_f64();
    let (f1, r1) = server.forwards();
    let (s1, sr1) = server.decode_steps();
    server.stop();
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let n = latencies.len();
    let (forwards, rows) = (f1 - f0, r1 - r0);
    let (steps, step_rows) = (s1 - s0, sr1 - sr0);
    let mean_batch = if generate {
        step_rows as f64 / steps.max(1) as f64
    } else {
        rows as f64 / forwards.max(1) as f64
    };
    Ok(json!({
        "model": a.model,
        "task": endpoint,
        "mode": mode,
        "backend": a.backend,
        "clients": a.clients,
        "adapters": names.len(),
        "requests": n,
        "max_tokens": if generate { Some(a.max_tokens) } else { None },
        "seconds": wall,
        "requests_per_s": n as f64 / wall,
        "p50_ms": percentile(&sorted, 0.5) * 1e3,
        "p99_ms": percentile(&sorted, 0.99) * 1e3,
        "mean_batch": mean_batch,
        "forwards": forwards,
        "decode_steps": steps,
    }))
}

fn run<B: FrozenOps>(a: &Args) -> Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ptune-serve-bench-{}-{}", a.model, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (names, generate) = make_adapters::<B>(&a.model, &dir, a.adapters)?;
    let modes: Vec<&str> = match a.mode.as_str() {
        "all" => vec!["mixed", "one-at-a-time", "unbatched"],
        m @ ("mixed" | "one-at-a-time" | "unbatched") => vec![m],
        other => bail!("--mode {other}: mixed, one-at-a-time, unbatched or all"),
    };
    for mode in modes {
        let line = measure::<B>(a, &dir, &names, generate, mode)?;
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.clients == 0 || a.adapters == 0 || a.requests == 0 {
        bail!("--clients, --adapters and --requests must be positive");
    }
    match a.backend.as_str() {
        #[cfg(feature = "flex")]
        "flex" => run::<burn::backend::Flex>(&a),
        #[cfg(feature = "ndarray")]
        "ndarray" => run::<burn::backend::NdArray>(&a),
        other => bail!("backend `{other}` is not compiled into ptune-serve-bench (flex, ndarray)"),
    }
}
