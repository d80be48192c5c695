//! Models named by Hugging Face Hub id (`sentence-transformers/all-MiniLM-L6-v2`,
//! `HuggingFaceTB/SmolLM2-135M`), found in the local HF cache as `huggingface_hub` lays it out:
//!
//! ```text
//! $HF_HUB_CACHE (or $HF_HOME/hub, or $XDG_CACHE_HOME/huggingface/hub, or ~/.cache/huggingface/hub)
//! └── models--<org>--<name>/
//!     ├── refs/main              the commit hash the `main` branch pointed at when downloaded
//!     └── snapshots/<commit>/    the files of that commit (config.json, model.safetensors, …)
//! ```
//!
//! `org/name@rev` picks a branch or tag (through `refs/<rev>`) or a commit hash. A name that is an
//! existing path is always the path. Without the `hub-download` cargo feature nothing here touches
//! the network: a model that is not in the cache is an error that says where it looked and how to
//! download it. With it, such a model is downloaded through the `hf-hub` crate into the first cache
//! folder, in the same layout (from `$HF_ENDPOINT`, default `https://huggingface.co`; never when
//! `HF_HUB_OFFLINE` is set): `config.json`, the weights (`model.safetensors`, or the index and every
//! shard it names) and `tokenizer.json` where the repository has one.

use std::path::{Path, PathBuf};

use crate::error::{Result, TransformerError};

/// The HF hub cache folders, in the order `huggingface_hub` picks them (the first set variable
/// wins; all are listed so an error can name each).
pub fn cache_roots() -> Vec<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE") {
        return vec![p];
    }
    if let Some(p) = var("HF_HOME") {
        return vec![p.join("hub")];
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return vec![p.join("huggingface").join("hub")];
    }
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .map(|h| vec![h.join(".cache").join("huggingface").join("hub")])
        .unwrap_or_default()
}

/// A Hub model id split into `(org, name, revision)`, or `None` when `name` cannot be one (an
/// absolute or relative path, more than one `/`, characters the Hub does not allow).
pub fn parse_hub_id(name: &str) -> Option<(&str, &str, &str)> {
    let (id, rev) = match name.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (name, "main"),
    };
    let (org, repo) = id.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && !s.starts_with('-')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let rev_ok = !rev.is_empty()
        && !rev.starts_with('.')
        && rev.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (ok(org) && ok(repo) && rev_ok).then_some((org, repo, rev))
}

/// Where `org/name[@rev]` lies in one cache root, or why it does not.
fn snapshot_in(
    root: &Path,
    org: &str,
    repo: &str,
    rev: &str,
) -> std::result::Result<PathBuf, String> {
    let model = root.join(format!("models--{org}--{repo}"));
    if !model.is_dir() {
        return Err(format!("{} does not exist", model.display()));
    }
    let snapshots = model.join("snapshots");
    let refs = model.join("refs").join(rev);
    let commit = if refs.is_file() {
        std::fs::read_to_string(&refs)
            .map_err(|e| format!("cannot read {}: {e}", refs.display()))?
            .trim()
            .to_string()
    } else if snapshots.join(rev).is_dir() {
        rev.to_string()
    } else if rev == "main" {
        // A cache filled by copying snapshots only: use the one snapshot if there is exactly one.
        let found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .map_err(|e| format!("cannot read {}: {e}", snapshots.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        match found.as_slice() {
            [one] => return Ok(one.clone()),
            [] => return Err(format!("{} holds no snapshot", snapshots.display())),
            _ => {
                return Err(format!(
                    "{} holds {} snapshots and {} is missing: name one as {org}/{repo}@<commit>",
                    snapshots.display(),
                    found.len(),
                    refs.display()
                ))
            }
        }
    } else {
        return Err(format!(
            "revision `{rev}` is neither in {} nor a snapshot under {}",
            model.join("refs").display(),
            snapshots.display()
        ));
    };
    if parse_hub_id(&format!("a/b@{commit}")).is_none() {
        return Err(format!("{} holds `{commit}`, not a commit hash", refs.display()));
    }
    let dir = snapshots.join(&commit);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} points at {commit}, but {} is missing", refs.display(), dir.display()))
    }
}

/// The model folder or file `name` stands for: the path itself when it exists, else the snapshot
/// of a Hub id in the local HF cache.
///
/// # Errors
/// [`TransformerError::ModelNotFound`] naming every place looked in, when `name` is neither an
/// existing path nor a cached Hub id.
pub fn resolve_model_path(name: &str) -> Result<PathBuf> {
    resolve_in(name, &cache_roots())
}

/// [`resolve_model_path`] with the HF cache folders given.
pub fn resolve_in(name: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let not_found = |looked: Vec<String>| TransformerError::ModelNotFound {
        name: name.to_string(),
        looked: looked.join("; "),
    };
    let missing = format!("{}: no such file or folder", path.display());
    let Some((org, repo, rev)) = parse_hub_id(name) else {
        return Err(not_found(vec![missing]));
    };
    let mut looked = vec![missing];
    if roots.is_empty() {
        looked.push("no HF cache folder (set HF_HOME or HF_HUB_CACHE)".into());
    }
    for root in roots {
        match snapshot_in(root, org, repo, rev) {
            Ok(dir) => return Ok(dir),
            Err(why) => looked.push(why),
        }
    }
    #[cfg(feature = "hub-download")]
    {
        let offline = std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0");
        match roots.first() {
            Some(root) if !offline => {
                let endpoint = std::env::var("HF_ENDPOINT")
                    .ok()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
                match download_in(name, &endpoint, root) {
                    Ok(dir) => return Ok(dir),
                    Err(e) => looked.push(format!("downloading from {endpoint}: {e}")),
                }
            }
            Some(_) => looked.push("HF_HUB_OFFLINE is set: not downloading".into()),
            None => {}
        }
    }
    let how = if cfg!(feature = "hub-download") {
        "download it (`huggingface-cli download {id}`) where a network exists, or pass a model folder"
    } else {
        "download it first (`huggingface-cli download {id}`, or build ptune with the `hub-download` \
         feature to let it download), or pass a model folder"
    };
    looked.push(how.replace("{id}", &format!("{org}/{repo}")));
    Err(not_found(looked))
}

/// The Hub's address when `$HF_ENDPOINT` is not set.
#[cfg(feature = "hub-download")]
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Downloads the Hub model `org/name[@rev]` from `endpoint` into the HF cache folder `root` (the
/// layout `huggingface_hub` uses, files already there are not fetched again) and returns its
/// snapshot folder: `config.json`, the weights (`model.safetensors`, or
/// `model.safetensors.index.json` and every shard it names) and `tokenizer.json` where the
/// repository has one.
///
/// # Errors
/// [`TransformerError::Download`] naming the file and the reason (no network, no such repository,
/// a missing weights file, an index naming a shard outside the folder).
#[cfg(feature = "hub-download")]
pub fn download_in(name: &str, endpoint: &str, root: &Path) -> Result<PathBuf> {
    use hf_hub::api::sync::{ApiBuilder, ApiError};
    use hf_hub::{Cache, Repo, RepoType};
    use std::io::IsTerminal;

    use crate::loader::safetensors::{read_index, INDEX_FILE, WEIGHTS_FILE};

    let fail = |file: &str, reason: String| TransformerError::Download {
        name: name.to_string(),
        file: file.to_string(),
        reason,
    };
    let Some((org, repo, rev)) = parse_hub_id(name) else {
        return Err(fail("", "not a Hub id (`org/name` or `org/name@revision`)".into()));
    };
    let api = ApiBuilder::from_cache(Cache::new(root.to_path_buf()))
        .with_endpoint(endpoint.trim_end_matches('/').to_string())
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| fail("", e.to_string()))?
        .repo(Repo::with_revision(format!("{org}/{repo}"), RepoType::Model, rev.to_string()));
    // One file: `None` when the repository has no such file (HTTP 404). The client unwraps a few
    // things a broken server controls (headers, redirects): a panic there is an error too.
    let get = |file: &str| -> Result<Option<PathBuf>> {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api.get(file)))
            .map_err(|_| fail(file, "the download client failed on the server's answer".into()))?;
        match got {
            Ok(path) => Ok(Some(path)),
            Err(ApiError::RequestError(e)) if matches!(*e, ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(fail(file, e.to_string())),
        }
    };
    let config = get("config.json")?.ok_or_else(|| {
        fail("config.json", "no such repository, or it has no config.json (not an HF model)".into())
    })?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| fail("config.json", "the cache path has no folder".into()))?;
    if get(WEIGHTS_FILE)?.is_none() {
        let index = get(INDEX_FILE)?.ok_or_else(|| {
            fail(
                WEIGHTS_FILE,
                format!("the repository has neither {WEIGHTS_FILE} nor {INDEX_FILE}"),
            )
        })?;
        let text = std::fs::read_to_string(&index)
            .map_err(|source| TransformerError::Io { path: index.clone(), source })?;
        for shard in read_index(&index, &text)?.1 {
            get(&shard)?
                .ok_or_else(|| fail(&shard, "named by the index, missing on the Hub".into()))?;
        }
    }
    get("tokenizer.json")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert_eq!(parse_hub_id("org/name"), Some(("org", "name", "main")));
        assert_eq!(
            parse_hub_id("HuggingFaceTB/SmolLM2-135M@v1.0"),
            Some(("HuggingFaceTB", "SmolLM2-135M", "v1.0"))
        );
        for bad in [
            "name",
            "/abs/path",
            "./rel/x",
            "a/b/c",
            "../x",
            "a/",
            "/b",
            "a/b@",
            "a/b@../x",
            "a b/c",
        ] {
            assert_eq!(parse_hub_id(bad), None, "{bad}");
        }
    }
}
