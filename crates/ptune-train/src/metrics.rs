//! Metrics: accuracy and macro-F1 for classification; entity-level F1 for BIO tagging; corpus BLEU-4
//! and ROUGE-L for generation, computed as sacreBLEU and `rouge_score` compute them (checked
//! against both in `tests/text_metrics.rs`).

use std::collections::HashMap;

/// Fraction of equal entries.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// Unweighted mean over classes of the per-class F1.
pub fn macro_f1(pred: &[usize], gold: &[usize], n_classes: usize) -> f64 {
    if n_classes == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for c in 0..n_classes {
        let tp = pred.iter().zip(gold).filter(|&(&p, &g)| p == c && g == c).count() as f64;
        let fp = pred.iter().zip(gold).filter(|&(&p, &g)| p == c && g != c).count() as f64;
        let fn_ = pred.iter().zip(gold).filter(|&(&p, &g)| p != c && g == c).count() as f64;
        let denom = 2.0 * tp + fp + fn_;
        total += if denom == 0.0 { 0.0 } else { 2.0 * tp / denom };
    }
    total / n_classes as f64
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w.iter().map(|s| s.to_string()).collect()).or_insert(0) += 1;
        }
    }
    counts
}

/// A regex of the metric tokenizers (literals, checked by the tests).
fn re(pattern: &str) -> regex::Regex {
    #[allow(clippy::expect_used)] // constant patterns, each exercised by the unit tests
    regex::Regex::new(pattern).expect("a valid constant pattern")
}

/// sacreBLEU's default `13a` tokenization (mteval-v13a, as `sacrebleu.tokenizers.Tokenizer13a`
/// after BLEU's `rstrip`): punctuation and symbols split off, periods and commas split unless
/// next to a digit, a dash after a digit split; tokens are then the whitespace-separated parts.
pub fn tokenize_13a(line: &str) -> Vec<String> {
    static RULES: std::sync::LazyLock<[(regex::Regex, &str); 4]> = std::sync::LazyLock::new(|| {
        [
            // `([\{-\~\[-\` -\&\(-\+\:-\@\/])` → ` \1 `
            (re(r"([\x7B-\x7E\x5B-\x60\x20-\x26\x28-\x2B\x3A-\x40/])"), " ${1} "),
            (re(r"([^0-9])([.,])"), "${1} ${2} "),
            (re(r"([.,])([^0-9])"), " ${1} ${2}"),
            (re(r"([0-9])(-)"), "${1} ${2} "),
        ]
    });
    let mut line = line.trim_end().replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (rule, replacement) in RULES.iter() {
        line = rule.replace_all(&line, *replacement).into_owned();
    }
    line.split_whitespace().map(String::from).collect()
}

/// `rouge_score`'s tokenization (no stemming): lowercase, every run of characters other than
/// `a-z0-9` becomes a space, tokens are the non-empty parts.
pub fn tokenize_rouge(text: &str) -> Vec<String> {
    static NON_ALPHANUM: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| re("[^a-z0-9]+"));
    NON_ALPHANUM
        .replace_all(&text.to_lowercase(), " ")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Corpus BLEU-4 as sacreBLEU computes it (`sacrebleu.corpus_bleu` with its defaults: `13a`
/// tokens, cased, `exp` smoothing, brevity penalty against the closest reference length, ties
/// to the shorter), divided by 100 so it lies in `[0, 1]`. A hypothesis may have any number of
/// references.
pub fn corpus_bleu(hypotheses: &[String], references: &[Vec<String>]) -> f64 {
    let mut matched = [0usize; 4];
    let mut total = [0usize; 4];
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for (hyp, refs) in hypotheses.iter().zip(references) {
        let h_tokens = tokenize_13a(hyp);
        let h: Vec<&str> = h_tokens.iter().map(String::as_str).collect();
        let r_tokens: Vec<Vec<String>> = refs.iter().map(|r| tokenize_13a(r)).collect();
        let rs: Vec<Vec<&str>> =
            r_tokens.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        hyp_len += h.len();
        ref_len += rs
            .iter()
            .map(Vec::len)
            .min_by_key(|&l| ((l as i64 - h.len() as i64).abs(), l))
            .unwrap_or(0);
        for (n, (matched, total)) in (1..=4).zip(matched.iter_mut().zip(total.iter_mut())) {
            let hc = ngrams(&h, n);
            let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
            for r in &rs {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            for (g, c) in &hc {
                *matched += (*c).min(max_ref.get(g).copied().unwrap_or(0));
            }
            *total += h.len().saturating_sub(n - 1);
        }
    }
    bleu_from_counts(&matched, &total, hyp_len, ref_len)
}

/// sacreBLEU's `compute_bleu` with `exp` smoothing (NIST's: the k-th order with no match counts
/// as `1 / (2^k · total)`), over percentages, divided by 100.
fn bleu_from_counts(
    matched: &[usize; 4],
    total: &[usize; 4],
    hyp_len: usize,
    ref_len: usize,
) -> f64 {
    if matched.iter().all(|&m| m == 0) {
        return 0.0;
    }
    let bp = if hyp_len >= ref_len {
        1.0
    } else if hyp_len > 0 {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        0.0
    };
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0;
    for ((p, &m), &t) in precisions.iter_mut().zip(matched).zip(total) {
        if t == 0 {
            break;
        }
        *p = if m == 0 {
            smooth *= 2.0;
            100.0 / (smooth * t as f64)
        } else {
            100.0 * m as f64 / t as f64
        };
    }
    // sacreBLEU's `my_log`: log(0) counts as -9999999999.
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp() / 100.0
}

/// ROUGE-L F-measure of a hypothesis against its best reference, as `rouge_score`'s
/// `RougeScorer(["rougeL"]).score_multi` computes it (its tokenization, no stemming).
pub fn rouge_l(hypothesis: &str, references: &[String]) -> f64 {
    let h_tokens = tokenize_rouge(hypothesis);
    let h: Vec<&str> = h_tokens.iter().map(String::as_str).collect();
    references
        .iter()
        .map(|r| {
            let r_tokens = tokenize_rouge(r);
            let r: Vec<&str> = r_tokens.iter().map(String::as_str).collect();
            if h.is_empty() || r.is_empty() {
                return 0.0;
            }
            let lcs = lcs_len(&h, &r) as f64;
            let (p, rec) = (lcs / h.len() as f64, lcs / r.len() as f64);
            if p + rec > 0.0 {
                2.0 * p * rec / (p + rec)
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut prev = 0;
        for (j, y) in b.iter().enumerate() {
            let tmp = row[j + 1];
            row[j + 1] = if x == y { prev + 1 } else { row[j + 1].max(row[j]) };
            prev = tmp;
        }
    }
    row[b.len()]
}

/// The entities `(type, start, end)` (end exclusive) of a BIO sequence, conlleval's way: an entity
/// starts at `B-X`, or at `I-X` after `O` or after another type.
pub fn bio_entities(tags: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, tag) in tags.iter().enumerate() {
        let (prefix, kind) = tag.split_once('-').unwrap_or(("O", ""));
        let continues = prefix == "I" && open.as_ref().is_some_and(|(k, _)| k == kind);
        if !continues {
            if let Some((k, s)) = open.take() {
                out.push((k, s, i));
            }
            if prefix == "B" || prefix == "I" {
                open = Some((kind.to_string(), i));
            }
        }
    }
    if let Some((k, s)) = open {
        out.push((k, s, tags.len()));
    }
    out
}

/// Entity-level micro F1 (exact type and span match) over sentences of BIO tags (conlleval's,
/// seqeval's default).
pub fn entity_f1(pred: &[Vec<&str>], gold: &[Vec<&str>]) -> f64 {
    let (mut tp, mut n_pred, mut n_gold) = (0usize, 0usize, 0usize);
    for (p, g) in pred.iter().zip(gold) {
        let pe = bio_entities(p);
        let ge = bio_entities(g);
        tp += pe.iter().filter(|e| ge.contains(e)).count();
        n_pred += pe.len();
        n_gold += ge.len();
    }
    if tp == 0 {
        return 0.0;
    }
    let precision = tp as f64 / n_pred as f64;
    let recall = tp as f64 / n_gold as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics() {
        assert_eq!(accuracy(&[0, 1, 1, 0], &[0, 1, 0, 0]), 0.75);
        // class 0: tp 2, fp 0, fn 1 → 0.8; class 1: tp 1, fp 1, fn 0 → 2/3.
        assert!(
            (macro_f1(&[0, 1, 1, 0], &[0, 1, 0, 0], 2) - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12
        );
    }

    #[test]
    fn bleu_and_rouge() {
        let refs = vec![vec!["the cat is on the mat".to_string()]];
        assert!((corpus_bleu(&["the cat is on the mat".into()], &refs) - 1.0).abs() < 1e-12);
        assert_eq!(corpus_bleu(&["dog".into()], &refs), 0.0);
        let r = rouge_l("the cat sat on the mat", &["the cat is on the mat".into()]);
        assert!((r - 5.0 / 6.0).abs() < 1e-12); // LCS 5 of 6 / 6
    }

    #[test]
    fn entities_follow_conlleval() {
        let tags = ["B-name", "I-name", "O", "I-food", "B-food", "I-area", "I-area"];
        assert_eq!(
            bio_entities(&tags),
            vec![
                ("name".into(), 0, 2),
                ("food".into(), 3, 4),
                ("food".into(), 4, 5),
                ("area".into(), 5, 7)
            ]
        );
        let gold = vec![vec!["B-name", "I-name", "O", "B-food"]];
        let pred = vec![vec!["B-name", "I-name", "O", "O"]];
        // precision 1, recall 1/2.
        assert!((entity_f1(&pred, &gold) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(entity_f1(&gold, &gold), 1.0);
    }
}
