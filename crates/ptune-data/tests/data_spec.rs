//! The user's own files: train / dev / test files, column names, sentence pairs, and the errors a
//! wrong row gives (file and line).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ptune_data::{Columns, DataError, DataSpec};

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-data-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn csv_rows(prefix: &str, n: usize) -> String {
    let mut out = String::from("sentence,other,y\n");
    for i in 0..n {
        out.push_str(&format!(
            "{prefix} {i},second {i},{}\n",
            if i % 2 == 0 { "neg" } else { "pos" }
        ));
    }
    out
}

fn spec(train: &Path) -> DataSpec {
    DataSpec {
        columns: Columns {
            text: Some("sentence".into()),
            text_pair: Some("other".into()),
            label: Some("y".into()),
            ..Columns::default()
        },
        ..DataSpec::named(train.to_str().unwrap())
    }
}

#[test]
fn train_dev_and_test_files_are_used_as_given() {
    let train = write("train.csv", &csv_rows("train", 40));
    let dev = write("dev.csv", &csv_rows("dev", 6));
    let test = write("test.csv", &csv_rows("test", 8));
    let s = DataSpec { dev: Some(dev), test: Some(test), ..spec(&train) }.classification().unwrap();
    assert_eq!(s.labels, ["neg", "pos"]);
    assert_eq!((s.splits.train.len(), s.splits.dev.len(), s.splits.test.len()), (40, 6, 8));
    assert!(s.splits.dev.iter().all(|r| r.text.starts_with("dev ")));
    assert_eq!(s.splits.test[3].pair.as_deref(), Some("second 3"));
    assert_eq!(s.splits.test[3].line, 5);
}

#[test]
fn only_missing_splits_are_cut_from_the_training_file() {
    let train = write("train100.csv", &csv_rows("train", 100));
    let dev = write("dev10.csv", &csv_rows("dev", 10));
    let test = write("test10.csv", &csv_rows("test", 10));
    let alone = spec(&train).classification().unwrap();
    assert_eq!(
        (alone.splits.train.len(), alone.splits.dev.len(), alone.splits.test.len()),
        (80, 10, 10)
    );
    let with_dev = DataSpec { dev: Some(dev), ..spec(&train) }.classification().unwrap();
    let sizes =
        (with_dev.splits.train.len(), with_dev.splits.dev.len(), with_dev.splits.test.len());
    assert_eq!(sizes, (90, 10, 10));
    assert!(with_dev.splits.dev.iter().all(|r| r.text.starts_with("dev ")));
    assert!(with_dev.splits.test.iter().all(|r| r.text.starts_with("train ")));
    let with_test = DataSpec { test: Some(test), ..spec(&train) }.classification().unwrap();
    assert!(with_test.splits.test.iter().all(|r| r.text.starts_with("test ")));
    assert_eq!(with_test.splits.dev.len(), 10);
}

#[test]
fn wrong_rows_name_file_and_line() {
    let train = write("t.csv", &csv_rows("train", 10));
    let dev = write("d.csv", "sentence,other,y\na,b,neg\nc,d,maybe\n");
    let e = DataSpec { dev: Some(dev), ..spec(&train) }.classification().unwrap_err();
    assert!(
        matches!(&e, DataError::UnknownLabel { line: 3, label, .. } if label == "maybe"),
        "{e}"
    );

    // JSONL: a number where a text is expected is an error; integer labels are label names.
    let j = write("n.jsonl", "{\"text\": \"fine\", \"label\": 0}\n{\"text\": 5, \"label\": 1}\n");
    let e = DataSpec::named(j.to_str().unwrap()).classification().unwrap_err();
    assert!(matches!(&e, DataError::Row { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("`text` is 5, not a text"), "{e}");
    let ok = write(
        "ok.jsonl",
        &(0..20)
            .map(|i| format!("{{\"text\": \"t{i}\", \"label\": {}}}\n", i % 2))
            .collect::<String>(),
    );
    assert_eq!(DataSpec::named(ok.to_str().unwrap()).classification().unwrap().labels, ["0", "1"]);
    let e = write("o.jsonl", "{\"text\": \"a\", \"label\": {\"x\": 1}}\n");
    let e = DataSpec::named(e.to_str().unwrap()).classification().unwrap_err().to_string();
    assert!(e.contains("not a label"), "{e}");

    // Packaged data sets have their own splits.
    let e = DataSpec { dev: Some(train.clone()), ..DataSpec::named("rt-sentences") }
        .classification()
        .unwrap_err()
        .to_string();
    assert!(e.contains("packaged data set"), "{e}");
    let e = DataSpec::named("no-such-file.csv").classification().unwrap_err().to_string();
    assert!(e.contains("neither a packaged data set"), "{e}");
}

#[test]
fn generation_and_tagging_files_take_their_columns() {
    let rows = |n: usize, tag: &str| -> String {
        (0..n)
            .map(|i| format!("{{\"mr\": \"{tag} source {}\", \"ref\": \"target {i}\"}}\n", i / 2))
            .collect()
    };
    let train = write("g-train.jsonl", &rows(40, "train"));
    let test = write("g-test.jsonl", &rows(6, "test"));
    let columns =
        Columns { source: Some("mr".into()), target: Some("ref".into()), ..Columns::default() };
    let g = DataSpec {
        test: Some(test),
        columns: columns.clone(),
        ..DataSpec::named(train.to_str().unwrap())
    }
    .generation()
    .unwrap();
    assert_eq!(g.test.len(), 6);
    assert_eq!(g.train.len() + g.dev.len(), 40);
    // Both targets of a source share its split and group.
    for p in &g.dev {
        assert_eq!(g.dev.iter().filter(|q| q.group == p.group).count(), 2);
        assert!(g.train.iter().all(|q| q.group != p.group));
    }
    let bad = write("g-bad.jsonl", "{\"mr\": \"a\", \"ref\": 3}\n");
    let e =
        DataSpec { columns, ..DataSpec::named(bad.to_str().unwrap()) }.generation().unwrap_err();
    assert!(e.to_string().contains("`ref` is 3, not a text"), "{e}");

    let tagged: String = (0..10)
        .map(|i| format!("{{\"words\": [\"w{i}\", \"x\"], \"labels\": [\"B-a\", \"O\"]}}\n"))
        .collect();
    let t = write("t.jsonl", &tagged);
    let columns =
        Columns { tokens: Some("words".into()), tags: Some("labels".into()), ..Columns::default() };
    let s = DataSpec { columns, ..DataSpec::named(t.to_str().unwrap()) }.tagging().unwrap();
    assert_eq!(s.splits.train.len() + s.splits.dev.len() + s.splits.test.len(), 10);
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_string_lossy().into()
}

/// Parquet files as HF `datasets` writes them (pyarrow, snappy; scripts/gen_reference.py
/// parquet_files): integer class ids, a pair column, list columns for tagging, generation pairs.
#[test]
fn parquet_files_read_like_jsonl() {
    let columns = Columns {
        text: Some("sentence".into()),
        text_pair: Some("other".into()),
        ..Columns::default()
    };
    let s = DataSpec { columns, ..DataSpec::named(&fixture("classify.parquet")) }
        .classification()
        .unwrap();
    assert_eq!(s.labels, ["0", "1"]);
    let all: Vec<_> = s.splits.train.iter().chain(&s.splits.dev).chain(&s.splits.test).collect();
    assert_eq!(all.len(), 20);
    let row = all.iter().find(|r| r.line == 4).unwrap();
    assert_eq!(
        (row.text.as_str(), row.pair.as_deref(), row.label.as_str()),
        ("the worst plot 3", Some("pair 3"), "1")
    );

    let columns = Columns { tags: Some("ner_tags".into()), ..Columns::default() };
    let t = DataSpec { columns, ..DataSpec::named(&fixture("tagged.parquet")) }.tagging().unwrap();
    let rows: Vec<_> = t.splits.train.iter().chain(&t.splits.dev).chain(&t.splits.test).collect();
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.tags == ["B-a", "I-a", "O"] && r.words[0] == "w"));

    let g = DataSpec::named(&fixture("generate.parquet")).generation().unwrap();
    assert_eq!(g.train.len() + g.dev.len() + g.test.len(), 16);

    let e = DataSpec::named(&fixture("null_text.parquet")).classification().unwrap_err();
    assert!(matches!(&e, DataError::Row { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("no `text` field"), "{e}");
    // A file that is not Parquet.
    let fake = write("fake.parquet", "text,label\na,b\n");
    let e = DataSpec::named(fake.to_str().unwrap()).classification().unwrap_err();
    assert!(e.to_string().contains("not a Parquet file"), "{e}");
}
