//! `cargo xtask results [--full] [--seeds N] [--train-limit N] [--epochs N] [--methods a,b]
//! [--no-tag] [--no-e2e] [--no-cloze] [--peer] [--peer-seeds N] [--reuse] [--runs runs/results]
//! [--out docs/results.md]`: the methods measured on
//! real data, written to `docs/results.md` with SVG plots.
//!
//! - MiniLM on `rt-sentences`, per method (linear probe, Prompt Tuning, P-Tuning MLP and LSTM,
//!   Prefix-Tuning, P-Tuning v2, full fine-tuning): three learning rates on seed 0, the one with
//!   the best dev accuracy kept, then the other seeds at that rate; test accuracy of the best
//!   epoch (mean ± std over seeds), dev accuracy, trainable parameters, seconds per epoch, peak RSS
//!   (the `ptune` process's `VmHWM`, polled while it runs). Stability: the std over seeds and the
//!   fraction of runs whose test accuracy beats the linear probe's mean. Whether shallow <
//!   reparameterised < deep holds, from those means.
//! - MiniLM on `e2e-slots` (token classification): each method at one rate, entity F1.
//! - SmolLM2-135M cloze on `rt-sentences` (the verbalizer's choice of the LM head): the prompt
//!   methods, for the same ordering on a decoder, and full fine-tuning of the decoder.
//! - SmolLM2-135M on `e2e`: Prompt Tuning, Prefix-Tuning, P-Tuning v2 and full fine-tuning of the
//!   decoder, BLEU and ROUGE-L of greedy generations (stop at the newline) on the dev sources.
//! - With `--peer`: the MiniLM runs in PEFT (`benches/peer/peft_train.py`, same split), with
//!   PEFT's documented settings and with ptune's, `--peer-seeds` seeds each (default `--seeds`).
//!
//! The default budget (2,400 training sentences, 2 epochs, 3 seeds) is what separates the methods
//! on MiniLM; `--full` trains on the whole training split for 3 epochs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, flag_value, given};

/// A row of the comparison: label, short name (`--methods` and run folders), `ptune train` method
/// flags, and the learning rates swept.
struct Method {
    label: &'static str,
    name: &'static str,
    /// The method's name in `benches/peer/peft_train.py`.
    peft: &'static str,
    flags: &'static [&'static str],
    lrs: [&'static str; 3],
    /// Shallow (input level), reparameterised, deep (every layer), or a baseline.
    depth: Depth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Baseline,
    Shallow,
    Reparameterised,
    Deep,
}

const MINILM: &[Method] = &[
    Method {
        label: "linear probe (head only)",
        name: "probe",
        peft: "linear-probe",
        flags: &["--method", "linear-probe"],
        lrs: ["3e-3", "1e-2", "3e-2"],
        depth: Depth::Baseline,
    },
    Method {
        label: "Prompt Tuning",
        name: "prompt",
        peft: "prompt-tuning",
        flags: &["--method", "prompt-tuning"],
        lrs: ["1e-2", "3e-2", "1e-1"],
        depth: Depth::Shallow,
    },
    Method {
        label: "P-Tuning (MLP)",
        name: "ptuning-mlp",
        peft: "p-tuning-mlp",
        flags: &["--method", "p-tuning", "--encoder", "mlp", "--encoder-hidden", "128"],
        lrs: ["3e-3", "1e-2", "3e-2"],
        depth: Depth::Reparameterised,
    },
    Method {
        label: "P-Tuning (LSTM)",
        name: "ptuning-lstm",
        peft: "p-tuning-lstm",
        flags: &["--method", "p-tuning", "--encoder", "lstm", "--encoder-hidden", "128"],
        lrs: ["1e-3", "3e-3", "1e-2"],
        depth: Depth::Reparameterised,
    },
    Method {
        label: "Prefix-Tuning",
        name: "prefix",
        peft: "prefix-tuning",
        flags: &["--method", "prefix-tuning", "--encoder-hidden", "512"],
        lrs: ["1e-3", "3e-3", "1e-2"],
        depth: Depth::Deep,
    },
    Method {
        label: "P-Tuning v2",
        name: "ptv2",
        peft: "p-tuning-v2",
        flags: &["--method", "p-tuning-v2"],
        lrs: ["1e-2", "3e-2", "1e-1"],
        depth: Depth::Deep,
    },
    Method {
        label: "full fine-tuning",
        name: "full",
        peft: "full-finetune",
        flags: &["--method", "full-finetune"],
        lrs: ["2e-5", "5e-5", "1e-4"],
        depth: Depth::Baseline,
    },
];

/// What one `ptune train` run reported.
struct RunResult {
    lr: String,
    dev: f64,
    test: f64,
    params: u64,
    seconds_per_epoch: Vec<f64>,
    peak_mib: f64,
    /// (epoch, dev score) per epoch.
    curve: Vec<(f64, f64)>,
}

/// Runs `ptune ARGS` (the built binary), polling its peak RSS; returns (seconds, peak MiB).
fn ptune_measured(exe: &Path, args: &[String]) -> Result<(f64, f64)> {
    let started = std::time::Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .env("PTUNE_CACHE", crate::fetch::cache_dir()?)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("running ptune")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0.0f64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if !status.success() {
        bail!("ptune {} failed", args.join(" "));
    }
    Ok((started.elapsed().as_secs_f64(), peak_kb / 1024.0))
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var =
        if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// One `ptune train` run into `out`, with `metric` read from the best epoch (dev) and its test
/// evaluation.
fn train_run(
    exe: &Path,
    args: Vec<String>,
    out: &Path,
    metric: &str,
    lr: &str,
) -> Result<RunResult> {
    let mut a = args;
    a.extend(["--out".into(), out.display().to_string()]);
    let peak_mib = measured_or_reused(exe, &a, out)?;
    let m = read_json(&out.join("metrics.json"))?;
    let s = &m["summary"];
    let history = s["history"].as_array().cloned().unwrap_or_default();
    Ok(RunResult {
        lr: lr.to_string(),
        dev: s["best"]["metrics"][metric].as_f64().unwrap_or(f64::NAN),
        test: s["test"]["metrics"][metric].as_f64().unwrap_or(f64::NAN),
        params: s["trainable_parameters"].as_u64().unwrap_or(0),
        seconds_per_epoch: history.iter().filter_map(|r| r["seconds"].as_f64()).collect(),
        peak_mib,
        curve: history
            .iter()
            .filter_map(|r| Some((r["epoch"].as_f64()?, r["dev"]["score"].as_f64()?)))
            .collect(),
    })
}

/// `--reuse`: a run folder whose `metrics.json` is complete (written at the end of `ptune train`)
/// is read instead of trained again, so an interrupted `results` run continues where it stopped.
static REUSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How many runs `--reuse` read instead of training (the page says so beside its total time).
static REUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `ptune ARGS` into `out` and returns its peak RSS (MiB), or with `--reuse` reads a complete
/// earlier run of `out` and the peak it recorded.
fn measured_or_reused(exe: &Path, args: &[String], out: &Path) -> Result<f64> {
    let peak_file = out.join("peak_rss_mib");
    let complete = read_json(&out.join("metrics.json")).is_ok_and(|m| m["method"].is_string());
    if REUSE.load(std::sync::atomic::Ordering::Relaxed) && complete {
        eprintln!("results: reusing {}", out.display());
        REUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = std::fs::read_to_string(&peak_file).unwrap_or_default();
        return Ok(text.trim().parse().unwrap_or(f64::NAN));
    }
    let (_, peak) = ptune_measured(exe, args)?;
    std::fs::write(&peak_file, format!("{peak:.1}\n"))?;
    Ok(peak)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A bar chart (mean with ± std whiskers) as SVG.
fn bars_svg(title: &str, rows: &[(String, f64, f64)]) -> String {
    let (w, bar_h, left) = (760.0, 26.0, 230.0);
    let h = 50.0 + rows.len() as f64 * (bar_h + 10.0);
    let scale = (w - left - 40.0) / 1.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>"
    );
    for (i, (label, mean, std)) in rows.iter().enumerate() {
        let y = 35.0 + i as f64 * (bar_h + 10.0);
        let bw = mean.clamp(0.0, 1.0) * scale;
        s.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{label}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"#4878a8\"/>\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{mean:.3} ± {std:.3}</text>",
            y + bar_h * 0.65,
            left + (mean - std).max(0.0) * scale,
            left + (mean + std).min(1.0) * scale,
            y + bar_h / 2.0,
            y + bar_h / 2.0,
            left + bw + 6.0,
            y + bar_h * 0.65,
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"30\" y2=\"{:.1}\" stroke=\"#888\"/></svg>\n",
        h - 5.0
    ));
    s
}

/// Learning curves (dev score per epoch, one line per method) as SVG.
fn curves_svg(title: &str, lines: &[(String, Vec<(f64, f64)>)]) -> String {
    const COLORS: [&str; 8] =
        ["#4878a8", "#e0803a", "#3a9a4a", "#c03a3a", "#8a5ab0", "#8a6a4a", "#d070b0", "#707070"];
    let (w, h, left, top, bottom, right) = (760.0, 380.0, 60.0, 35.0, 40.0, 220.0);
    let points: Vec<(f64, f64)> = lines.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(1.0f64, f64::min).min(0.5);
    let y_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(y_min + 0.05);
    let px = |x: f64| left + (x - 1.0) / (x_max - 1.0).max(1.0) * (w - left - right);
    let py = |y: f64| top + (y_max - y) / (y_max - y_min) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>\
         <line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#888\"/>\
         <line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
         <text x=\"5\" y=\"{:.1}\">{y_max:.3}</text><text x=\"5\" y=\"{:.1}\">{y_min:.3}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\">epoch</text>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom,
        top + 4.0,
        h - bottom,
        (w - right) / 2.0,
        h - 10.0
    );
    for (i, (label, pts)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> =
            pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        ));
        for &(x, y) in pts {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                px(x),
                py(y)
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{label}</text>",
            w - right + 15.0,
            top + 16.0 * i as f64 + 8.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// Everything measured for one method on MiniLM / rt-sentences.
struct MethodResult<'m> {
    method: &'m Method,
    /// Seed 0 at each learning rate swept.
    sweep: Vec<RunResult>,
    /// Every seed at the chosen rate (seed 0 first).
    seeds: Vec<RunResult>,
}

impl MethodResult<'_> {
    fn test(&self) -> (f64, f64) {
        mean_std(&self.seeds.iter().map(|r| r.test).collect::<Vec<_>>())
    }
    fn dev(&self) -> (f64, f64) {
        mean_std(&self.seeds.iter().map(|r| r.dev).collect::<Vec<_>>())
    }
}

/// Runs the comparison and writes the report.
pub fn results(args: &[String]) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let full = given(args, "--full");
    REUSE.store(given(args, "--reuse"), std::sync::atomic::Ordering::Relaxed);
    let seeds: u64 = flag_value(args, "--seeds").unwrap_or("3").parse()?;
    let limit = flag_value(args, "--train-limit")
        .unwrap_or(if full { "1000000" } else { "2400" })
        .to_string();
    let epochs = flag_value(args, "--epochs").unwrap_or(if full { "3" } else { "2" }).to_string();
    let tag_limit = flag_value(args, "--tag-train-limit").unwrap_or("1000").to_string();
    let cloze_limit = flag_value(args, "--cloze-train-limit").unwrap_or("800").to_string();
    let e2e_limit = flag_value(args, "--e2e-train-limit").unwrap_or("400").to_string();
    let out_md = root.join(flag_value(args, "--out").unwrap_or("docs/results.md"));
    let only: Option<Vec<String>> =
        flag_value(args, "--methods").map(|m| m.split(',').map(str::to_string).collect());
    let picked = |m: &Method| only.as_ref().is_none_or(|o| o.iter().any(|n| n == m.name));
    for name in ["minilm", "smollm2", "rt-sentences", "e2e"] {
        crate::fetch::fetch(name)?;
    }
    let status = Command::new(cargo()).args(["build", "--quiet", "-p", "ptune-cli"]).status()?;
    if !status.success() {
        bail!("building ptune failed");
    }
    let exe = root.join("target/debug/ptune");
    let runs = root.join(flag_value(args, "--runs").unwrap_or("runs/results"));
    let started = std::time::Instant::now();
    let base = |model: &str, dataset: &str| -> Vec<String> {
        strings(&["--backend", "flex", "train", "--model", model, "--dataset", dataset])
    };

    // MiniLM on rt-sentences: sweep, then seeds.
    let mut results: Vec<MethodResult> = Vec::new();
    for method in MINILM.iter().filter(|m| picked(m)) {
        let run = |lr: &str, seed: u64| -> Result<RunResult> {
            let mut a = base("minilm", "rt-sentences");
            a.extend(strings(method.flags));
            a.extend(["--lr".into(), lr.into(), "--seed".into(), seed.to_string()]);
            a.extend(["--train-limit".into(), limit.clone(), "--epochs".into(), epochs.clone()]);
            let out = runs.join(format!("minilm-{}-lr{lr}-seed{seed}", method.name));
            eprintln!("results: {} lr {lr} seed {seed} …", method.label);
            train_run(&exe, a, &out, "accuracy", lr)
        };
        let mut sweep = Vec::new();
        for lr in method.lrs {
            sweep.push(run(lr, 0)?);
        }
        let best = sweep
            .iter()
            .max_by(|a, b| a.dev.total_cmp(&b.dev))
            .map(|r| r.lr.clone())
            .unwrap_or_default();
        let mut chosen = Vec::new();
        for seed in 0..seeds {
            chosen.push(match seed {
                0 => {
                    let i = sweep.iter().position(|r| r.lr == best).unwrap_or(0);
                    let r = &sweep[i];
                    RunResult {
                        lr: r.lr.clone(),
                        dev: r.dev,
                        test: r.test,
                        params: r.params,
                        seconds_per_epoch: r.seconds_per_epoch.clone(),
                        peak_mib: r.peak_mib,
                        curve: r.curve.clone(),
                    }
                }
                s => run(&best, s)?,
            });
        }
        results.push(MethodResult { method, sweep, seeds: chosen });
    }

    let mut md = String::from("# Results\n\n");
    md.push_str(&format!(
        "Made by `cargo xtask results {}` on a 2-core CPU (backend `flex`). Every number below \
         comes from that command's runs (`{}/*/metrics.json`); the test split is evaluated once \
         per run, at the epoch the dev split selects.\n\n",
        args.join(" "),
        runs.strip_prefix(&root).unwrap_or(&runs).display()
    ));
    md.push_str(&format!(
        "## MiniLM on `rt-sentences`\n\n\
         all-MiniLM-L6-v2 (22.7 M parameters, frozen except under full fine-tuning); training on \
         the first {limit} sentences of the seeded training split for {epochs} epoch(s), batch 32, \
         16 virtual tokens / prefix slots, mean pooling, AdamW with linear decay (weight decay \
         0.01 for full fine-tuning, 0 otherwise); dev and test are the seeded 1,004 / 1,004 \
         sentences. Each method's learning rate is chosen on dev from three values (seed 0), then \
         trained with {seeds} seed(s).\n\n\
         | method | `ptune train` flags | dev accuracy at each lr (seed 0) | lr | trainable parameters | dev accuracy | **test accuracy** | runs above the probe | seconds per epoch | peak RSS MiB |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    ));
    let probe_test =
        results.iter().find(|r| r.method.name == "probe").map(|r| r.test().0).unwrap_or(f64::NAN);
    let mut bars = Vec::new();
    let mut curves = Vec::new();
    for r in &results {
        let (dm, ds) = r.dev();
        let (tm, ts) = r.test();
        let above = r.seeds.iter().filter(|s| s.test > probe_test).count();
        let sweep: Vec<String> =
            r.sweep.iter().map(|s| format!("{}: {:.4}", s.lr, s.dev)).collect();
        let secs: Vec<f64> = r.seeds.iter().flat_map(|s| s.seconds_per_epoch.clone()).collect();
        let peak = r.seeds.iter().map(|s| s.peak_mib).fold(0.0f64, f64::max);
        let chosen = r.seeds.first().map(|s| s.lr.clone()).unwrap_or_default();
        md.push_str(&format!(
            "| {} | `{}` | {} | {chosen} | {} | {dm:.4} ± {ds:.4} | **{tm:.4} ± {ts:.4}** | {} | {:.0} | {peak:.0} |\n",
            r.method.label,
            r.method.flags.join(" "),
            sweep.join(", "),
            r.seeds.first().map_or(0, |s| s.params),
            if r.method.name == "probe" { "—".to_string() } else { format!("{above}/{}", r.seeds.len()) },
            mean_std(&secs).0,
        ));
        bars.push((r.method.label.to_string(), tm, ts));
        if let Some(first) = r.seeds.first() {
            curves.push((r.method.label.to_string(), first.curve.clone()));
        }
    }
    let docs = out_md.parent().unwrap_or(&root).to_path_buf();
    std::fs::write(
        docs.join("results-minilm.svg"),
        bars_svg("MiniLM / rt-sentences: test accuracy (mean ± std over seeds)", &bars),
    )?;
    std::fs::write(
        docs.join("results-minilm-curves.svg"),
        curves_svg("MiniLM / rt-sentences: dev accuracy per epoch (seed 0, chosen lr)", &curves),
    )?;
    md.push_str(
        "\n![test accuracy per method](results-minilm.svg)\n\n\
         ![dev accuracy per epoch](results-minilm-curves.svg)\n\n",
    );
    md.push_str(&claims(&results, probe_test));

    if given(args, "--peer") {
        let peer_seeds: u64 = flag_value(args, "--peer-seeds").map_or(Ok(seeds), str::parse)?;
        md.push_str(&peer_section(&root, &runs, &results, peer_seeds, &limit, &epochs)?);
    }
    if !given(args, "--no-tag") {
        md.push_str(&tag_section(&exe, &runs, &base, &tag_limit, &epochs, &picked)?);
    }
    if !given(args, "--no-cloze") {
        md.push_str(&cloze_section(&exe, &runs, &base, &cloze_limit)?);
    }
    if !given(args, "--no-e2e") {
        md.push_str(&e2e_section(&root, &exe, &runs, &base, &e2e_limit)?);
    }
    md.push_str(&format!("\nTotal time: {:.1} min", started.elapsed().as_secs_f64() / 60.0));
    match REUSED.load(std::sync::atomic::Ordering::Relaxed) {
        0 => md.push_str(".\n"),
        n => md.push_str(&format!(
            " ({n} runs read from an earlier invocation with the same settings, `--reuse`; their \
             seconds per epoch and peak RSS are those measured then).\n"
        )),
    }
    std::fs::write(&out_md, &md)?;
    println!("{md}");
    eprintln!("wrote {}", out_md.display());
    Ok(())
}

/// The spec's claims, checked against the MiniLM means.
fn claims(results: &[MethodResult], probe_test: f64) -> String {
    let mean = |name: &str| results.iter().find(|r| r.method.name == name).map(|r| r.test().0);
    let best_of = |depth: Depth| {
        results
            .iter()
            .filter(|r| r.method.depth == depth)
            .map(|r| (r.method.label, r.test().0))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut s = String::from("### The spec's claims on MiniLM, measured\n\n");
    match (best_of(Depth::Shallow), best_of(Depth::Reparameterised), best_of(Depth::Deep)) {
        (Some(sh), Some(re), Some(de)) => {
            let holds = sh.1 < re.1 && re.1 < de.1;
            s.push_str(&format!(
                "- Shallow < reparameterised < deep (best test mean of each kind): {} ({:.4}) vs {} \
                 ({:.4}) vs {} ({:.4}): **{}**.\n",
                sh.0,
                sh.1,
                re.0,
                re.1,
                de.0,
                de.1,
                if holds { "holds" } else { "does not hold" }
            ));
        }
        _ => s.push_str("- Shallow < reparameterised < deep: not every kind was run.\n"),
    }
    if let (Some(v2), Some(ft)) = (mean("ptv2"), mean("full")) {
        s.push_str(&format!(
            "- P-Tuning v2 within 1 point of full fine-tuning: {v2:.4} vs {ft:.4} ({:+.2} points): \
             **{}**.\n",
            100.0 * (v2 - ft),
            if v2 >= ft - 0.01 { "yes" } else { "no" }
        ));
    }
    s.push_str(&format!(
        "- Stability: the std over seeds is in the table; \"runs above the probe\" counts the runs \
         whose test accuracy is above the linear probe's mean ({probe_test:.4}).\n\n"
    ));
    s
}

/// PEFT on the same split, twice: with PEFT's documented settings and PEFT's pooler head, and with
/// ptune's settings (the learning rates ptune's sweep chose, 16 virtual tokens, no dropout, ptune's
/// mean-pooling head); test accuracy beside ptune's. `seeds` PEFT seeds per method (`--peer-seeds`).
fn peer_section(
    root: &Path,
    runs: &Path,
    results: &[MethodResult],
    seeds: u64,
    limit: &str,
    epochs: &str,
) -> Result<String> {
    let python = crate::bench::peer_python(root)?;
    let seed_list: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    let methods: Vec<&str> = results.iter().map(|r| r.method.peft).collect();
    // PEFT documents no linear probe: the head-only baseline runs once, in ptune's setting.
    let documented: Vec<&str> = methods.iter().copied().filter(|m| *m != "linear-probe").collect();
    let chosen: Vec<String> = results
        .iter()
        .filter_map(|r| Some(format!("{}={}", r.method.peft, r.seeds.first()?.lr)))
        .collect();
    let presets: [(&str, &str, Vec<&str>, &[&str]); 2] = [
        (
            "PEFT's documented settings, PEFT's pooler head (`--preset peft-docs`)",
            "peft-docs",
            vec!["--preset", "peft-docs", "--pooling", "pooler"],
            &documented,
        ),
        (
            "ptune's settings and head (`--preset ptune --pooling mean --no-dropout`, ptune's chosen rates)",
            "ptune",
            vec!["--preset", "ptune", "--pooling", "mean", "--no-dropout"],
            &methods,
        ),
    ];
    let mut md = String::new();
    let mut peft_tests = Vec::new();
    for (title, slug, flags, methods) in presets {
        let peer_out = runs.join(format!("peft-train-{slug}.json"));
        let mut peer_args: Vec<String> =
            strings(&["--seeds", &seed_list.join(","), "--train-limit", limit, "--epochs", epochs]);
        peer_args.extend(strings(&["--methods", &methods.join(","), "--lr", &chosen.join(",")]));
        peer_args.extend(strings(&flags));
        // `--reuse`: the JSON of an earlier run with the same arguments (kept beside it).
        let args_file = runs.join(format!("peft-train-{slug}.args"));
        let same = std::fs::read_to_string(&args_file).is_ok_and(|a| a == peer_args.join(" "));
        if REUSE.load(std::sync::atomic::Ordering::Relaxed) && same && peer_out.is_file() {
            eprintln!("results: reusing {}", peer_out.display());
        } else {
            eprintln!("results: PEFT, {slug} …");
            let status = Command::new(&python)
                .arg(root.join("benches/peer/peft_train.py"))
                .arg("--out")
                .arg(&peer_out)
                .args(&peer_args)
                .env("PTUNE_CACHE", crate::fetch::cache_dir()?)
                .status()?;
            if !status.success() {
                bail!("peft_train.py failed");
            }
            std::fs::write(&args_file, peer_args.join(" "))?;
        }
        let v = read_json(&peer_out)?;
        md.push_str(&format!(
            "### PEFT {} (transformers {}, torch {}, 2 threads): {title}\n\n\
             `benches/peer/peft_train.py` on the same split, training subset, epochs and batch size.\n\n\
             | method | lr | virtual tokens | trainable parameters | dev accuracy | **test accuracy** | ptune's test accuracy | seconds per epoch | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            v["versions"]["peft"].as_str().unwrap_or("?"),
            v["versions"]["transformers"].as_str().unwrap_or("?"),
            v["versions"]["torch"].as_str().unwrap_or("?"),
        ));
        for r in v["summary"].as_array().cloned().unwrap_or_default() {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            let name = r["method"].as_str().unwrap_or("?");
            let ours = results
                .iter()
                .find(|m| m.method.peft == name)
                .map(|m| {
                    let (t, s) = m.test();
                    format!("{t:.4} ± {s:.4}")
                })
                .unwrap_or_default();
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {:.4} ± {:.4} | **{:.4} ± {:.4}** | {ours} | {:.1} | {:.0} |\n",
                r["lr"],
                r["virtual_tokens"],
                r["trainable_params"],
                f("dev_accuracy_mean"),
                f("dev_accuracy_std"),
                f("test_accuracy_mean"),
                f("test_accuracy_std"),
                f("seconds_per_epoch_mean"),
                f("peak_rss_mb_max"),
            ));
        }
        md.push('\n');
        peft_tests.push(v);
    }
    md.push_str(
        "ptune against PEFT's better setting per method (test accuracy means; \"within noise\": \
         the gap is below the larger of the two standard deviations over seeds):\n\n",
    );
    for r in results {
        let (ours, our_sd) = r.test();
        let best = peft_tests
            .iter()
            .filter_map(|v| {
                v["summary"].as_array()?.iter().find(|x| x["method"] == r.method.peft).and_then(
                    |x| Some((x["test_accuracy_mean"].as_f64()?, x["test_accuracy_std"].as_f64()?)),
                )
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((theirs, their_sd)) = best {
            let verdict = if ours >= theirs {
                "ptune ≥ PEFT"
            } else if theirs - ours <= our_sd.max(their_sd) {
                "within noise"
            } else {
                "PEFT ahead"
            };
            md.push_str(&format!(
                "- {}: ptune {ours:.4} vs PEFT {theirs:.4} ({:+.2} points): {verdict}.\n",
                r.method.label,
                100.0 * (ours - theirs)
            ));
        }
    }
    md.push('\n');
    Ok(md)
}

/// The learning rate a method's row uses where there is no sweep: the middle of its range.
fn middle_lr(method: &Method) -> &'static str {
    method.lrs[1]
}

fn tag_section(
    exe: &Path,
    runs: &Path,
    base: &dyn Fn(&str, &str) -> Vec<String>,
    limit: &str,
    epochs: &str,
    picked: &dyn Fn(&Method) -> bool,
) -> Result<String> {
    let mut md = format!(
        "## MiniLM on `e2e-slots` (token classification)\n\n\
         Slot tags of the E2E meaning representations as BIO word tags; training on the first \
         {limit} sentences for {epochs} epoch(s), batch 32, seed 0, each method at the middle of its \
         learning-rate range above; entity-level F1 of the best dev epoch and on test.\n\n\
         | method | lr | trainable parameters | dev entity F1 | test entity F1 | test word accuracy | seconds per epoch |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for method in MINILM.iter().filter(|m| picked(m)) {
        let lr = middle_lr(method);
        let mut a = base("minilm", "e2e-slots");
        a.extend(strings(method.flags));
        a.extend(strings(&["--lr", lr, "--seed", "0", "--train-limit", limit, "--epochs", epochs]));
        let out = runs.join(format!("minilm-slots-{}-lr{lr}", method.name));
        eprintln!("results: e2e-slots {} …", method.label);
        let r = train_run(exe, a, &out, "entity_f1", lr)?;
        let m = read_json(&out.join("metrics.json"))?;
        let word = m["summary"]["test"]["metrics"]["word_accuracy"].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {lr} | {} | {:.4} | {:.4} | {word:.4} | {:.0} |\n",
            method.label,
            r.params,
            r.dev,
            r.test,
            mean_std(&r.seconds_per_epoch).0
        ));
    }
    md.push('\n');
    Ok(md)
}

/// The text whose keys and values start P-Tuning v2's tables in the "text start" rows (the
/// model's own activations instead of PEFT's `N(0, 1)`).
const CLOZE_INIT_TEXT: &str = "Is this movie review positive or negative?";
const E2E_INIT_TEXT: &str = "Describe the restaurant in one sentence.";

fn cloze_section(
    exe: &Path,
    runs: &Path,
    base: &dyn Fn(&str, &str) -> Vec<String>,
    limit: &str,
) -> Result<String> {
    let mut md = format!(
        "## SmolLM2-135M cloze on `rt-sentences`\n\n\
         The frozen LM head scores the verbalizer words \" negative\" / \" positive\" after \
         \"{{text}} Sentiment:\"; training on the first {limit} sentences for 1 epoch, batch 16, \
         10 virtual tokens, seed 0; accuracy of the best dev epoch and on test. Full fine-tuning \
         of the decoder is not in this table: its resident memory grew past 19 GB within the \
         first 7 minutes of the epoch on a 24 GB machine (see the E2E section for one that fits). \
         \"Text start\": P-Tuning v2's tables start from the model's own keys and values of \
         \"{CLOZE_INIT_TEXT}\" (`--init-text`) instead of PEFT's N(0, 1).\n\n\
         | method | lr | trainable parameters | dev accuracy | test accuracy | seconds per epoch | peak RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    let rows: [(&str, &[&str], &str); 5] = [
        ("Prompt Tuning", &["--method", "prompt-tuning"], "3e-2"),
        ("P-Tuning (MLP)", &["--method", "p-tuning", "--encoder-hidden", "128"], "3e-3"),
        ("Prefix-Tuning", &["--method", "prefix-tuning", "--encoder-hidden", "256"], "3e-3"),
        ("P-Tuning v2", &["--method", "p-tuning-v2"], "3e-3"),
        (
            "P-Tuning v2, text start",
            &["--method", "p-tuning-v2", "--init-text", CLOZE_INIT_TEXT],
            "1e-2",
        ),
    ];
    let mut tests = Vec::new();
    for (label, flags, lr) in rows {
        let mut a = base("smollm2", "rt-sentences");
        a.extend(strings(&["--task", "cloze", "--batch-size", "16"]));
        if flags[1] != "full-finetune" {
            a.extend(strings(&["--virtual-tokens", "10"]));
        }
        a.extend(strings(flags));
        a.extend(strings(&["--lr", lr, "--seed", "0", "--train-limit", limit, "--epochs", "1"]));
        let slug: String = label.chars().filter(char::is_ascii_alphanumeric).collect();
        let out = runs.join(format!("smollm2-cloze-{slug}-lr{lr}"));
        eprintln!("results: SmolLM2 cloze {label} …");
        let r = train_run(exe, a, &out, "accuracy", lr)?;
        tests.push(r.test);
        md.push_str(&format!(
            "| {label} | {lr} | {} | {:.4} | {:.4} | {:.0} | {:.0} |\n",
            r.params,
            r.dev,
            r.test,
            mean_std(&r.seconds_per_epoch).0,
            r.peak_mib
        ));
    }
    if let [shallow, reparameterised, prefix, v2_random, v2_text] = tests[..] {
        let v2 = v2_random.max(v2_text);
        let deep = prefix.max(v2);
        md.push_str(&format!(
            "\nShallow < reparameterised < deep on SmolLM2 (test accuracy, one seed): Prompt Tuning \
             {shallow:.4} vs P-Tuning {reparameterised:.4} vs the better deep method {deep:.4}: \
             **{}** (P-Tuning v2 with PEFT's random start {v2_random:.4}, with the text start \
             {v2_text:.4}).\n",
            if shallow < reparameterised && reparameterised < deep { "holds" } else { "does not hold" },
        ));
    }
    md.push('\n');
    Ok(md)
}

fn e2e_section(
    root: &Path,
    exe: &Path,
    runs: &Path,
    base: &dyn Fn(&str, &str) -> Vec<String>,
    limit: &str,
) -> Result<String> {
    let mut md = format!(
        "## SmolLM2-135M on E2E (split by meaning representation)\n\n\
         Training on the first {limit} training pairs for 1 epoch, batch 8, 10 virtual tokens / \
         prefix slots; BLEU-4 (sacreBLEU's corpus BLEU) and ROUGE-L (rouge_score's F) of greedy \
         generations (at most 48 tokens, stopped at the newline) for the first 20 dev meaning \
         representations against all their references. Full fine-tuning trains the decoder \
         itself (135 M parameters, its tied LM head included; AdamW, weight decay 0.01). \
         \"Text start\": P-Tuning v2's tables start from the model's own keys and values of a \
         text (`--init-text`) instead of PEFT's N(0, 1).\n\n\
         | method | trainable parameters | dev BLEU | dev ROUGE-L | dev target loss | seconds per epoch | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut samples = String::new();
    let methods: [(&str, &str, &[&str]); 5] = [
        ("Prompt Tuning", "prompt-tuning", &["--lr", "3e-2"]),
        ("Prefix-Tuning", "prefix-tuning", &["--encoder-hidden", "256", "--lr", "3e-3"]),
        ("P-Tuning v2", "p-tuning-v2", &["--lr", "3e-3"]),
        ("P-Tuning v2, text start", "p-tuning-v2", &["--init-text", E2E_INIT_TEXT, "--lr", "1e-2"]),
        ("full fine-tuning", "full-finetune", &["--lr", "1e-4"]),
    ];
    for (label, method, flags) in methods {
        let slug: String = flags.concat().chars().filter(char::is_ascii_alphanumeric).collect();
        let out = runs.join(format!("smollm2-e2e-{method}-{slug}"));
        let mut a = base("smollm2", "e2e");
        a.extend(strings(&["--method", method, "--batch-size", "8"]));
        if method != "full-finetune" {
            a.extend(strings(&["--virtual-tokens", "10"]));
        }
        a.extend(strings(&["--eval-sources", "20", "--train-limit", limit, "--epochs", "1"]));
        a.extend(strings(flags));
        a.extend(["--out".into(), out.display().to_string()]);
        eprintln!("results: SmolLM2 E2E {label} …");
        let peak = measured_or_reused(exe, &a, &out)?;
        let m = read_json(&out.join("metrics.json"))?;
        let s = &m["summary"];
        let best = &s["best"]["metrics"];
        let secs =
            s["history"].as_array().and_then(|h| h.first()).and_then(|r| r["seconds"].as_f64());
        md.push_str(&format!(
            "| {label} (`{}`) | {} | {:.4} | {:.4} | {:.4} | {:.0} | {peak:.0} |\n",
            flags.join(" "),
            s["trainable_parameters"],
            best["bleu"].as_f64().unwrap_or(f64::NAN),
            best["rouge_l"].as_f64().unwrap_or(f64::NAN),
            best["loss"].as_f64().unwrap_or(f64::NAN),
            secs.unwrap_or(f64::NAN)
        ));
        // Run from the repository root with the run's relative path, so the page names no path
        // of this machine.
        let relative = out.strip_prefix(root).unwrap_or(&out);
        let output = Command::new(exe)
            .current_dir(root)
            .args(["--backend", "flex", "eval"])
            .arg(relative)
            .args(["--split", "dev", "--eval-sources", "3"])
            .env("PTUNE_CACHE", crate::fetch::cache_dir()?)
            .output()?;
        samples.push_str(&format!(
            "\n{label} (`ptune eval {} --split dev --eval-sources 3`):\n\n```text\n{}```\n",
            relative.display(),
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    md.push_str("\nSample generations:\n");
    md.push_str(&samples);
    Ok(md)
}
