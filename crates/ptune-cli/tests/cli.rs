//! The command line as a user meets it: completions, exit codes, own data files with named columns
//! (train / dev / test), and `predict` reading and writing JSON Lines. Runs the real `ptune` binary
//! on the tiny BERT fixture.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert")
        .canonicalize()
        .expect("the tiny BERT fixture")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ptune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ptune")).args(args).output().unwrap()
}

/// A CSV with `review,verdict` columns in the tiny tokenizer's vocabulary.
fn csv(path: &Path, n: usize, offset: usize) {
    let good = ["a great film", "the best story", "fun and very good", "love the acting"];
    let bad = ["a dull movie", "the worst plot", "boring and bad", "hate the story"];
    let mut out = String::from("review,verdict\n");
    for i in offset..offset + n {
        let (text, label) =
            if i % 2 == 0 { (good[i / 2 % 4], "pos") } else { (bad[i / 2 % 4], "neg") };
        out.push_str(&format!("{text} {},{label}\n", "it".repeat(i % 3)));
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn completions_and_exit_codes() {
    let out = ptune(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("ptune") && script.contains("--text-column"), "{script:.200}");
    // A usage error is exit code 2 (clap), a failure exit code 1.
    assert_eq!(ptune(&["train", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(ptune(&["train", "--task", "summarize"]).status.code(), Some(2));
    let out = ptune(&["info", "org/not-in-any-cache"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not found") && err.contains("models--org--not-in-any-cache"), "{err}");
}

#[test]
fn own_files_train_and_predict_with_jsonl() {
    let dir = scratch("own");
    let (train, dev, test) = (dir.join("train.csv"), dir.join("dev.csv"), dir.join("test.csv"));
    csv(&train, 48, 0);
    csv(&dev, 8, 100);
    csv(&test, 8, 200);
    let run = dir.join("run");
    let model = tiny_bert();
    let status = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(["-q", "--backend", "flex", "train", "--model"])
        .arg(&model)
        .arg("--dataset")
        .arg(&train)
        .arg("--dev")
        .arg(&dev)
        .arg("--test")
        .arg(&test)
        .args(["--text-column", "review", "--label-column", "verdict"])
        .args(["--method", "prompt-tuning", "--virtual-tokens", "2", "--epochs", "1"])
        .args(["--batch-size", "8", "--max-len", "16", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("task.json")).unwrap()).unwrap();
    assert_eq!(info["dev"], dev.to_str().unwrap());
    assert_eq!(info["test"], test.to_str().unwrap());
    assert_eq!(info["columns"]["text"], "review");
    assert_eq!(info["labels"], serde_json::json!(["neg", "pos"]));

    // `eval` reads the run's own test file (8 rows).
    let out = ptune(&["-q", "--backend", "flex", "eval", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-test.json")).unwrap())
            .unwrap();
    assert_eq!(report["examples"], 8, "{report}");

    let input = dir.join("texts.jsonl");
    std::fs::write(&input, "{\"body\": \"a great film\"}\n\n{\"body\": \"boring and bad\"}\n")
        .unwrap();
    let run_s = run.to_str().unwrap();
    let input_s = input.to_str().unwrap();
    let args = ["-q", "--backend", "flex", "predict", run_s, "--input", input_s];
    let out = ptune(&[&args[..], &["--text-field", "body", "--jsonl"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "boring and bad");
    let scores = lines[0]["scores"].as_object().unwrap();
    let total: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{scores:?}");
    assert_eq!(lines[0]["score"], scores[lines[0]["label"].as_str().unwrap()]);
    // A JSONL input whose field holds a number names file and line.
    std::fs::write(&input, "{\"body\": \"fine\"}\n{\"body\": 3}\n").unwrap();
    let out = ptune(&[&args[..], &["--text-field", "body"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("texts.jsonl:2") && err.contains("not a text"), "{err}");
}
