//! `ptune serve` as a process: it prints the address it listens on, answers a real HTTP client
//! with the adapter `ptune train` wrote, and on SIGTERM stops accepting, finishes and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tiny_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert")
        .canonicalize()
        .expect("the tiny BERT fixture")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-cli-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let d = scratch();
    let lines: Vec<String> = (0..32)
        .map(|i| {
            let (text, label) =
                if i % 2 == 0 { ("a great film", "pos") } else { ("a dull movie", "neg") };
            format!("{{\"text\": \"{text}\", \"label\": \"{label}\"}}")
        })
        .collect();
    std::fs::write(d.join("data.jsonl"), lines.join("\n")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(["-q", "--backend", "flex", "train", "--model"])
        .arg(tiny_bert())
        .arg("--dataset")
        .arg(d.join("data.jsonl"))
        .args(["--method", "prompt-tuning", "--virtual-tokens", "2", "--epochs", "1", "--out"])
        .arg(d.join("run"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(d.join("adapters")).unwrap();
    std::fs::rename(d.join("run/adapter"), d.join("adapters/sentiment")).unwrap();

    let mut server = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(["--backend", "flex", "serve", "--port", "0", "--model"])
        .arg(tiny_bert())
        .arg("--adapters")
        .arg(d.join("adapters"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("the address line").to_string();

    let answer: serde_json::Value = ureq::post(&format!("{url}/v1/classify"))
        .send_json(serde_json::json!({"adapter": "sentiment", "inputs": ["a great film"]}))
        .unwrap()
        .into_json()
        .unwrap();
    let label = answer["results"][0]["label"].as_str().unwrap();
    assert!(["pos", "neg"].contains(&label), "{answer}");

    let pid = server.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(ureq::get(&format!("{url}/health")).call().is_err(), "still listening");
}
