//! Mutation fuzzing of the data files a user gives, on stable Rust: classification tables (JSONL,
//! CSV and TSV, with and without a sentence-pair column), tagged-sentence JSONL and source/target
//! tables, each read with the readers `ptune train --dataset FILE` uses and then tokenized with the
//! tiny BERT's tokenizer. Every mutant must give data or a typed error: a panic fails the test.
//! Binary garbage (invalid UTF-8, NUL bytes) is among the mutants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ptune_data::formats::ColumnMap;
use ptune_data::recipes::{classification, generation};
use ptune_data::tagging::{bio_labels, tagging, tokenize_tagging};
use ptune_data::tasks::{tokenize_classification, tokenize_generation};
use ptune_testkit::{mutate_bytes, mutate_text, scratch, Rng, Tally};
use ptune_transformer::TextTokenizer;

fn tokenizer() -> TextTokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert/tokenizer.json");
    TextTokenizer::from_file(&path).unwrap()
}

const WORDS: [&str; 8] = ["a", "fine", "film", "with", "dull", "parts", "and", "\"quotes\""];

fn text(i: usize) -> String {
    (0..3 + i % 5).map(|k| WORDS[(i * 3 + k) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

/// Valid files of every kind the readers accept: (name, contents).
fn originals() -> Vec<(&'static str, String)> {
    let n = 30;
    let label = |i: usize| ["pos", "neg"][i % 2];
    let jsonl: Vec<String> = (0..n)
        .map(|i| serde_json::json!({"text": text(i), "label": label(i)}).to_string())
        .collect();
    let pairs: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"text": text(i), "text_pair": text(i + 1), "label": label(i)})
                .to_string()
        })
        .collect();
    let csv: Vec<String> = std::iter::once("text,label".to_string())
        .chain((0..n).map(|i| format!("\"{}\",{}", text(i).replace('"', "\"\""), label(i))))
        .collect();
    let tsv: Vec<String> = std::iter::once("label\ttext".to_string())
        .chain((0..n).map(|i| format!("{}\t{}", label(i), text(i).replace('"', ""))))
        .collect();
    let tags: Vec<String> = (0..n)
        .map(|i| {
            let words: Vec<String> = text(i).split(' ').map(str::to_string).collect();
            let tags: Vec<&str> =
                (0..words.len()).map(|k| ["O", "B-x", "I-x"][(i + k) % 3]).collect();
            serde_json::json!({"tokens": words, "tags": tags}).to_string()
        })
        .collect();
    let generation_rows: Vec<String> = (0..n)
        .map(|i| serde_json::json!({"source": text(i), "target": text(i + 2)}).to_string())
        .collect();
    vec![
        ("classify.jsonl", jsonl.join("\n")),
        ("pairs.jsonl", pairs.join("\n")),
        ("classify.csv", csv.join("\n")),
        ("classify.tsv", tsv.join("\n")),
        ("tagged.jsonl", tags.join("\n")),
        ("generate.jsonl", generation_rows.join("\n")),
    ]
}

/// Reads `path` as the kind its name says, then tokenizes what it read; `true` when it loaded.
fn read_and_tokenize(name: &str, path: &Path, tok: &TextTokenizer) -> bool {
    let p = path.to_str().unwrap();
    let tokenized = match name {
        "tagged.jsonl" => tagging(p).and_then(|t| {
            let s = &t.splits;
            let labels = bio_labels(s.train.iter().chain(&s.dev).chain(&s.test));
            tokenize_tagging(&s.train, &labels, tok, 16, &t.source).map(|_| ())
        }),
        "generate.jsonl" => generation(p)
            .and_then(|g| tokenize_generation(&g.train, tok, "\nOut:", Some(2), 24).map(|_| ())),
        _ => {
            let map = ColumnMap {
                pair: (name == "pairs.jsonl").then(|| "text_pair".to_string()),
                ..ColumnMap::default()
            };
            classification(p, &map).and_then(|t| {
                tokenize_classification(&t.splits.train, &t.labels, tok, 16, &t.source).map(|_| ())
            })
        }
    };
    match tokenized {
        Ok(()) => true,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn the_original_data_files_load() {
    let tok = tokenizer();
    let dir = scratch("data-originals");
    for (name, body) in originals() {
        let path = dir.join(name);
        std::fs::write(&path, &body).unwrap();
        assert!(read_and_tokenize(name, &path, &tok), "{name} must load unmutated");
    }
}

#[test]
fn mutated_data_files_never_panic() {
    let tok = tokenizer();
    let dir = scratch("data");
    let mut rng = Rng(21);
    for (name, body) in originals() {
        let mut tally = Tally::default();
        let path = dir.join(name);
        for i in 0..250 {
            let mutant = if i % 5 == 4 {
                mutate_bytes(body.as_bytes(), &mut rng)
            } else {
                mutate_text(&body, &mut rng).into_bytes()
            };
            std::fs::write(&path, mutant).unwrap();
            tally.run(&format!("{name} mutant {i}"), || read_and_tokenize(name, &path, &tok));
        }
        tally.check(name);
    }
}

/// Parquet files (the fixtures pyarrow wrote, as HF `datasets` does) with their bytes mutated:
/// truncated footers, flipped bits in pages and metadata, huge lengths.
#[test]
fn mutated_parquet_files_never_panic() {
    let tok = tokenizer();
    let dir = scratch("parquet");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut rng = Rng(23);
    for name in ["classify.parquet", "tagged.parquet", "generate.parquet"] {
        let original = std::fs::read(fixtures.join(name)).unwrap();
        let path = dir.join(name);
        let read = |path: &Path| -> bool {
            let p = path.to_str().unwrap();
            let columns = ptune_data::Columns {
                text: Some("sentence".into()),
                tags: Some("ner_tags".into()),
                ..ptune_data::Columns::default()
            };
            let spec = ptune_data::DataSpec { columns, ..ptune_data::DataSpec::named(p) };
            let result = match name {
                "tagged.parquet" => spec.tagging().map(|_| ()),
                "generate.parquet" => spec.generation().map(|_| ()),
                _ => spec.classification().and_then(|t| {
                    tokenize_classification(&t.splits.train, &t.labels, &tok, 16, &t.source)
                        .map(|_| ())
                }),
            };
            result.is_ok()
        };
        std::fs::write(&path, &original).unwrap();
        assert!(read(&path), "{name} must load unmutated");
        let mut tally = Tally::default();
        for i in 0..300 {
            std::fs::write(&path, mutate_bytes(&original, &mut rng)).unwrap();
            tally.run(&format!("{name} mutant {i}"), || read(&path));
        }
        tally.check(name);
    }
}
