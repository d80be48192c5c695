//! What the server tests share: a JSON client, adapter folders, and mutation fuzzing of request
//! bodies against a live server.

#![allow(dead_code)]

use std::path::Path;

use ptune_testkit::{mutate_bytes, mutate_json, Rng, Tally};
use serde_json::Value;

/// One request: the status and the body as JSON (or as a string when it is not JSON).
pub fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
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

/// `POST` of a JSON body.
pub fn post(url: &str, body: &Value) -> (u16, Value) {
    call("POST", url, Some(&body.to_string()))
}

/// Copies the files of a folder (an adapter folder) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Sends `n` seeded mutants of the valid bodies `seeds` (numbers set to extremes, characters
/// deleted, keys duplicated, truncation, bit flips and invalid UTF-8) to `url`. Every answer must
/// be a JSON success or a JSON 4xx naming its kind: a 5xx, a dropped connection or a body that is
/// not the API's JSON counts as a panic of the server. Returns the tally (checked by the caller).
pub fn fuzz_bodies(url: &str, seeds: &[Value], n: usize, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..n {
        let mut value = seeds[i % seeds.len()].clone();
        let structured = rng.below(2) == 0;
        if structured {
            for _ in 0..1 + rng.below(2) {
                mutate_value(&mut value, &mut rng);
            }
        }
        let mut body = serde_json::to_string_pretty(&value).unwrap().into_bytes();
        for _ in 0..if structured { 0 } else { 1 + rng.below(3) } {
            body = if rng.below(5) == 0 {
                mutate_bytes(&body, &mut rng)
            } else {
                mutate_json(&String::from_utf8_lossy(&body), &mut rng).into_bytes()
            };
        }
        tally.run(&format!("mutant {i}"), || {
            let response =
                ureq::post(url).set("Content-Type", "application/json").send_bytes(&body);
            let (status, text) = match response {
                Ok(r) => (r.status(), r.into_string().unwrap()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
                Err(e) => panic!("transport: {e} for {}", String::from_utf8_lossy(&body)),
            };
            if status == 200 && (text.starts_with("data:") || text.starts_with("event:")) {
                return true; // a streamed answer
            }
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("status {status}, not JSON: {text:.200}"));
            match status {
                200 => true,
                400 | 404 | 413 | 422 | 429 => {
                    assert!(json["error"]["kind"].is_string(), "{json}");
                    false
                }
                other => panic!("status {other}: {json} for {}", String::from_utf8_lossy(&body)),
            }
        });
    }
    tally
}

/// Odd values a field may be set to: wrong types, extremes, unicode, empty and long texts.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => serde_json::json!(-1),
        2 => serde_json::json!(1e300),
        3 => serde_json::json!(u64::MAX),
        4 => serde_json::json!(0),
        5 => serde_json::json!(""),
        6 => serde_json::json!("\u{0}\u{202e}é漢字🙂\n\t"),
        7 => serde_json::json!("word ".repeat(200)),
        8 => serde_json::json!([]),
        9 => serde_json::json!(["", " ", "."]),
        10 => serde_json::json!(vec!["a"; 100]),
        11 => serde_json::json!({"nested": [1, {"x": null}]}),
        12 => serde_json::json!(true),
        _ => serde_json::json!(0.5),
    }
}

/// Sets a random field (or element) of `value` to an odd value, or removes or adds a field.
fn mutate_value(value: &mut Value, rng: &mut Rng) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[rng.below(keys.len())].clone();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}_x"), odd_value(rng));
                }
                2 | 3 => {
                    if let Some(v) = map.get_mut(&key) {
                        mutate_value(v, rng);
                    }
                }
                _ => {
                    map.insert(key, odd_value(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.below(2) == 0 => {
            let i = rng.below(items.len());
            mutate_value(&mut items[i], rng);
        }
        other => *other = odd_value(rng),
    }
}
