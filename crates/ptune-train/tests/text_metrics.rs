//! BLEU and ROUGE-L equal sacreBLEU's and `rouge_score`'s on the same text (values made by
//! `scripts/gen_reference.py text_metrics`, sacrebleu 2.5.1 and rouge_score 0.1.2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ptune_train::metrics::{corpus_bleu, rouge_l, tokenize_13a, tokenize_rouge};
use serde_json::Value;

fn fixture() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text_metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn tokenizers_split_as_sacrebleu_13a_and_rouge_score() {
    let f = fixture();
    let lines = strings(&f["lines"]);
    assert!(lines.len() >= 10);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(tokenize_13a(line), strings(&f["tokens_13a"][i]), "13a of {line:?}");
        assert_eq!(tokenize_rouge(line), strings(&f["tokens_rouge"][i]), "rouge of {line:?}");
    }
}

#[test]
fn corpus_bleu_and_rouge_l_equal_the_reference_implementations() {
    let f = fixture();
    let mut nonzero = 0;
    for corpus in f["corpora"].as_array().unwrap() {
        let hyps = strings(&corpus["hypotheses"]);
        let refs: Vec<Vec<String>> =
            corpus["references"].as_array().unwrap().iter().map(strings).collect();
        let expected = corpus["sacrebleu"].as_f64().unwrap() / 100.0;
        let bleu = corpus_bleu(&hyps, &refs);
        assert!((bleu - expected).abs() < 1e-4 / 100.0, "BLEU {bleu} vs sacreBLEU {expected}");
        nonzero += usize::from(expected > 0.1);
        for ((h, r), e) in hyps.iter().zip(&refs).zip(corpus["rouge_l"].as_array().unwrap()) {
            let e = e.as_f64().unwrap();
            let got = rouge_l(h, r);
            assert!((got - e).abs() < 1e-9, "ROUGE-L of {h:?}: {got} vs rouge_score {e}");
        }
    }
    assert!(nonzero >= 2, "the fixture must hold corpora with real scores");
    let lines = strings(&f["lines"]);
    let mut rotated = lines[1..].to_vec();
    rotated.push(lines[0].clone());
    let refs: Vec<Vec<String>> = rotated.into_iter().map(|r| vec![r]).collect();
    let expected = f["bleu_tricky"].as_f64().unwrap() / 100.0;
    let bleu = corpus_bleu(&lines, &refs);
    assert!((bleu - expected).abs() < 1e-6, "tricky BLEU {bleu} vs sacreBLEU {expected}");
}
