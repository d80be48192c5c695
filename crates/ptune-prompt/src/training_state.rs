//! Resumable training state, which PEFT lacks: the full trainable module (encoder weights — not only
//! the materialized table — and task head, with their parameter ids), the optimizer state (AdamW
//! moments …) and the step, written with Burn's own recorder into one folder:
//!
//! - `trainable.mpk`: the module record (`NamedMpkFileRecorder`, f64: lossless for f32 and f64 backends);
//! - `optimizer.mpk`: the optimizer record, keyed by parameter id;
//! - `training_state.json`: step, epoch and free-form metadata.
//!
//! The folder is written beside the target and renamed into place, with a `checksums.sha256` that
//! loading checks, so a run killed while saving leaves the previous state intact and a damaged
//! state is an error, not a silent restart ([`crate::files`]).

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use ptune_transformer::FrozenOps;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{DoublePrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{adapter_err, Result};

/// Counters and metadata saved with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingProgress {
    /// Optimizer steps taken.
    pub step: usize,
    /// Completed epochs.
    pub epoch: usize,
    /// Anything the trainer wants back on resume (seed, best metric, …).
    pub extra: serde_json::Value,
}

fn recorder() -> NamedMpkFileRecorder<DoublePrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// Saves module, optimizer and progress into `dir` (atomically replaced).
pub fn save_training_state<B, M, O>(
    dir: &Path,
    module: &M,
    optimizer: &O,
    progress: &TrainingProgress,
) -> Result<()>
where
    B: AutodiffBackend + FrozenOps,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    crate::files::replace_dir(dir, |tmp| {
        recorder()
            .record(module.clone().into_record(), tmp.join("trainable"))
            .map_err(|e| adapter_err(tmp, e))?;
        recorder()
            .record(optimizer.to_record(), tmp.join("optimizer"))
            .map_err(|e| adapter_err(tmp, e))?;
        let json = serde_json::to_string_pretty(progress).map_err(|e| adapter_err(tmp, e))?;
        std::fs::write(tmp.join("training_state.json"), json).map_err(|e| adapter_err(tmp, e))
    })
}

/// Whether `dir` holds a saved state, after finishing a replacement a kill interrupted.
pub fn has_training_state(dir: &Path) -> Result<bool> {
    crate::files::recover_dir(dir)?;
    Ok(dir.join("training_state.json").is_file())
}

/// Loads a state saved by [`save_training_state`] into a module and optimizer of the same shape.
pub fn load_training_state<B, M, O>(
    dir: &Path,
    module: M,
    optimizer: O,
    device: &B::Device,
) -> Result<(M, O, TrainingProgress)>
where
    B: AutodiffBackend + FrozenOps,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    crate::files::recover_dir(dir)?;
    crate::files::verify_dir(dir)?;
    let record = guarded(dir, "trainable.mpk", || recorder().load(dir.join("trainable"), device))?
        .map_err(|e| adapter_err(dir, e))?;
    let module = guarded(dir, "trainable.mpk", || module.load_record(record))?;
    let optim_record =
        guarded(dir, "optimizer.mpk", || recorder().load(dir.join("optimizer"), device))?
            .map_err(|e| adapter_err(dir, e))?;
    let optimizer = guarded(dir, "optimizer.mpk", || optimizer.load_record(optim_record))?;
    let path = dir.join("training_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| adapter_err(&path, e))?;
    let progress = serde_json::from_str(&text).map_err(|e| adapter_err(&path, e))?;
    Ok((module, optimizer, progress))
}

/// Runs one step of Burn's record loading, turning a panic into an error naming `file`. Burn's
/// records panic on some malformed contents instead of returning an error (a parameter id that is
/// not base32, for one: `ParamId::deserialize`), and a state file is user input.
fn guarded<T>(dir: &Path, file: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unreadable contents".into());
        adapter_err(&dir.join(file), format!("corrupt training state: {why}"))
    })
}
