//! Shared by the `cargo fuzz` targets: a scratch folder per process, and copies of the tiny test
//! fixtures the targets mutate one file of.

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch folder of this process, holding a copy of every file of `fixture` (a folder under
/// the repository root) but `replaced`, which is written with `bytes`.
pub fn folder_with(fixture: &str, replaced: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-cargo-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let src: PathBuf = root().join(fixture);
    if let (false, Ok(entries)) = (fixture.is_empty(), std::fs::read_dir(&src)) {
        for entry in entries.flatten() {
            let _ = std::fs::copy(entry.path(), dir.join(entry.file_name()));
        }
    }
    let _ = std::fs::write(dir.join(replaced), bytes);
    dir
}

/// `bytes` as the file `name`, alone in this process's scratch folder.
pub fn file_with(name: &str, bytes: &[u8]) -> PathBuf {
    folder_with("", name, bytes).join(name)
}
