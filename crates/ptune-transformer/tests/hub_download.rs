//! Hub models downloaded through `hf-hub` (feature `hub-download`) from a local server that answers
//! as the Hub does (`/<org>/<name>/resolve/<rev>/<file>`, ranged GETs, `ETag` and
//! `X-Repo-Commit` headers), serving the tiny fixtures: the files land in the HF cache layout,
//! load, and are not fetched twice; a missing repository or no network is a clear error.

#![cfg(feature = "hub-download")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use burn::backend::NdArray;
use ptune_transformer::hub::{download_in, resolve_in};
use ptune_transformer::{load_model, TransformerError};

const COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-hubdl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stand-in for the Hub: `org/<fixture>` is the fixture folder. Returns its endpoint and the
/// count of file requests answered.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let served = served.clone();
            std::thread::spawn(move || answer(stream, &served));
        }
    });
    (endpoint, count)
}

fn answer(mut stream: TcpStream, served: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    reader.read_line(&mut request).unwrap();
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range: bytes=") {
            let (a, b) = r.trim().split_once('-').unwrap();
            range = Some((a.parse().unwrap(), b.parse().ok()));
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    // /org/<fixture>/resolve/main/<file>
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let file = match parts.as_slice() {
        ["org", repo, "resolve", "main", file] => {
            let p = fixtures_dir().join(repo).join(file);
            p.is_file().then_some(p)
        }
        _ => None,
    };
    let Some(file) = file else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    served.fetch_add(1, Ordering::SeqCst);
    let bytes = std::fs::read(&file).unwrap();
    let (start, end) = match range {
        Some((a, b)) => (a, b.unwrap_or(bytes.len() - 1).min(bytes.len() - 1)),
        None => (0, bytes.len() - 1),
    };
    // The ETag names the blob: any stable digest of the content serves.
    let etag = bytes
        .iter()
        .fold(0xcbf29ce484222325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let body = &bytes[start..=end];
    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
         ETag: \"{etag:016x}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
        body.len(),
        bytes.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
}

fn same_files(fixture: &str, snapshot: &Path) {
    for entry in std::fs::read_dir(fixtures_dir().join(fixture)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "generation_config.json" {
            continue; // not a file ptune asks for
        }
        assert_eq!(
            std::fs::read(snapshot.join(name)).unwrap(),
            std::fs::read(&path).unwrap(),
            "{fixture}/{}",
            name.to_string_lossy()
        );
    }
}

#[test]
fn a_hub_model_downloads_into_the_cache_layout_once() {
    let (endpoint, count) = serve();
    let root = scratch("once");
    let dir = download_in("org/tiny-bert", &endpoint, &root).unwrap();
    assert_eq!(dir, root.join("models--org--tiny-bert").join("snapshots").join(COMMIT));
    same_files("tiny-bert", &dir);
    // The cache as huggingface_hub reads it: refs/main names the commit.
    assert_eq!(resolve_in("org/tiny-bert", std::slice::from_ref(&root)).unwrap(), dir);
    let loaded = load_model::<NdArray>(&dir, &Default::default()).unwrap();
    assert!(loaded.tokenizer.is_some());
    // Files in the cache are not fetched again.
    let before = count.load(Ordering::SeqCst);
    assert_eq!(download_in("org/tiny-bert", &endpoint, &root).unwrap(), dir);
    assert_eq!(count.load(Ordering::SeqCst), before);
}

#[test]
fn sharded_weights_download_every_shard_the_index_names() {
    let (endpoint, _) = serve();
    let root = scratch("shards");
    let dir = download_in("org/tiny-llama3", &endpoint, &root).unwrap();
    same_files("tiny-llama3", &dir);
    load_model::<NdArray>(&dir, &Default::default()).unwrap();
}

#[test]
fn a_missing_repository_or_no_network_is_a_clear_error() {
    let (endpoint, _) = serve();
    let root = scratch("missing");
    let e = download_in("org/no-such-model", &endpoint, &root).unwrap_err();
    assert!(matches!(&e, TransformerError::Download { file, .. } if file == "config.json"), "{e}");
    assert!(e.to_string().contains("no such repository"), "{e}");
    // Nothing listens on a port just released.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = download_in("org/tiny-bert", &closed, &root).unwrap_err();
    assert!(matches!(e, TransformerError::Download { .. }), "{e}");
    assert!(e.to_string().contains("org/tiny-bert"), "{e}");
}

/// The whole path a user takes: `load_model("org/name")` with `HF_ENDPOINT` and `HF_HUB_CACHE`
/// set, then offline (`HF_HUB_OFFLINE`) for a model not in the cache. (The one test here that
/// sets the environment.)
#[test]
fn load_model_downloads_a_hub_id_and_honours_offline() {
    let (endpoint, _) = serve();
    let root = scratch("env");
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HUB_CACHE", &root);
    let loaded = load_model::<NdArray>(Path::new("org/tiny-bert"), &Default::default()).unwrap();
    assert!(loaded.tokenizer.is_some());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let Err(e) = load_model::<NdArray>(Path::new("org/tiny-llama3"), &Default::default()) else {
        panic!("offline, a model not in the cache loaded");
    };
    let e = e.to_string();
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
    // Offline, the cached model still loads.
    load_model::<NdArray>(Path::new("org/tiny-bert"), &Default::default()).unwrap();
}
