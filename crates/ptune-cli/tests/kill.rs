//! `kill -9` at random moments: a real `ptune train` process on the tiny BERT (its fixture folder has
//! a tokenizer) is killed with SIGKILL again and again — while training, while writing checkpoints,
//! adapters and metrics — and resumed each time with `--resume`. The final adapter must equal an
//! uninterrupted run's byte for byte, and every folder left behind must read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn tiny_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert")
        .canonicalize()
        .expect("the tiny BERT fixture")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-kill-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small labelled JSONL file in the tiny tokenizer's vocabulary.
fn data(dir: &Path) -> PathBuf {
    let good = ["a great film", "the best story", "fun and very good", "love the acting"];
    let bad = ["a dull movie", "the worst plot", "boring and bad", "hate the story"];
    let mut lines = Vec::new();
    for i in 0..240 {
        let (text, label) =
            if i % 2 == 0 { (good[i / 2 % 4], "pos") } else { (bad[i / 2 % 4], "neg") };
        lines.push(format!(
            "{{\"text\": \"{text} {}\", \"label\": \"{label}\"}}",
            "it".repeat(i % 3)
        ));
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn train(out: &Path, data: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
    cmd.args(["-q", "--backend", "flex", "train", "--model"])
        .arg(tiny_bert())
        .arg("--dataset")
        .arg(data)
        .args(["--method", "p-tuning", "--encoder", "mlp", "--encoder-hidden", "16"])
        .args(["--virtual-tokens", "4", "--max-len", "24", "--epochs", "24", "--batch-size", "4"])
        .args(["--lr", "1e-2", "--seed", "7", "--checkpoint-every", "2", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// splitmix64, for the kill times.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn killed_and_resumed_runs_end_with_the_uninterrupted_adapter() {
    let dir = scratch("run");
    let data = data(&dir);

    let whole = dir.join("whole");
    let started = Instant::now();
    let out = train(&whole, &data, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let span = started.elapsed();
    let expected = files(&whole.join("adapter"));
    assert!(expected.iter().any(|(n, _)| n == "adapter_model.safetensors"));

    let killed = dir.join("killed");
    let mut rng = 11u64;
    let (mut kills, mut finished) = (0, false);
    for _ in 0..16 {
        let mut child = train(&killed, &data, true).spawn().unwrap();
        // Anywhere in the first quarter of an uninterrupted run (start-up included), so that many
        // kills land before the resumed runs finish.
        let wait = span.mul_f64((next(&mut rng) % 1000) as f64 / 1000.0 / 4.0);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whatever the kill left must read back: a state folder verifies, an adapter loads.
        let state = killed.join("state");
        if state.exists() {
            ptune_prompt::files::verify_dir(&state).unwrap();
        }
    }
    if !finished {
        let out = train(&killed, &data, true).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("{kills} kills survived (uninterrupted run {:.1} s)", span.as_secs_f64());
    assert!(kills >= 3, "only {kills} kills landed: the run was too short to test anything");
    assert_eq!(
        files(&killed.join("adapter")),
        expected,
        "final adapter differs after {kills} kills"
    );

    // The resumed log holds each optimizer step once.
    let log = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("step").and_then(|s| s.as_u64()))
        .collect();
    let mut sorted = steps.clone();
    sorted.dedup();
    assert_eq!(steps, sorted, "a step is logged twice");
}
