//! `cargo xtask bench-serve [--clients N] [--adapters M] [--requests R] [--max-tokens T]
//! [--models minilm,smollm2] [--backend flex] [--out docs/serve.md]`: N concurrent HTTP clients
//! over M adapters against a real `ptune serve` (`ptune-serve-bench`, one process per model), on
//! MiniLM classification and SmolLM2 generation, in three modes: rows of all adapters batched
//! together (ptune), one adapter at a time with the requests of that adapter batched (what a
//! server that switches its active adapter can do), and one request at a time. Writes the table
//! between the `bench-serve` markers of `docs/serve.md` and the JSON beside it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, flag_value};

const BEGIN: &str = "<!-- bench-serve:begin -->";
const END: &str = "<!-- bench-serve:end -->";

/// Runs the load and writes the table.
pub fn bench_serve(args: &[String]) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let clients = flag_value(args, "--clients").unwrap_or("16").to_string();
    let adapters = flag_value(args, "--adapters").unwrap_or("4").to_string();
    let max_tokens = flag_value(args, "--max-tokens").unwrap_or("32").to_string();
    let backend = flag_value(args, "--backend").unwrap_or("flex").to_string();
    let models: Vec<String> = flag_value(args, "--models")
        .unwrap_or("minilm,smollm2")
        .split(',')
        .map(str::to_string)
        .collect();
    let out_md = root.join(flag_value(args, "--out").unwrap_or("docs/serve.md"));
    for m in &models {
        crate::fetch::fetch(m)?;
    }
    let status = Command::new(cargo())
        .args(["build", "--quiet", "-p", "ptune-benches", "--bin", "ptune-serve-bench"])
        .status()
        .context("building ptune-serve-bench")?;
    if !status.success() {
        bail!("building ptune-serve-bench failed");
    }
    let exe = root.join("target/debug/ptune-serve-bench");
    let mut rows: Vec<Value> = Vec::new();
    for model in &models {
        // Classification requests are short: more of them per client.
        let requests = flag_value(args, "--requests")
            .unwrap_or(if model == "smollm2" { "2" } else { "32" })
            .to_string();
        eprintln!("ptune-serve-bench {model}: {clients} clients × {adapters} adapters …");
        let output = Command::new(&exe)
            .args(["--model", model, "--clients", &clients, "--adapters", &adapters])
            .args(["--requests", &requests, "--max-tokens", &max_tokens, "--backend", &backend])
            .env("PTUNE_CACHE", crate::fetch::cache_dir()?)
            .output()
            .context("running ptune-serve-bench")?;
        if !output.status.success() {
            bail!("ptune-serve-bench {model}: {}", String::from_utf8_lossy(&output.stderr));
        }
        rows.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    let table = table(&rows);
    println!("{table}");
    let json_path = out_md.with_extension("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&rows)?)?;
    let command = format!(
        "cargo xtask bench-serve --clients {clients} --adapters {adapters} --max-tokens {max_tokens} --backend {backend}"
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let block = format!(
        "{BEGIN}\nMeasured with `{command}` on {cores} cores ({cpu}); raw numbers in `{}`.\n\n{table}\n{END}",
        json_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    let doc = std::fs::read_to_string(&out_md).unwrap_or_default();
    let new_doc = match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &doc[..a], &doc[b + END.len()..]),
        _ => format!("{doc}\n## Throughput\n\n{block}\n"),
    };
    std::fs::write(&out_md, new_doc)?;
    eprintln!("wrote the table into {}", out_md.display());
    Ok(())
}

/// The markdown table: per model and mode, throughput and latency, and the ratio to one adapter
/// at a time.
fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| model (task) | mode | requests | req/s | × one adapter at a time | p50 ms | p99 ms | mean batch |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let model = row["model"].as_str().unwrap_or("?");
        let baseline = rows
            .iter()
            .find(|r| r["model"] == row["model"] && r["mode"] == "one-at-a-time")
            .and_then(|r| r["requests_per_s"].as_f64());
        let rps = row["requests_per_s"].as_f64().unwrap_or(f64::NAN);
        let ratio = baseline.map_or("–".to_string(), |b| format!("{:.2}", rps / b));
        let task = match row["max_tokens"].as_u64() {
            Some(t) => format!("generate, {t} tokens"),
            None => row["task"].as_str().unwrap_or("?").to_string(),
        };
        out.push_str(&format!(
            "| {model} ({task}) | {} | {} | {:.1} | {ratio} | {:.0} | {:.0} | {:.1} |\n",
            row["mode"].as_str().unwrap_or("?"),
            row["requests"],
            rps,
            row["p50_ms"].as_f64().unwrap_or(f64::NAN),
            row["p99_ms"].as_f64().unwrap_or(f64::NAN),
            row["mean_batch"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    out
}
