//! Bad data files are errors naming the file and line, never panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ptune_data::formats::{read_table, ColumnMap};
use ptune_data::recipes::{rt_sentences, user_file};
use ptune_data::DataError;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn empty_file_is_an_error() {
    let p = write("empty.jsonl", "\n\n");
    assert!(matches!(read_table(&p, &ColumnMap::default()), Err(DataError::Empty { .. })));
}

#[test]
fn malformed_json_names_the_line() {
    let p = write("bad.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \n");
    let e = read_table(&p, &ColumnMap::default()).unwrap_err();
    assert!(matches!(e, DataError::Row { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("bad.jsonl:2"), "{e}");
}

#[test]
fn missing_field_and_column_are_named() {
    let p = write("nolabel.jsonl", "{\"text\": \"a\"}\n");
    let e = read_table(&p, &ColumnMap::default()).unwrap_err();
    assert!(e.to_string().contains("no `label` field"), "{e}");
    let p = write("cols.csv", "sentence,label\nhello,pos\n");
    let e = read_table(&p, &ColumnMap::default()).unwrap_err();
    assert!(e.to_string().contains("no `text` column"), "{e}");
    let map = ColumnMap { text: "sentence".into(), ..ColumnMap::default() };
    assert_eq!(read_table(&p, &map).unwrap()[0].text, "hello");
}

#[test]
fn short_csv_row_and_unknown_label_name_their_line() {
    let p = write("short.tsv", "text\tlabel\na\tpos\nb\n");
    let e = read_table(&p, &ColumnMap::default()).unwrap_err();
    assert!(matches!(e, DataError::Row { line: 3, .. }), "{e}");
    let p = write("labels.jsonl", "{\"text\": \"a\", \"label\": \"pos\"}\n{\"text\": \"b\", \"label\": \"neg\"}\n{\"text\": \"c\", \"label\": \"meh\"}\n");
    let e =
        user_file(&p, &ColumnMap::default(), Some(vec!["neg".into(), "pos".into()])).unwrap_err();
    assert!(matches!(e, DataError::UnknownLabel { line: 3, .. }), "{e}");
    let e = user_file(
        &write("one.jsonl", "{\"text\": \"a\", \"label\": \"pos\"}\n"),
        &ColumnMap::default(),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least two labels"), "{e}");
}

#[test]
fn unknown_format_and_bad_scores() {
    let e = read_table(&write("x.xlsx", "x"), &ColumnMap::default()).unwrap_err();
    assert!(e.to_string().contains("unknown format"), "{e}");
    let e = read_table(&write("x.parquet", "x"), &ColumnMap::default()).unwrap_err();
    assert!(e.to_string().contains("not a Parquet file"), "{e}");
    let dir = std::env::temp_dir().join(format!("ptune-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("movieReviewSnippets_GroundTruth.txt"),
        "1\t2.0\tgood\r\n2\tabc\tbad\r\n",
    )
    .unwrap();
    let e = rt_sentences(&dir).unwrap_err();
    assert!(matches!(e, DataError::Row { line: 2, .. }), "{e}");
    std::fs::write(
        dir.join("movieReviewSnippets_GroundTruth.txt"),
        "1\t2.0\tgood\r\n2\t-1.5\tbad\r\n3\t0.2\tmeh\r\n",
    )
    .unwrap();
    let s = rt_sentences(&dir).unwrap();
    let n = s.splits.train.len() + s.splits.dev.len() + s.splits.test.len();
    assert_eq!(n, 2, "neutral rows are dropped");
}

#[test]
fn bad_tagging_rows_name_their_line() {
    use ptune_data::tagging::read_tagged_jsonl;
    let ok = "{\"tokens\": [\"Blue\", \"Spice\"], \"tags\": [\"B-name\", \"I-name\"]}\n";
    let rows = read_tagged_jsonl(&write("ok.jsonl", ok), "tokens", "tags").unwrap();
    assert_eq!(rows[0].tags, ["B-name", "I-name"]);
    for (name, bad, needle) in [
        ("len.jsonl", "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}", "2 words but 1 tags"),
        ("bio.jsonl", "{\"tokens\": [\"a\"], \"tags\": [\"PER\"]}", "is not BIO"),
        ("type.jsonl", "{\"tokens\": [\"a\", 3], \"tags\": [\"O\", \"O\"]}", "non-string"),
        ("none.jsonl", "{\"tokens\": [], \"tags\": []}", "no words"),
        ("key.jsonl", "{\"words\": [\"a\"], \"tags\": [\"O\"]}", "no `tokens` list"),
    ] {
        let p = write(name, &format!("{ok}{bad}\n"));
        let e = read_tagged_jsonl(&p, "tokens", "tags").unwrap_err();
        assert!(matches!(e, DataError::Row { line: 2, .. }), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    let e = read_tagged_jsonl(&write("empty-tags.jsonl", "\n"), "tokens", "tags").unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
}

#[test]
fn generation_files_split_by_source_and_bad_rows_are_named() {
    let mut body = String::new();
    for i in 0..30 {
        for r in 0..3 {
            body.push_str(&format!("{{\"source\": \"s{i}\", \"target\": \"t{i} {r}\"}}\n"));
        }
    }
    let p = write("gen.jsonl", &body);
    let s = ptune_data::recipes::generation(p.to_str().unwrap()).unwrap();
    assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 90);
    let train: std::collections::HashSet<&str> =
        s.train.iter().map(|r| r.source.as_str()).collect();
    assert!(s.dev.iter().chain(&s.test).all(|r| !train.contains(r.source.as_str())));
    let p = write("gen-bad.jsonl", "{\"source\": \"a\", \"target\": \"b\"}\n{\"source\": \"a\"}\n");
    let e = ptune_data::recipes::generation(p.to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("gen-bad.jsonl:2") && e.to_string().contains("target"), "{e}");
}
