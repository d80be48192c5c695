//! Parquet files (what HF `datasets` stores on the Hub) as JSON rows: each row becomes a JSON
//! object — strings, integers, booleans, floats, nulls and lists (of words, of tags) — so the JSONL
//! readers' column rules and errors apply unchanged, with the row number as the line.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, List, Row};

use crate::error::{DataError, Result};

fn bad(path: &Path, line: usize, message: impl std::fmt::Display) -> DataError {
    DataError::Row { path: path.to_path_buf(), line, message: message.to_string() }
}

fn list(l: &List) -> serde_json::Value {
    serde_json::Value::Array(l.elements().iter().map(field).collect())
}

/// One Parquet value as JSON; types a data file has no use for (bytes, dates, maps, structs)
/// become their text, which a text column then reads as written.
fn field(f: &Field) -> serde_json::Value {
    use serde_json::Value;
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float(v) => {
            serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number)
        }
        Field::Double(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
        Field::Str(s) => Value::String(s.clone()),
        Field::ListInternal(l) => list(l),
        other => Value::String(other.to_string()),
    }
}

fn row_object(row: &Row) -> serde_json::Value {
    serde_json::Value::Object(
        row.get_column_iter().map(|(name, value)| (name.clone(), field(value))).collect(),
    )
}

/// Every row of a Parquet file as a JSON object, with its 1-based row number.
///
/// The `parquet` crate panics on some corrupt files (unknown page types, out-of-range dictionary
/// indices; found by `tests/mutation_fuzz.rs`): the read runs under `catch_unwind`, and such a
/// panic is an error naming the file.
pub fn read_rows(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    std::panic::catch_unwind(|| read_rows_unguarded(path)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the reader failed");
        Err(bad(path, 0, format!("corrupt Parquet file: {what}")))
    })
}

fn read_rows_unguarded(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let file = std::fs::File::open(path)
        .map_err(|e| DataError::Io { path: path.to_path_buf(), message: e.to_string() })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(path, 0, format!("not a Parquet file: {e}")))?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(path, 0, e))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(path, i + 1, e))?;
        out.push((i + 1, row_object(&row)));
    }
    Ok(out)
}
