//! Table formats with column mapping: JSONL (one object per line), CSV and TSV (with a header row),
//! and Parquet (what HF `datasets` stores on the Hub; its rows are read as JSON objects, so the JSONL
//! rules apply, with the row number as the line).

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
    /// Apache Parquet (uncompressed or snappy), one row per record.
    Parquet,
}

impl Format {
    /// From the file extension (`.jsonl`/`.ndjson`, `.csv`, `.tsv`/`.tab`, `.parquet`).
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl") | Some("ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            Some("tsv") | Some("tab") => Ok(Format::Tsv),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(DataError::Dataset(format!(
                "{}: unknown format (use .jsonl, .csv, .tsv or .parquet)",
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
    /// The label column holds free text (a generation target): in JSON it must be a string, as
    /// text columns must; otherwise integers and booleans are read as label names too.
    pub label_is_text: bool,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self { text: "text".into(), pair: None, label: "label".into(), label_is_text: false }
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

/// A text field of a JSON row: it must be a string (a number or an object where a text is
/// expected is an error, not its JSON spelling).
fn json_text(v: &serde_json::Value, key: &str) -> std::result::Result<String, String> {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        None | Some(serde_json::Value::Null) => Err(format!("no `{key}` field")),
        Some(other) => Err(format!("`{key}` is {other}, not a text")),
    }
}

/// A label field of a JSON row: a string, an integer or a boolean (HF data sets store class ids
/// as integers), spelled as written.
fn json_label(v: &serde_json::Value, key: &str) -> std::result::Result<String, String> {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        None | Some(serde_json::Value::Null) => Err(format!("no `{key}` field")),
        Some(other) => Err(format!("`{key}` is {other}, not a label (text, integer or bool)")),
    }
}

/// The JSON rows of a JSONL or Parquet file, each with its 1-based line (Parquet: row) number;
/// `None` for the CSV/TSV formats.
pub fn json_rows(path: &Path) -> Result<Option<Vec<(usize, serde_json::Value)>>> {
    match Format::from_path(path)? {
        Format::Parquet => crate::parquet_rows::read_rows(path).map(Some),
        Format::Jsonl => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| DataError::Io { path: path.to_path_buf(), message: e.to_string() })?;
            let mut rows = Vec::new();
            for (i, raw) in text.lines().enumerate() {
                if raw.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(raw)
                    .map_err(|e| row_err(path, i + 1, format!("not JSON: {e}")))?;
                rows.push((i + 1, v));
            }
            Ok(Some(rows))
        }
        Format::Csv | Format::Tsv => Ok(None),
    }
}

/// Reads every row of `path`; malformed rows and missing columns are errors naming file and line, an
/// empty file is [`DataError::Empty`].
pub fn read_table(path: &Path, map: &ColumnMap) -> Result<Vec<Record>> {
    let format = Format::from_path(path)?;
    let mut records = Vec::new();
    if let Some(rows) = json_rows(path)? {
        for (line, v) in rows {
            let text = |key: &str| json_text(&v, key).map_err(|m| row_err(path, line, m));
            records.push(Record {
                text: text(&map.text)?,
                pair: map.pair.as_ref().map(|k| text(k)).transpose()?,
                label: if map.label_is_text {
                    text(&map.label)?
                } else {
                    json_label(&v, &map.label).map_err(|m| row_err(path, line, m))?
                },
                line,
            });
        }
    }
    match format {
        Format::Jsonl | Format::Parquet => {}
        Format::Csv | Format::Tsv => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| DataError::Io { path: path.to_path_buf(), message: e.to_string() })?;
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
