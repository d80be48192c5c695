//! Models named by Hub id resolve from a local HF cache laid out as `huggingface_hub` writes it
//! (built here from the tiny fixtures; no network).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ptune_transformer::hub::resolve_in;
use ptune_transformer::{load_model, TransformerError};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `root/models--org--name/{refs/main, snapshots/<commit>/…}` holding a copy of `fixture`.
fn cache_with(root: &Path, org: &str, name: &str, fixture: &str) -> PathBuf {
    let model = root.join(format!("models--{org}--{name}"));
    let snapshot = model.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(model.join("refs")).unwrap();
    std::fs::write(model.join("refs").join("main"), format!("{COMMIT}\n")).unwrap();
    for entry in std::fs::read_dir(fixtures_dir().join(fixture)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snapshot.join(path.file_name().unwrap())).unwrap();
    }
    snapshot
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn hub_ids_resolve_to_the_snapshot_refs_main_names() {
    let root = scratch("resolve");
    let snapshot = cache_with(&root, "org", "tiny-bert", "tiny-bert");
    let roots = [root.clone()];
    assert_eq!(resolve_in("org/tiny-bert", &roots).unwrap(), snapshot);
    assert_eq!(resolve_in(&format!("org/tiny-bert@{COMMIT}"), &roots).unwrap(), snapshot);
    // A branch ref of its own.
    let refs = root.join("models--org--tiny-bert").join("refs");
    std::fs::write(refs.join("v1"), COMMIT).unwrap();
    assert_eq!(resolve_in("org/tiny-bert@v1", &roots).unwrap(), snapshot);
    // Without refs/main, the one snapshot is used.
    std::fs::remove_file(refs.join("main")).unwrap();
    assert_eq!(resolve_in("org/tiny-bert", &roots).unwrap(), snapshot);
    // An existing path always wins.
    let path = fixtures_dir().join("tiny-llama");
    assert_eq!(resolve_in(path.to_str().unwrap(), &roots).unwrap(), path);
}

#[test]
fn a_missing_model_says_where_it_looked() {
    let root = scratch("missing");
    let roots = [root.clone()];
    let err = resolve_in("org/absent", &roots).unwrap_err();
    assert!(matches!(err, TransformerError::ModelNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("models--org--absent") && msg.contains("huggingface-cli download"),
        "{msg}"
    );
    // A ref pointing at a snapshot that is not there.
    let snapshot = cache_with(&root, "org", "broken", "tiny-bert");
    std::fs::remove_dir_all(&snapshot).unwrap();
    let msg = resolve_in("org/broken", &roots).unwrap_err().to_string();
    assert!(msg.contains("is missing"), "{msg}");
    // Unknown revision; a name that cannot be a Hub id.
    let msg = resolve_in("org/broken@nope", &roots).unwrap_err().to_string();
    assert!(msg.contains("revision `nope`"), "{msg}");
    let msg = resolve_in("no-such-folder", &roots).unwrap_err().to_string();
    assert!(msg.contains("no-such-folder: no such file or folder"), "{msg}");
    assert!(!msg.contains("huggingface-cli"), "{msg}");
}

#[test]
fn load_model_reads_hub_ids_through_hf_hub_cache() {
    // The only test of this binary that reads the environment.
    let root = scratch("load");
    cache_with(&root, "org", "tiny-llama3", "tiny-llama3");
    std::env::set_var("HF_HUB_CACHE", &root);
    let loaded =
        load_model::<burn::backend::NdArray>(Path::new("org/tiny-llama3"), &Default::default())
            .unwrap();
    assert!(loaded.weights_path.ends_with("model.safetensors.index.json"));
    assert_eq!(loaded.config.dims().num_layers, 2);
}

#[test]
fn a_bad_shard_index_is_an_error_naming_the_problem() {
    use ptune_transformer::loader::safetensors::SafetensorsSource;
    let dir = scratch("shards");
    for entry in std::fs::read_dir(fixtures_dir().join("tiny-llama3")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let index_path = dir.join("model.safetensors.index.json");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let with_map = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut index = index.clone();
        edit(index["weight_map"].as_object_mut().unwrap());
        std::fs::write(&index_path, index.to_string()).unwrap();
        SafetensorsSource::open_folder(&dir).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let msg = with_map(&|m| {
        m.insert("model.norm.weight".into(), "../model-00001-of-00004.safetensors".into());
    });
    assert!(msg.contains("is not a file name in the model folder"), "{msg}");
    let msg = with_map(&|m| {
        m.insert("model.norm.weight".into(), "model-00001-of-00004.safetensors".into());
    });
    assert!(msg.contains("which does not hold it"), "{msg}");
    let msg = with_map(&|m| {
        m.insert("model.norm.weight".into(), "model-00009-of-00004.safetensors".into());
    });
    assert!(msg.contains("model-00009-of-00004.safetensors"), "{msg}");
    let msg = with_map(&|m| m.clear());
    assert!(msg.contains("weight_map is empty"), "{msg}");
    std::fs::remove_file(&index_path).unwrap();
    let msg = SafetensorsSource::open_folder(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("neither model.safetensors nor model.safetensors.index.json"), "{msg}");
}
