//! libFuzzer's bytes as a user data file, read by each reader `ptune train --dataset FILE` uses
//! (classification JSONL / CSV / TSV, tagged JSONL, source/target JSONL), then tokenized.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptune_data::formats::ColumnMap;
use ptune_data::tasks::tokenize_classification;
use ptune_transformer::TextTokenizer;

fuzz_target!(|data: &[u8]| {
    let tok = ptune_fuzz::root().join("crates/ptune-transformer/tests/fixtures/tiny-bert/tokenizer.json");
    let Ok(tok) = TextTokenizer::from_file(&tok) else { return };
    for name in ["data.jsonl", "data.csv", "data.tsv"] {
        let path = ptune_fuzz::file_with(name, data);
        let Some(p) = path.to_str() else { return };
        if let Ok(t) = ptune_data::recipes::classification(p, &ColumnMap::default()) {
            let _ = tokenize_classification(&t.splits.train, &t.labels, &tok, 16, &t.source);
        }
    }
    let path = ptune_fuzz::file_with("data.jsonl", data);
    if let Some(p) = path.to_str() {
        let _ = ptune_data::tagging::tagging(p);
        let _ = ptune_data::recipes::generation(p);
    }
});
