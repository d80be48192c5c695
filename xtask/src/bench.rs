//! `cargo xtask bench [--peer] [--models M,..] [--methods M,..] [--backends flex,ndarray]
//! [--iters N] [--warmup N] [--gradient-checkpointing] [--out FILE.md] [--from FILE.json]`
//! (`--from`: rebuild the markdown from a saved JSON without measuring; `--gradient-checkpointing`:
//! ptune's workloads run with it, PEFT's as always without): times every workload of `ptune-benches` (one process per
//! model × method × backend, so each peak RSS is the workload's own), optionally the same workloads
//! in PEFT (`benches/peer/peft_bench.py`), and writes a JSON and a markdown summary with the ratios
//! and, per workload, the product-bound limit measured by `ptune-bench` on flex (the seconds the
//! phase's matrix products take when each runs alone through the same kernel) and ptune's fraction
//! of it (bound ÷ measured time).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, flag_value, given};

fn list(args: &[String], flag: &str, default: &str) -> Vec<String> {
    flag_value(args, flag).unwrap_or(default).split(',').map(str::to_string).collect()
}

/// The Python that runs the peer script: `$PTUNE_PEER_PYTHON`, else `benches/peer/.venv` (created
/// and filled from `benches/peer/requirements.txt` on first use).
pub(crate) fn peer_python(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PTUNE_PEER_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = root.join("benches/peer/.venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        eprintln!("creating {} (torch, transformers 4.57.6, peft 0.21.2) …", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(root.join("benches/peer/requirements.txt")))?;
    }
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

fn lines_of_json(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

fn key(v: &Value) -> (String, String, String) {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (s("model"), s("method"), s("phase"))
}

/// Runs the benchmark; returns the markdown summary it wrote.
pub fn bench(args: &[String]) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let models = list(args, "--models", "minilm,smollm2");
    let backends = list(args, "--backends", "flex,ndarray");
    let iters = flag_value(args, "--iters").unwrap_or("3").to_string();
    let warmup = flag_value(args, "--warmup").unwrap_or("1").to_string();
    let out_md = PathBuf::from(flag_value(args, "--out").unwrap_or("docs/benchmarks.md"));
    let checkpointing = given(args, "--gradient-checkpointing");
    if let Some(from) = flag_value(args, "--from") {
        // Rebuild the markdown from a saved JSON (no new measurements).
        let v: Value = serde_json::from_str(&std::fs::read_to_string(from)?)?;
        let ours = v["ptune"].as_array().cloned().unwrap_or_default();
        let peer = v["peft"].as_array().cloned().unwrap_or_default();
        let (iters, warmup) =
            (v["iters"].as_str().unwrap_or("?"), v["warmup"].as_str().unwrap_or("?"));
        let markdown = summary(&ours, &peer, &backends);
        println!("{markdown}");
        let header =
            header(!peer.is_empty(), &backends, warmup, iters, &out_md.with_extension("json"))
                .replace("`cargo xtask bench", &ck_flag(v["gradient_checkpointing"] == true));
        std::fs::write(&out_md, format!("{header}{markdown}"))?;
        return Ok(());
    }
    for m in &models {
        crate::fetch::fetch(m)?;
    }
    run(Command::new(cargo()).args([
        "build",
        "--quiet",
        "-p",
        "ptune-benches",
        "--bin",
        "ptune-bench",
    ]))?;
    let exe = root.join("target/debug/ptune-bench");
    // The workloads are defined once, in `ptune-benches`: ask it for the methods by default.
    let all_methods = Command::new(&exe).arg("--list-methods").output().context("ptune-bench")?;
    let all_methods = String::from_utf8_lossy(&all_methods.stdout).trim().to_string();
    let methods = list(args, "--methods", &all_methods);
    let mut ours: Vec<Value> = Vec::new();
    for backend in &backends {
        for model in &models {
            for method in &methods {
                eprintln!("ptune {backend}: {model} {method} …");
                let output = Command::new(&exe)
                    .args(["--model", model, "--method", method, "--backend", backend])
                    .args(["--iters", &iters, "--warmup", &warmup])
                    .args(checkpointing.then_some("--gradient-checkpointing"))
                    .env("PTUNE_CACHE", crate::fetch::cache_dir()?)
                    .output()
                    .context("running ptune-bench")?;
                if !output.status.success() {
                    bail!(
                        "ptune-bench {model} {method} {backend}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                ours.extend(lines_of_json(&String::from_utf8_lossy(&output.stdout)));
            }
        }
    }
    let mut peer: Vec<Value> = Vec::new();
    let mut peer_meta = Value::Null;
    if given(args, "--peer") {
        let python = peer_python(&root)?;
        let peer_out = root.join("target/bench-peft.json");
        eprintln!("PEFT (torch, 2 threads) …");
        run(Command::new(python)
            .arg(root.join("benches/peer/peft_bench.py"))
            .arg("--out")
            .arg(&peer_out)
            .args(["--models", &models.join(","), "--methods", &methods.join(",")])
            .args(["--iters", &iters, "--warmup", &warmup, "--threads", "2"])
            .env("PTUNE_CACHE", crate::fetch::cache_dir()?))?;
        let text = std::fs::read_to_string(&peer_out)?;
        let v: Value = serde_json::from_str(&text)?;
        peer = v["results"].as_array().cloned().unwrap_or_default();
        peer_meta = serde_json::json!({"versions": v["versions"], "threads": v["threads"]});
    }
    let markdown = summary(&ours, &peer, &backends);
    println!("{markdown}");
    let json = serde_json::json!({"ptune": ours, "peft": peer, "peft_meta": peer_meta,
        "iters": iters, "warmup": warmup, "gradient_checkpointing": checkpointing});
    let out_json = out_md.with_extension("json");
    std::fs::write(&out_json, serde_json::to_string_pretty(&json)?)?;
    let header = header(!peer.is_empty(), &backends, &warmup, &iters, &out_json)
        .replace("`cargo xtask bench", &ck_flag(checkpointing));
    std::fs::write(&out_md, format!("{header}{markdown}"))?;
    eprintln!("wrote {} and {}", out_md.display(), out_json.display());
    Ok(())
}

/// The start of the command line in the header, with `--gradient-checkpointing` when it was given.
fn ck_flag(on: bool) -> String {
    if on { "`cargo xtask bench --gradient-checkpointing" } else { "`cargo xtask bench" }
        .to_string()
}

fn header(peer: bool, backends: &[String], warmup: &str, iters: &str, json: &Path) -> String {
    format!(
        "# Benchmarks\n\nMade by `cargo xtask bench{} --backends {} --iters {iters} --warmup {warmup}` (median of the \
         timed iterations; one process per workload; raw numbers in `{}`). Workload: see \
         `benches/src/lib.rs`.\n\n",
        if peer { " --peer" } else { "" },
        backends.join(","),
        json.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    )
}

/// The side-by-side table: per workload and phase, examples/s and peak RSS of each ptune backend,
/// PEFT's, and the ratios (ptune's best backend / PEFT); then ptune's train-step / forward ratio.
fn summary(ours: &[Value], peer: &[Value], backends: &[String]) -> String {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for k in ours.iter().map(key) {
        if !rows.contains(&k) {
            rows.push(k);
        }
    }
    let find = |set: &[Value], k: &(String, String, String), backend: Option<&str>| {
        set.iter()
            .find(|v| key(v) == *k && backend.is_none_or(|b| v["backend"].as_str() == Some(b)))
            .cloned()
    };
    let f = |v: &Option<Value>, field: &str| v.as_ref().and_then(|v| v[field].as_f64());
    let mut md = String::from("| model | method | phase |");
    for b in backends {
        md.push_str(&format!(" ptune {b} ex/s | ptune {b} peak MiB |"));
    }
    md.push_str(" PEFT ex/s | PEFT peak MiB | speed ratio (best ptune / PEFT) | memory ratio (ptune / PEFT) | product GFLOP | product-bound s (flex) | flex / bound |\n|---|---|---|");
    md.push_str(&"---:|---:|".repeat(backends.len()));
    md.push_str("---:|---:|---:|---:|---:|---:|---:|\n");
    let cell =
        |x: Option<f64>, digits: usize| x.map_or("—".to_string(), |x| format!("{x:.digits$}"));
    for k in &rows {
        let mut best: Option<(f64, f64)> = None;
        md.push_str(&format!("| {} | {} | {} |", k.0, k.1, k.2));
        for b in backends {
            let v = find(ours, k, Some(b));
            let (eps, rss) = (f(&v, "examples_per_s"), f(&v, "peak_rss_mb"));
            if let (Some(e), Some(r)) = (eps, rss) {
                if best.is_none_or(|(be, _)| e > be) {
                    best = Some((e, r));
                }
            }
            md.push_str(&format!(" {} | {} |", cell(eps, 2), cell(rss, 0)));
        }
        let p = find(peer, k, None);
        let (pe, pr) = (f(&p, "examples_per_s"), f(&p, "peak_rss_mb"));
        let speed = best.zip(pe).map(|((e, _), pe)| e / pe);
        let memory = best.zip(pr).map(|((_, r), pr)| r / pr);
        let flex = find(ours, k, Some("flex"));
        md.push_str(&format!(
            " {} | {} | {} | {} | {} | {} | {} |\n",
            cell(pe, 2),
            cell(pr, 0),
            speed.map_or("—".into(), |s| format!("{s:.2}×")),
            memory.map_or("—".into(), |m| format!("{m:.2}×")),
            cell(f(&flex, "product_gflop"), 1),
            cell(f(&flex, "product_bound_s"), 3),
            f(&flex, "fraction_of_bound").map_or("—".into(), |x| format!("{:.0} %", 100.0 * x))
        ));
    }
    md.push_str("\nptune's training step over its forward pass (seconds per iteration):\n\n| backend | model | method | train-step / forward |\n|---|---|---|---:|\n");
    for b in backends {
        for k in rows.iter().filter(|k| k.2 == "forward") {
            let fw = f(&find(ours, k, Some(b)), "seconds_per_iter");
            let tk = (k.0.clone(), k.1.clone(), "train-step".to_string());
            let tr = f(&find(ours, &tk, Some(b)), "seconds_per_iter");
            if let (Some(fw), Some(tr)) = (fw, tr) {
                md.push_str(&format!("| {b} | {} | {} | {:.2} |\n", k.0, k.1, tr / fw));
            }
        }
    }
    md
}
