//! Wrong, truncated or mismatched model files give typed errors naming the problem, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use burn::backend::NdArray;
use common::fixtures_dir;
use ptune_transformer::{load_model, TransformerError};

type B = NdArray;

/// A temp copy of the tiny BERT folder, with `edit` applied.
fn broken_copy(tag: &str, edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures_dir().join("tiny-bert").join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    dir
}

fn load_err(dir: &Path) -> TransformerError {
    load_model::<B>(dir, &Default::default()).expect_err("must fail")
}

#[test]
fn truncated_safetensors_is_corrupt_weights() {
    let dir = broken_copy("trunc", |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    let err = load_err(&dir);
    assert!(matches!(err, TransformerError::CorruptWeights { .. }), "{err}");
}

#[test]
fn garbage_file_is_corrupt_weights() {
    let dir = broken_copy("garbage", |d| {
        std::fs::write(d.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{}").unwrap()
    });
    assert!(matches!(load_err(&dir), TransformerError::CorruptWeights { .. }));
}

#[test]
fn config_disagreeing_with_weights_names_tensor_and_shapes() {
    let dir = broken_copy("shape", |d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
        std::fs::write(&p, text).unwrap();
    });
    match load_err(&dir) {
        TransformerError::ShapeMismatch { name, expected, found } => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!((expected, found), (vec![48, 32], vec![64, 32]));
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = broken_copy("missing", |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| !n.contains("layer.1.output.dense.bias"))
            .collect();
        safetensors::serialize_to_file(kept, None, &p).unwrap();
    });
    match load_err(&dir) {
        TransformerError::MissingTensor { name, .. } => {
            assert_eq!(name, "encoder.layer.1.output.dense.bias")
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn unknown_architecture_and_missing_paths() {
    let dir = broken_copy("arch", |d| {
        std::fs::write(d.join("config.json"), r#"{"model_type": "t5", "vocab_size": 3}"#).unwrap()
    });
    assert!(matches!(load_err(&dir), TransformerError::UnknownArchitecture(a) if a == "t5"));
    let err = load_err(Path::new("/nonexistent/model"));
    assert!(err.to_string().contains("no such file or folder"), "{err}");
}

#[test]
fn truncated_gguf_is_corrupt_weights() {
    let p = std::env::temp_dir().join(format!("ptune-bad-{}.gguf", std::process::id()));
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(5u64.to_le_bytes()); // 5 metadata entries announced, none present
    std::fs::write(&p, bytes).unwrap();
    let err = load_err(&p);
    assert!(matches!(err, TransformerError::CorruptWeights { .. }), "{err}");
}

#[test]
fn out_of_vocabulary_ids_are_rejected() {
    let err = ptune_transformer::check_ids(&[3, 120], 120).unwrap_err();
    assert!(err.to_string().contains("token id 120"), "{err}");
}

#[test]
fn nan_in_a_weight_names_the_tensor() {
    let dir = broken_copy("nan", |d| {
        let p = d.join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        // The data follows the 8-byte length and the JSON header; poison the last f32 of the file.
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&p, bytes).unwrap();
    });
    match load_err(&dir) {
        TransformerError::NonFiniteWeight { name, value, .. } => {
            assert!(value.is_nan());
            assert!(!name.is_empty());
        }
        other => panic!("expected NonFiniteWeight, got {other}"),
    }
}
