//! A real server on 127.0.0.1 and a real HTTP client: adapters trained here on the tiny BERT
//! (Prompt Tuning with mean pooling, Prefix-Tuning with CLS pooling, P-Tuning v2 with the pooler)
//! answer concurrent, interleaved requests, each equal to the same text run alone through
//! `TextClassifier` (what `ptune predict` uses), with rows of several requests and adapters sharing
//! forwards; bad requests get a JSON 4xx naming the problem; a new adapter folder appears on
//! reload; the metrics count what happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::backend::{Autodiff, NdArray};
use ptune_prompt::MethodKind;
use ptune_serve::{ServeConfig, Server};
use ptune_train::{Pooling, Silent, TextClassifier, TrainJob};
use serde_json::{json, Value};

fn tiny_bert() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert")
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ptune-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GOOD: [&str; 4] = ["good", "great", "fine", "nice"];
const BAD: [&str; 4] = ["bad", "poor", "awful", "dull"];

fn classification_file(at: &Path, labels: [&str; 2]) -> String {
    let mut lines = Vec::new();
    for i in 0..48 {
        let (word, label) =
            if i % 2 == 0 { (GOOD[i % 4], labels[0]) } else { (BAD[i % 4], labels[1]) };
        let text = format!("the film was {word} and the cast {}", ["ok", "so"][i % 2]);
        lines.push(json!({"text": text, "label": label}).to_string());
    }
    let path = at.join(format!("{}.jsonl", labels[0]));
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

/// Trains one adapter and returns its run folder.
fn train(
    at: &Path,
    name: &str,
    method: MethodKind,
    pooling: Pooling,
    labels: [&str; 2],
) -> PathBuf {
    let mut job = TrainJob::new(&tiny_bert(), &classification_file(at, labels));
    job.method = Some(method);
    job.method_options.virtual_tokens = Some(3);
    job.pooling = pooling;
    job.train.epochs = 1;
    job.train.batch_size = 8;
    job.train.lr = 5e-2;
    let out = at.join("runs").join(name);
    job.run::<Autodiff<NdArray>>(&out, false, &mut Silent).unwrap();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// One request: the status and the body as JSON (or as a string when it is not JSON).
fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let request = ureq::request(method, url).set("Content-Type", "application/json");
    let response = match body {
        Some(b) => request.send_string(b),
        None => request.call(),
    };
    let (status, text) = match response {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{method} {url}: {e}"),
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn texts(i: usize) -> Vec<String> {
    vec![
        format!("the film was {} and the cast ok", GOOD[i % 4]),
        format!("a {} story, {} acting", BAD[(i + 1) % 4], GOOD[(i + 2) % 4]),
    ]
}

#[test]
fn a_server_batches_many_adapters_and_answers_each_as_alone() {
    let d = scratch("serve");
    let runs = [
        (
            "sentiment",
            train(&d, "a", MethodKind::PromptTuning, Pooling::Mean, ["positive", "negative"]),
        ),
        ("quality", train(&d, "b", MethodKind::PrefixTuning, Pooling::Cls, ["high", "low"])),
    ];
    let adapters = d.join("adapters");
    for (name, run) in &runs {
        copy_dir(&run.join("adapter"), &adapters.join(name));
    }
    let mut config = ServeConfig::new(tiny_bert(), &adapters);
    config.max_wait = Duration::from_millis(40);
    config.body_limit = 4096;
    let server = Server::start::<NdArray>(config, "127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.addr());

    let (status, body) = call("GET", &format!("{base}/health"), None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = call("GET", &format!("{base}/v1/adapters"), None);
    assert_eq!(status, 200);
    let names: Vec<&str> =
        body["adapters"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["quality", "sentiment"]);

    // What each adapter says of each text alone (the library `ptune predict` runs).
    let alone: Vec<TextClassifier<NdArray>> =
        runs.iter().map(|(_, run)| TextClassifier::<NdArray>::from_run(run).unwrap()).collect();

    // 8 clients, each sending 3 requests that alternate between the adapters.
    let answers: Vec<(usize, usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let base = base.clone();
                s.spawn(move || {
                    (0..3)
                        .map(|k| {
                            let a = (client + k) % 2;
                            let i = client * 3 + k;
                            let body = json!({"adapter": runs_name(a), "inputs": texts(i)});
                            let (status, answer) = call(
                                "POST",
                                &format!("{base}/v1/classify"),
                                Some(&body.to_string()),
                            );
                            assert_eq!(status, 200, "{answer}");
                            (a, i, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 24);
    for (a, i, answer) in &answers {
        assert_eq!(answer["adapter"].as_str(), Some(runs_name(*a)));
        let expected = alone[*a].predict(&texts(*i)).unwrap();
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), expected.len());
        for (got, want) in results.iter().zip(&expected) {
            assert_eq!(got["label"].as_str(), Some(want.label.as_str()));
            let scores: Vec<f32> = got["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(scores.len(), want.scores.len());
            for (g, w) in scores.iter().zip(&want.scores) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "adapter {a}, text {i}: {scores:?} vs {:?}",
                    want.scores
                );
            }
        }
    }
    // Rows of several requests shared forwards (each request has 2 rows).
    let (forwards, rows) = server.forwards();
    assert_eq!(rows, 48);
    assert!(forwards < 24, "{forwards} forwards for 24 requests: nothing was batched");

    // Bad requests: a JSON error naming the problem, and the server goes on.
    let classify = format!("{base}/v1/classify");
    for (body, status, kind) in [
        ("{not json".to_string(), 400, "malformed_request"),
        (json!({"adapter": "sentiment"}).to_string(), 400, "malformed_request"),
        (json!({"adapter": "sentiment", "inputs": [1, 2]}).to_string(), 400, "malformed_request"),
        (
            json!({"adapter": "sentiment", "inputs": ["x"], "extra": 1}).to_string(),
            400,
            "malformed_request",
        ),
        (json!({"adapter": "sentiment", "inputs": []}).to_string(), 400, "bad_input"),
        (json!({"adapter": "nope", "inputs": ["x"]}).to_string(), 404, "unknown_adapter"),
        (
            json!({"adapter": "sentiment", "inputs": ["x".repeat(5000)]}).to_string(),
            413,
            "body_too_large",
        ),
    ] {
        let (got, answer) = call("POST", &classify, Some(&body));
        assert_eq!(got, status, "{body:.60}: {answer}");
        assert_eq!(answer["error"]["kind"].as_str(), Some(kind), "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, answer) =
        call("POST", &classify, Some(&json!({"adapter": "nope", "inputs": ["x"]}).to_string()));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("nope") && message.contains("sentiment"), "{message}");

    // A third adapter appears on reload, without a restart.
    let third = train(&d, "c", MethodKind::PTuningV2, Pooling::Pooler, ["up", "down"]);
    copy_dir(&third.join("adapter"), &adapters.join("trend"));
    let (status, body) = call("POST", &format!("{base}/v1/adapters/reload"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["adapters"].as_array().unwrap().len(), 3, "{body}");
    let (status, answer) =
        call("POST", &classify, Some(&json!({"adapter": "trend", "inputs": texts(0)}).to_string()));
    assert_eq!(status, 200, "{answer}");
    let expected = TextClassifier::<NdArray>::from_run(&third).unwrap().predict(&texts(0)).unwrap();
    assert_eq!(answer["results"][0]["label"].as_str(), Some(expected[0].label.as_str()));

    let (status, text) = call("GET", &format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(
        text.contains("ptune_requests_total{endpoint=\"classify\",status=\"200\"} 25"),
        "{text}"
    );
    assert!(text.contains("ptune_request_seconds_count"), "{text}");
    assert!(text.contains("ptune_queue_seconds_bucket"), "{text}");
    server.stop();
}

fn runs_name(a: usize) -> &'static str {
    ["sentiment", "quality"][a]
}
