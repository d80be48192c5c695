//! Writing run files so that a kill at any moment leaves either the old or the new version, never
//! a mix: single files through a temporary file and a rename, folders (adapters, training states)
//! through a temporary folder and two renames, with a recovery step for a kill between the two.
//! Folders carry `checksums.sha256` (sha256sum's format), checked when they are read back.

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{adapter_err, PromptError, Result};

/// The checksum file of a folder written by [`replace_dir`].
pub const CHECKSUMS: &str = "checksums.sha256";

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| adapter_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| adapter_err(path, e))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}.{suffix}"))
}

/// Finishes a replacement a kill interrupted: if `dir` is missing but its previous version is
/// still beside it (killed between the two renames of [`replace_dir`]), that version is put back.
pub fn recover_dir(dir: &Path) -> Result<()> {
    let old = sibling(dir, "old");
    if !dir.exists() && old.is_dir() {
        std::fs::rename(&old, dir).map_err(|e| adapter_err(dir, e))?;
    }
    Ok(())
}

/// Replaces the folder `dir` with what `write` puts into a fresh temporary folder, plus a
/// `checksums.sha256` of every file in it. Readers see the old folder or the new one.
pub fn replace_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    recover_dir(dir)?;
    let tmp = sibling(dir, "partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| adapter_err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| adapter_err(&tmp, e))?;
    write(&tmp)?;
    let mut sums = String::new();
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .map_err(|e| adapter_err(&tmp, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(tmp.join(&name)).map_err(|e| adapter_err(&tmp, e))?;
        let _ = writeln!(sums, "{}  {name}", hex(&Sha256::digest(&bytes)));
    }
    std::fs::write(tmp.join(CHECKSUMS), sums).map_err(|e| adapter_err(&tmp, e))?;
    let old = sibling(dir, "old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| adapter_err(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| adapter_err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| adapter_err(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| adapter_err(&old, e))?;
    }
    Ok(())
}

/// Checks the files of `dir` against its `checksums.sha256`, if it has one (folders written by
/// PEFT have none). A mismatch or a listed file that is missing is an error naming the file.
pub fn verify_dir(dir: &Path) -> Result<()> {
    let path = dir.join(CHECKSUMS);
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| adapter_err(&path, e))?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| adapter_err(&path, format!("malformed line `{line}`")))?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(adapter_err(&path, format!("`{name}` is not a file of this folder")));
        }
        let file = dir.join(name);
        let bytes = std::fs::read(&file).map_err(|e| adapter_err(&file, e))?;
        if hex(&Sha256::digest(&bytes)) != sum {
            return Err(PromptError::Adapter {
                path: file,
                message: "checksum mismatch: the file was changed or only partly written".into(),
            });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_folders_verify_and_a_changed_file_is_caught() {
        let dir = std::env::temp_dir().join(format!("ptune-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        replace_dir(&dir, |d| write_atomic(&d.join("a.bin"), b"one")).unwrap();
        verify_dir(&dir).unwrap();
        replace_dir(&dir, |d| write_atomic(&d.join("a.bin"), b"two")).unwrap();
        assert_eq!(std::fs::read(dir.join("a.bin")).unwrap(), b"two");
        verify_dir(&dir).unwrap();
        std::fs::write(dir.join("a.bin"), b"tw").unwrap();
        let e = verify_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch") && e.contains("a.bin"), "{e}");

        // Killed between the two renames: the previous folder is put back.
        let old = sibling(&dir, "old");
        std::fs::rename(&dir, &old).unwrap();
        recover_dir(&dir).unwrap();
        assert!(dir.join("a.bin").is_file() && !old.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
