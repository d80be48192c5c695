//! A real server on 127.0.0.1 and a real HTTP client: adapters trained here on the tiny BERT
//! (Prompt Tuning with mean pooling, Prefix-Tuning with CLS pooling, P-Tuning v2 with the pooler,
//! and a tagging adapter) answer concurrent, interleaved classify and tag requests, each equal to
//! the same text run alone through `TextClassifier` / `Tagger` (what `ptune predict` uses), with
//! rows of several requests and adapters sharing forwards; bad requests get a JSON 4xx naming the
//! problem; a full queue answers 429; a new adapter folder appears on reload; the metrics count
//! what happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::backend::{Autodiff, NdArray};
use ptune_prompt::MethodKind;
use ptune_serve::{ServeConfig, Server};
use ptune_train::{Pooling, Silent, Tagger, TaskKind, TextClassifier, TrainJob};
use serde_json::{json, Value};

mod common;
use common::{call, copy_dir, fuzz_bodies};

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

fn tagging_file(at: &Path) -> String {
    let mut lines = Vec::new();
    for i in 0..48 {
        let name = ["paris", "london", "rome"][i % 3];
        let tokens = ["we", "went", "to", name, "today"];
        let tags = ["O", "O", "O", "B-city", "O"];
        lines.push(json!({"tokens": tokens, "tags": tags}).to_string());
    }
    let path = at.join("cities.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

/// Trains a tagging adapter (P-Tuning v2) and returns its run folder.
fn train_tagger(at: &Path) -> PathBuf {
    let mut job = TrainJob::new(&tiny_bert(), &tagging_file(at));
    job.task = Some(TaskKind::Tag);
    job.method_options.virtual_tokens = Some(2);
    job.train.epochs = 1;
    job.train.batch_size = 8;
    job.train.lr = 5e-2;
    let out = at.join("runs").join("tags");
    job.run::<Autodiff<NdArray>>(&out, false, &mut Silent).unwrap();
    out
}

fn tag_texts(i: usize) -> Vec<String> {
    vec![
        format!("we went to {} today.", ["rome", "paris", "london"][i % 3]),
        "paris, london and rome".to_string(),
    ]
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
        ("cities", train_tagger(&d)),
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
    assert_eq!(names, ["cities", "quality", "sentiment"]);

    // What each adapter says of each text alone (the library `ptune predict` runs).
    let alone: Vec<TextClassifier<NdArray>> = runs[..2]
        .iter()
        .map(|(_, run)| TextClassifier::<NdArray>::from_run(run).unwrap())
        .collect();
    let tagger = Tagger::<NdArray>::from_run(&runs[2].1).unwrap();

    // 8 clients, each sending 3 classify requests that alternate between the adapters and a tag
    // request: classify and tag rows of three adapters share forwards.
    let answers: Vec<(usize, usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let base = base.clone();
                s.spawn(move || {
                    let body = json!({"adapter": "cities", "inputs": tag_texts(client)});
                    let (status, tagged) =
                        call("POST", &format!("{base}/v1/tag"), Some(&body.to_string()));
                    assert_eq!(status, 200, "{tagged}");
                    let tagged = (9, client, tagged);
                    let classified = (0..3)
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
                        .collect::<Vec<_>>();
                    std::iter::once(tagged).chain(classified).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 32);
    for (a, i, answer) in &answers {
        if *a == 9 {
            // A tag answer: each text's words and tags, as `Tagger` tags them alone.
            let expected = tagger.tag(&tag_texts(*i)).unwrap();
            let got: Vec<Vec<(String, String)>> = answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|words| {
                    words
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|w| {
                            (w["word"].as_str().unwrap().into(), w["tag"].as_str().unwrap().into())
                        })
                        .collect()
                })
                .collect();
            let want: Vec<Vec<(String, String)>> = expected
                .iter()
                .map(|ws| ws.iter().map(|w| (w.word.clone(), w.tag.clone())).collect())
                .collect();
            assert_eq!(got, want, "tag request {i}");
            continue;
        }
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
    assert_eq!(rows, 64);
    assert!(forwards < 32, "{forwards} forwards for 32 requests: nothing was batched");

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
        (json!({"adapter": "cities", "inputs": ["x"]}).to_string(), 422, "wrong_task"),
        (json!({"adapter": "sentiment", "inputs": [long_text()]}).to_string(), 400, "too_long"),
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
    // The tag and generate endpoints refuse what they cannot do.
    for (endpoint, body, status, kind) in [
        ("tag", json!({"adapter": "sentiment", "inputs": ["x"]}), 422, "wrong_task"),
        ("tag", json!({"adapter": "cities", "inputs": [long_text()]}), 400, "too_long"),
        ("tag", json!({"adapter": "cities", "inputs": ["   "]}), 400, "bad_input"),
        ("generate", json!({"prompt": "the film"}), 422, "not_a_decoder"),
        ("generate", json!({"prompt": "x", "max_tokens": -1}), 400, "malformed_request"),
    ] {
        let (got, answer) = call("POST", &format!("{base}/v1/{endpoint}"), Some(&body.to_string()));
        assert_eq!(got, status, "{endpoint} {body}: {answer}");
        assert_eq!(answer["error"]["kind"].as_str(), Some(kind), "{answer}");
    }
    // A too-long text asked to be cut is cut as `ptune predict` cuts it.
    let body = json!({"adapter": "sentiment", "inputs": [long_text()], "truncate": true});
    let (status, answer) = call("POST", &classify, Some(&body.to_string()));
    assert_eq!(status, 200, "{answer}");
    let expected = alone[0].predict(&[long_text()]).unwrap();
    assert_eq!(answer["results"][0]["label"].as_str(), Some(expected[0].label.as_str()));
    let (status, answer) = call(
        "POST",
        &format!("{base}/v1/tag"),
        Some(&json!({"adapter": "cities", "inputs": [long_text()], "truncate": true}).to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let kept = answer["results"][0].as_array().unwrap().len();
    assert_eq!(kept, tagger.tag(&[long_text()]).unwrap()[0].len());

    let (_, answer) =
        call("POST", &classify, Some(&json!({"adapter": "nope", "inputs": ["x"]}).to_string()));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("nope") && message.contains("sentiment"), "{message}");

    // A third adapter appears on reload, without a restart.
    let third = train(&d, "c", MethodKind::PTuningV2, Pooling::Pooler, ["up", "down"]);
    copy_dir(&third.join("adapter"), &adapters.join("trend"));
    let (status, body) = call("POST", &format!("{base}/v1/adapters/reload"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["adapters"].as_array().unwrap().len(), 4, "{body}");
    let (status, answer) =
        call("POST", &classify, Some(&json!({"adapter": "trend", "inputs": texts(0)}).to_string()));
    assert_eq!(status, 200, "{answer}");
    let expected = TextClassifier::<NdArray>::from_run(&third).unwrap().predict(&texts(0)).unwrap();
    assert_eq!(answer["results"][0]["label"].as_str(), Some(expected[0].label.as_str()));

    let (status, text) = call("GET", &format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(
        text.contains("ptune_requests_total{endpoint=\"classify\",status=\"200\"} 26"),
        "{text}"
    );
    assert!(text.contains("ptune_requests_total{endpoint=\"tag\",status=\"200\"} 9"), "{text}");
    assert!(text.contains("ptune_batch_size_bucket"), "{text}");
    assert!(text.contains("ptune_request_seconds_count"), "{text}");
    assert!(text.contains("ptune_queue_seconds_bucket"), "{text}");
    // Mutated request bodies: every answer is JSON, success or a 4xx; the server lives on.
    let classify_seeds = [
        json!({"adapter": "sentiment", "inputs": ["the film was good", "a dull story"]}),
        json!({"adapter": "quality", "inputs": ["fine"], "truncate": true}),
    ];
    let tag_seeds = [
        json!({"adapter": "cities", "inputs": ["we went to rome today."], "truncate": false}),
        json!({"adapter": "cities", "inputs": ["paris", "london, rome"]}),
    ];
    for (endpoint, seeds, seed) in [("classify", &classify_seeds, 11), ("tag", &tag_seeds, 12)] {
        let tally = fuzz_bodies(&format!("{base}/v1/{endpoint}"), seeds, 200, seed);
        tally.check(&format!("/v1/{endpoint} bodies"));
    }
    let (status, _) = call("GET", &format!("{base}/health"), None);
    assert_eq!(status, 200);
    server.stop();

    // A queue of one: a burst of concurrent requests gets 429 for what does not fit, never a
    // wrong answer; every request is either answered or refused as busy.
    let mut config = ServeConfig::new(tiny_bert(), &adapters);
    config.queue = 1;
    config.max_wait = Duration::from_millis(0);
    let server = Server::start::<NdArray>(config, "127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/classify", server.addr());
    let many: Vec<String> = (0..32).flat_map(texts).collect();
    let expected = alone[0].predict(&many).unwrap();
    let mut busy = 0;
    for _round in 0..5 {
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..24)
                .map(|_| {
                    let (url, many, expected) = (&url, &many, &expected);
                    s.spawn(move || {
                        let body = json!({"adapter": "sentiment", "inputs": many});
                        let (status, answer) = call("POST", url, Some(&body.to_string()));
                        match status {
                            200 => {
                                let labels: Vec<&str> = answer["results"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .map(|r| r["label"].as_str().unwrap())
                                    .collect();
                                let want: Vec<&str> =
                                    expected.iter().map(|p| p.label.as_str()).collect();
                                assert_eq!(labels, want);
                            }
                            429 => assert_eq!(answer["error"]["kind"].as_str(), Some("busy")),
                            other => panic!("status {other}: {answer}"),
                        }
                        status
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(statuses.contains(&200), "{statuses:?}");
        busy += statuses.iter().filter(|&&s| s == 429).count();
        if busy > 0 {
            break;
        }
    }
    assert!(busy > 0, "a queue of one never filled under 24 concurrent clients");
    server.stop();
}

/// A text longer than the tiny BERT's 40 positions.
fn long_text() -> String {
    ["we went to rome today"; 12].join(" ")
}

fn runs_name(a: usize) -> &'static str {
    ["sentiment", "quality"][a]
}
