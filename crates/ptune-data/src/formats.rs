//! Table formats with column mapping: JSONL (one object per line), CSV and TSV (with a header row).

use std::path::Path;

use crate::error::{DataError, Result};

/// File format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, header row.
    Csv,
    /// Tab-separated, header row.
    Tsv,
}

impl Format {
    /// From the file extension (`.jsonl`/`.json`, `.csv`, `.tsv`/`.tab`).
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl") | Some("ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            Some("tsv") | Some("tab") => Ok(Format::Tsv),
            _ => Err(DataError::Dataset(format!(
                "{}: unknown format (use .jsonl, .csv or .tsv)",
                path.display()
            ))),
        }
    }
}

/// Which columns (JSON keys or header names) hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The text (or the source, for generation).
    pub text: String,
    /// A second text (sentence pairs), if any.
    pub pair: Option<String>,
    /// The label (or the target, for generation).
    pub label: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self { text: "text".into(), pair: None, label: "label".into() }
    }
}

/// One row: text, optional pair, label (as written), and its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Text.
    pub text: String,
    /// Second text.
    pub pair: Option<String>,
    /// Label or target, as written in the file.
    pub label: String,
    /// Line in the file (1-based).
    pub line: usize,
}

fn row_err(path: &Path, line: usize, message: impl Into<String>) -> DataError {
    DataError::Row { path: path.to_path_buf(), line, message: message.into() }
}

fn json_field(v: &serde_json::Value, key: &str) -> Option<String> {
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads every row of `path`; malformed rows and missing columns are errors naming file and line, an
/// empty file is [`DataError::Empty`].
pub fn read_table(path: &Path, map: &ColumnMap) -> Result<Vec<Record>> {
    let format = Format::from_path(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| DataError::Io { path: path.to_path_buf(), message: e.to_string() })?;
    let mut records = Vec::new();
    match format {
        Format::Jsonl => {
            for (i, raw) in text.lines().enumerate() {
                let line = i + 1;
                if raw.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(raw)
                    .map_err(|e| row_err(path, line, format!("not JSON: {e}")))?;
                let get = |key: &str| {
                    json_field(&v, key)
                        .ok_or_else(|| row_err(path, line, format!("no `{key}` field")))
                };
                records.push(Record {
                    text: get(&map.text)?,
                    pair: map.pair.as_ref().map(|k| get(k)).transpose()?,
                    label: get(&map.label)?,
                    line,
                });
            }
        }
        Format::Csv | Format::Tsv => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(if format == Format::Csv { b',' } else { b'\t' })
                .has_headers(true)
                .flexible(false)
                .from_reader(text.as_bytes());
            let headers = reader.headers().map_err(|e| row_err(path, 1, e.to_string()))?.clone();
            let column = |name: &str| {
                headers.iter().position(|h| h == name).ok_or_else(|| {
                    row_err(path, 1, format!("no `{name}` column (header: {headers:?})"))
                })
            };
            let (t, l) = (column(&map.text)?, column(&map.label)?);
            let p = map.pair.as_ref().map(|n| column(n)).transpose()?;
            for row in reader.records() {
                let row = row.map_err(|e| {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    row_err(path, line, e.to_string())
                })?;
                let line = row.position().map_or(0, |p| p.line() as usize);
                let cell = |i: usize| {
                    row.get(i).map(str::to_string).ok_or_else(|| row_err(path, line, "short row"))
                };
                records.push(Record {
                    text: cell(t)?,
                    pair: p.map(cell).transpose()?,
                    label: cell(l)?,
                    line,
                });
            }
        }
    }
    if records.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(records)
}
