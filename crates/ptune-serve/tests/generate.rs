//! Generation behind HTTP, on the tiny Llama (with the tiny BERT's tokenizer): adapters trained
//! here (Prompt Tuning and Prefix-Tuning) and the frozen model alone answer concurrent requests of
//! different prompt lengths, token limits and decodings (greedy, seeded sampling, beam search),
//! each equal to the same request run alone through `Generator` (what `ptune generate` uses),
//! while their decoding steps share one batch (continuous batching: requests join and leave
//! mid-flight); streamed answers (server-sent events) add up to the same text; bad requests get
//! a JSON 4xx; stopping the server finishes the requests in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::backend::{Autodiff, NdArray};
use ptune_prompt::MethodKind;
use ptune_serve::{ServeConfig, Server};
use ptune_train::generate::Decoding;
use ptune_train::inference::{GenerateOptions, Generator, TextClassifier};
use ptune_train::{Silent, TaskKind, TrainJob};
use serde_json::{json, Value};

mod common;
use common::{copy_dir, fuzz_bodies, post};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ptune-transformer/tests/fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ptune-serve-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny Llama with a tokenizer (the tiny BERT's 120-word WordPiece fits its 128 ids).
fn tiny_llama(at: &Path) -> String {
    let model = at.join("tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-llama").join(f), model.join(f)).unwrap();
    }
    std::fs::copy(fixtures().join("tiny-bert/tokenizer.json"), model.join("tokenizer.json"))
        .unwrap();
    model.display().to_string()
}

fn generation_file(at: &Path) -> String {
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let (a, b) = (["good", "bad", "fine"][i % 3], ["film", "story"][i % 2]);
            json!({"source": format!("the {b} was {a}"), "target": format!("a {a} {b}")})
                .to_string()
        })
        .collect();
    let path = at.join("pairs.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

fn train(model: &str, at: &Path, name: &str, method: MethodKind) -> PathBuf {
    let mut job = TrainJob::new(model, &generation_file(at));
    job.task = Some(TaskKind::Generate);
    job.method = Some(method);
    job.method_options.virtual_tokens =
        Some(if method == MethodKind::PromptTuning { 4 } else { 3 });
    job.max_len = Some(16);
    job.eval_sources = 2;
    job.max_new_tokens = 4;
    job.train.epochs = 1;
    job.train.batch_size = 8;
    job.train.lr = 5e-2;
    let out = at.join("runs").join(name);
    job.run::<Autodiff<NdArray>>(&out, false, &mut Silent).unwrap();
    out
}

/// Trains a cloze adapter (classification by the decoder's next word after a template).
fn train_cloze(model: &str, at: &Path) -> PathBuf {
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let (text, label) = if i % 2 == 0 {
                ("a great film", "positive")
            } else {
                ("a dull story", "negative")
            };
            json!({"text": text, "label": label}).to_string()
        })
        .collect();
    let data = at.join("opinions.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let mut job = TrainJob::new(model, &data.display().to_string());
    job.task = Some(TaskKind::Cloze);
    job.method = Some(MethodKind::PTuningV2);
    job.method_options.virtual_tokens = Some(2);
    job.cloze_template = Some("{text} it was".into());
    job.verbalizer = Some(vec!["bad".into(), "good".into()]);
    job.max_len = Some(16);
    job.train.epochs = 1;
    job.train.batch_size = 8;
    job.train.lr = 5e-2;
    let out = at.join("runs").join("cloze");
    job.run::<Autodiff<NdArray>>(&out, false, &mut Silent).unwrap();
    out
}

/// One request of the mix: adapter (index into the adapters, or none), prompt, options.
struct Case {
    adapter: Option<usize>,
    prompt: String,
    body: Value,
    options: GenerateOptions,
}

fn case(i: usize) -> Case {
    let adapter = [Some(0), Some(1), None][i % 3];
    let prompt = ["the film was", "a story", "the story was good and the film was bad", "fine"]
        [i % 4]
        .to_string();
    let max_tokens = 3 + (i * 5) % 11;
    let mut body = json!({"prompt": prompt, "max_tokens": max_tokens});
    if let Some(a) = adapter {
        body["adapter"] = json!(NAMES[a]);
    }
    let decoding = match i % 5 {
        3 => {
            body["decoding"] = json!("sample");
            body["seed"] = json!(i);
            body["top_k"] = json!(20);
            body["temperature"] = json!(0.8);
            Decoding::Sample { temperature: 0.8, top_k: Some(20), top_p: None, seed: i as u64 }
        }
        4 if i == 9 => {
            body["decoding"] = json!("beam");
            body["beams"] = json!(3);
            Decoding::Beam { width: 3, length_penalty: 1.0 }
        }
        _ => Decoding::Greedy,
    };
    if i % 4 == 1 {
        body["repetition_penalty"] = json!(1.3);
    }
    let repetition_penalty = if i % 4 == 1 { 1.3 } else { 1.0 };
    let options = GenerateOptions {
        max_new_tokens: max_tokens,
        decoding,
        stop: Vec::new(),
        repetition_penalty,
    };
    Case { adapter, prompt, body, options }
}

const NAMES: [&str; 2] = ["prompted", "prefixed"];

#[test]
fn generations_share_decoding_steps_and_each_equals_its_run_alone() {
    let d = scratch("mix");
    let model = tiny_llama(&d);
    let runs = [
        train(&model, &d, "a", MethodKind::PromptTuning),
        train(&model, &d, "b", MethodKind::PrefixTuning),
    ];
    let adapters = d.join("adapters");
    for (name, run) in NAMES.iter().zip(&runs) {
        copy_dir(&run.join("adapter"), &adapters.join(name));
    }
    let cloze = train_cloze(&model, &d);
    copy_dir(&cloze.join("adapter"), &adapters.join("opinion"));
    let mut config = ServeConfig::new(&model, &adapters);
    config.max_wait = Duration::from_millis(20);
    config.max_new_tokens = 60;
    let server = Server::start::<NdArray>(config, "127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.addr());

    let alone: Vec<Generator<NdArray>> =
        runs.iter().map(|r| Generator::from_run(r).unwrap()).collect();
    let bare = Generator::<NdArray>::from_model(&model).unwrap();
    let expected = |c: &Case| {
        let g = c.adapter.map_or(&bare, |a| &alone[a]);
        g.generate(&c.prompt, &c.options).unwrap_or_else(|e| panic!("{}: {e}", c.body))
    };

    // 12 clients, 2 requests each, started a little apart: rows join and leave the batch while
    // others decode.
    let answers: Vec<(usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|client| {
                let base = base.clone();
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(3 * client as u64));
                    (0..2)
                        .map(|k| {
                            let i = client * 2 + k;
                            let (status, answer) =
                                post(&format!("{base}/v1/generate"), &case(i).body);
                            assert_eq!(status, 200, "case {i}: {answer}");
                            (i, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 24);
    for (i, answer) in &answers {
        let c = case(*i);
        let want = expected(&c);
        assert_eq!(answer["text"].as_str(), Some(want.as_str()), "case {i}: {}", c.body);
        let adapter = c.adapter.map(|a| NAMES[a]);
        assert_eq!(answer["adapter"].as_str(), adapter, "case {i}");
        let tokens = answer["tokens"].as_u64().unwrap() as usize;
        assert!(tokens <= c.options.max_new_tokens, "case {i}: {answer}");
        let reason = answer["finish_reason"].as_str().unwrap();
        assert!(["eos", "stop", "length"].contains(&reason), "{answer}");
    }
    let (steps, rows) = server.decode_steps();
    assert!(rows > steps, "{rows} rows in {steps} steps: generations never shared a step");

    // A cloze adapter on the same decoder classifies through /v1/classify, as `TextClassifier`
    // does alone.
    let texts = ["a great film", "the story was dull", "good"];
    let (status, answer) =
        post(&format!("{base}/v1/classify"), &json!({"adapter": "opinion", "inputs": texts}));
    assert_eq!(status, 200, "{answer}");
    let classified = TextClassifier::<NdArray>::from_run(&cloze).unwrap().predict(&texts).unwrap();
    for (got, want) in answer["results"].as_array().unwrap().iter().zip(&classified) {
        assert_eq!(got["label"].as_str(), Some(want.label.as_str()));
        for (g, w) in got["scores"].as_array().unwrap().iter().zip(&want.scores) {
            assert!((g.as_f64().unwrap() as f32 - w).abs() < 1e-5, "{got} vs {want:?}");
        }
    }
    let (status, answer) =
        post(&format!("{base}/v1/generate"), &json!({"adapter": "opinion", "prompt": "x"}));
    assert_eq!((status, answer["error"]["kind"].as_str()), (422, Some("wrong_task")), "{answer}");

    // Streaming: server-sent events whose pieces add up to the text of the `done` event, which
    // is the text alone.
    for i in [0, 1, 2, 3] {
        let mut c = case(i);
        c.body["stream"] = json!(true);
        c.body["stop"] = json!(["was"]);
        c.options.stop = vec!["was".into()];
        let response = ureq::post(&format!("{base}/v1/generate"))
            .set("Content-Type", "application/json")
            .send_string(&c.body.to_string())
            .unwrap();
        assert_eq!(response.content_type(), "text/event-stream");
        let mut pieces = String::new();
        let mut done = None;
        let mut event = String::new();
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line.unwrap();
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(data).unwrap();
                match event.as_str() {
                    "" => pieces.push_str(data["text"].as_str().unwrap()),
                    "done" => done = Some(data),
                    other => panic!("event {other}: {data}"),
                }
            } else if line.is_empty() {
                event.clear();
            }
        }
        let done = done.expect("a done event");
        let want = expected(&c);
        assert_eq!(done["text"].as_str(), Some(want.as_str()), "case {i}");
        assert_eq!(pieces.trim(), want, "case {i}: streamed pieces");
    }

    // Bad requests: a JSON error naming the problem.
    let url = format!("{base}/v1/generate");
    for (body, status, kind) in [
        (json!({"adapter": "nope", "prompt": "x"}), 404, "unknown_adapter"),
        (json!({"prompt": "x", "max_tokens": 61}), 400, "bad_input"),
        (
            json!({"prompt": "the film was good", "max_tokens": 58, "adapter": "prompted"}),
            400,
            "too_long",
        ),
        (json!({"prompt": "x", "decoding": "sample", "temperature": 0.0}), 400, "bad_input"),
        (json!({"prompt": "x", "decoding": "nucleus"}), 400, "malformed_request"),
        (json!({"prompt": "x", "stream": true, "adapter": "nope"}), 404, "unknown_adapter"),
        (json!({"prompt": "   "}), 400, "bad_input"),
    ] {
        let (got, answer) = post(&url, &body);
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["kind"].as_str(), Some(kind), "{body}: {answer}");
    }

    // Mutated request bodies: every answer is JSON (or a stream), success or a 4xx.
    let seeds = [
        json!({"adapter": "prompted", "prompt": "the film was", "max_tokens": 4}),
        json!({"adapter": "prefixed", "prompt": "a story", "max_tokens": 3, "decoding": "sample",
               "seed": 3, "top_p": 0.9, "stop": ["was"], "repetition_penalty": 1.2}),
        json!({"adapter": null, "prompt": "fine", "max_tokens": 2, "decoding": "beam", "beams": 2}),
    ];
    fuzz_bodies(&url, &seeds, 200, 13).check("/v1/generate bodies");

    // Stopping finishes the requests in flight.
    let long = json!({"prompt": "the film was", "max_tokens": 40, "adapter": "prefixed"});
    let want = expected(&Case {
        adapter: Some(1),
        prompt: "the film was".into(),
        body: long.clone(),
        options: GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() },
    });
    let addr = server.addr();
    let in_flight = std::thread::spawn(move || post(&format!("http://{addr}/v1/generate"), &long));
    std::thread::sleep(Duration::from_millis(100));
    server.stop();
    let (status, answer) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["text"].as_str(), Some(want.as_str()));
    assert!(ureq::get(&format!("http://{addr}/health")).call().is_err(), "still listening");
}
