//! Token classification: sentences of words with BIO tags, their alignment to word pieces, the
//! `e2e-slots` data set (slot values of E2E meaning representations tagged in the references) and
//! JSONL files of `{"tokens": [...], "tags": [...]}`.
//!
//! Alignment (HF's `label_all_tokens=False` convention): each word is encoded on its own (with a
//! leading space after the first word, so byte-level BPE sees word boundaries; WordPiece ignores it),
//! its **first** piece carries the word's tag, the other pieces and the special tokens carry none.
//! Word `j`'s first piece sits at `word_starts[j]` of the example's ids: a token head reads exactly
//! those positions (after virtual tokens are stripped), so predictions come back one per word.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use ptune_transformer::TextTokenizer;

use crate::error::{DataError, Result};
use crate::tasks::Splits;

/// A sentence of words and their BIO tags, with its 1-based line (or example number) in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSentence {
    /// Words.
    pub words: Vec<String>,
    /// One tag per word: `O`, `B-TYPE` or `I-TYPE`.
    pub tags: Vec<String>,
    /// Where it came from (1-based).
    pub line: usize,
}

/// A tokenized tagged sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedExample {
    /// Token ids with the tokenizer's special tokens.
    pub ids: Vec<u32>,
    /// Position in `ids` of each kept word's first piece.
    pub word_starts: Vec<usize>,
    /// Tag index (into the label set) of each kept word.
    pub tags: Vec<usize>,
}

/// A tokenized tagging data set.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggingSet {
    /// Tag names (`O` first, then `B-`/`I-` per type, sorted).
    pub labels: Vec<String>,
    /// The examples.
    pub splits: Splits<TaggedExample>,
}

/// Sentences split three ways, with where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSplits {
    /// Rows.
    pub splits: Splits<TaggedSentence>,
    /// The file read (for error messages).
    pub source: PathBuf,
}

/// Checks that `tag` is `O`, `B-X` or `I-X`.
pub fn check_bio(tag: &str) -> std::result::Result<(), String> {
    if tag == "O" {
        return Ok(());
    }
    match tag.split_once('-') {
        Some(("B" | "I", kind)) if !kind.is_empty() => Ok(()),
        _ => Err(format!("tag `{tag}` is not BIO (O, B-TYPE or I-TYPE)")),
    }
}

/// The label set of `sentences`: `O`, then every `B-`/`I-` tag (both for each type seen), sorted.
pub fn bio_labels<'a>(sentences: impl IntoIterator<Item = &'a TaggedSentence>) -> Vec<String> {
    let mut kinds: Vec<String> = sentences
        .into_iter()
        .flat_map(|s| s.tags.iter())
        .filter_map(|t| t.split_once('-').map(|(_, k)| k.to_string()))
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut labels = vec!["O".to_string()];
    for k in kinds {
        labels.push(format!("B-{k}"));
        labels.push(format!("I-{k}"));
    }
    labels
}

/// Reads a JSONL (or Parquet, with list columns) file of `{"<tokens_key>": [words], "<tags_key>":
/// [tags]}`; rows whose lists differ in length, tags that are not BIO, and non-string entries are
/// errors naming file and line.
pub fn read_tagged_jsonl(
    path: &Path,
    tokens_key: &str,
    tags_key: &str,
) -> Result<Vec<TaggedSentence>> {
    let rows = crate::formats::json_rows(path)?.ok_or_else(|| {
        DataError::Dataset(format!(
            "{}: tagged sentences are read from .jsonl or .parquet (list columns)",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for (line, v) in rows {
        let bad = |m: String| DataError::Row { path: path.to_path_buf(), line, message: m };
        let list = |key: &str| -> Result<Vec<String>> {
            v.get(key)
                .and_then(|x| x.as_array())
                .ok_or_else(|| bad(format!("no `{key}` list")))?
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let (words, tags) = (list(tokens_key)?, list(tags_key)?);
        if words.len() != tags.len() {
            return Err(bad(format!("{} words but {} tags", words.len(), tags.len())));
        }
        if words.is_empty() {
            return Err(bad("no words".into()));
        }
        for t in &tags {
            check_bio(t).map_err(bad)?;
        }
        out.push(TaggedSentence { words, tags, line });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// Splits a reference into words, with `.`, `,`, `!`, `?`, `;`, `:` split off as words of their own.
pub fn words_of(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for raw in text.split_whitespace() {
        let mut w = raw;
        let mut tail = Vec::new();
        while let Some(c) = w.chars().last().filter(|c| ".,!?;:".contains(*c)) {
            tail.push(c.to_string());
            w = &w[..w.len() - c.len_utf8()];
        }
        if !w.is_empty() {
            words.push(w.to_string());
        }
        words.extend(tail.into_iter().rev());
    }
    words
}

/// Parses an E2E meaning representation `name: Blue Spice, eatType: coffee shop, …` into
/// `(slot, value)` pairs; slot names lose their spaces (`customer rating` → `customerRating`).
pub fn parse_mr(mr: &str) -> Vec<(String, String)> {
    mr.split(", ")
        .filter_map(|part| part.split_once(": "))
        .map(|(slot, value)| {
            let mut name = String::new();
            for (i, w) in slot.split_whitespace().enumerate() {
                let mut c = w.chars();
                match (i, c.next()) {
                    (0, Some(f)) => name.extend(std::iter::once(f).chain(c)),
                    (_, Some(f)) => name.extend(f.to_uppercase().chain(c)),
                    _ => {}
                }
            }
            (name, value.trim().to_string())
        })
        .collect()
}

/// Tags the words of `reference` with the slots of `mr` whose value occurs there word for word
/// (case-insensitive; the first occurrence, not overlapping an earlier tag). `familyFriendly` is
/// skipped: its values (`yes`/`no`) are never said verbatim.
pub fn tag_reference(mr: &str, reference: &str) -> (Vec<String>, Vec<String>) {
    let words = words_of(reference);
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let mut tags = vec!["O".to_string(); words.len()];
    for (slot, value) in parse_mr(mr) {
        if slot == "familyFriendly" {
            continue;
        }
        let needle: Vec<String> = words_of(&value).iter().map(|w| w.to_lowercase()).collect();
        if needle.is_empty() || needle.len() > lower.len() {
            continue;
        }
        let n = needle.len();
        let hit = (0..=lower.len() - n).find(|&s| {
            lower.get(s..s + n) == Some(&needle[..])
                && tags.get(s..s + n).is_some_and(|span| span.iter().all(|t| t == "O"))
        });
        if let Some(span) = hit.and_then(|s| tags.get_mut(s..s + n)) {
            for (k, t) in span.iter_mut().enumerate() {
                *t = format!("{}-{slot}", if k == 0 { "B" } else { "I" });
            }
        }
    }
    (words, tags)
}

/// `e2e-slots`: every E2E reference with its meaning representation's slot values tagged (BIO),
/// split by meaning representation exactly as [`crate::recipes::e2e`].
pub fn e2e_slots(dir: &Path) -> Result<TaggedSplits> {
    let pairs = crate::recipes::e2e(dir)?;
    let source = dir.join("task.json");
    let convert = |rows: Vec<crate::tasks::GenerationPair>| -> Result<Vec<TaggedSentence>> {
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (words, tags) = tag_reference(&p.source, &p.target);
                TaggedSentence { words, tags, line: i + 1 }
            })
            .filter(|s| !s.words.is_empty())
            .collect())
    };
    Ok(TaggedSplits { splits: pairs.try_map(convert)?, source })
}

/// A packaged tagging data set (`e2e-slots`) or a JSONL file (`tokens`, `tags`), split 80/10/10
/// with seed 13.
pub fn tagging(name_or_path: &str) -> Result<TaggedSplits> {
    if name_or_path == "e2e-slots" {
        return e2e_slots(&crate::recipes::fetched_dir("e2e")?);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(DataError::Dataset(format!(
            "`{name_or_path}` is neither a packaged tagging data set (e2e-slots) nor a file"
        )));
    }
    let rows = read_tagged_jsonl(path, "tokens", "tags")?;
    let (train, dev, test) =
        crate::split::split_indices(rows.len(), 0.1, 0.1, crate::recipes::SPLIT_SEED);
    let pick =
        |idx: Vec<usize>| idx.into_iter().filter_map(|i| rows.get(i).cloned()).collect::<Vec<_>>();
    Ok(TaggedSplits {
        splits: Splits { train: pick(train), dev: pick(dev), test: pick(test) },
        source: path.to_path_buf(),
    })
}

/// Tokenizes tagged sentences (in parallel) and aligns tags to first pieces; words that do not fit
/// in `max_len` tokens (special tokens included) are dropped from the example. A tag outside
/// `labels` is an error naming file and line.
pub fn tokenize_tagging(
    sentences: &[TaggedSentence],
    labels: &[String],
    tokenizer: &TextTokenizer,
    max_len: usize,
    path: &Path,
) -> Result<Vec<TaggedExample>> {
    // The tokenizer's special tokens around a text, e.g. BERT's [CLS] … [SEP]; none for SmolLM2.
    let wrap = tokenizer.encode("")?;
    let (head, tail): (Vec<u32>, Vec<u32>) = match wrap.split_first() {
        None => (vec![], vec![]),
        Some((&first, rest)) => (vec![first], rest.to_vec()),
    };
    sentences
        .par_iter()
        .map(|s| {
            let mut ids = head.clone();
            let mut word_starts = Vec::new();
            let mut tags = Vec::new();
            for (j, (word, tag)) in s.words.iter().zip(&s.tags).enumerate() {
                let label = labels.iter().position(|l| l == tag).ok_or_else(|| {
                    DataError::UnknownLabel {
                        path: path.to_path_buf(),
                        line: s.line,
                        label: tag.clone(),
                        known: labels.join(", "),
                    }
                })?;
                let text = if j == 0 { word.clone() } else { format!(" {word}") };
                let pieces = tokenizer.encode_plain(&text)?;
                if pieces.is_empty() {
                    continue;
                }
                if ids.len() + pieces.len() + tail.len() > max_len {
                    break;
                }
                word_starts.push(ids.len());
                tags.push(label);
                ids.extend(pieces);
            }
            ids.extend(&tail);
            Ok(TaggedExample { ids, word_starts, tags })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_their_slot_values_tagged() {
        let (words, tags) = tag_reference(
            "name: Blue Spice, eatType: coffee shop, area: city centre, familyFriendly: yes",
            "A coffee shop in the city centre area called Blue Spice.",
        );
        let pairs: Vec<(&str, &str)> =
            words.iter().map(String::as_str).zip(tags.iter().map(String::as_str)).collect();
        assert_eq!(
            pairs,
            [
                ("A", "O"),
                ("coffee", "B-eatType"),
                ("shop", "I-eatType"),
                ("in", "O"),
                ("the", "O"),
                ("city", "B-area"),
                ("centre", "I-area"),
                ("area", "O"),
                ("called", "O"),
                ("Blue", "B-name"),
                ("Spice", "I-name"),
                (".", "O"),
            ]
        );
        assert_eq!(parse_mr("customer rating: 5 out of 5")[0].0, "customerRating");
    }

    #[test]
    fn bio_tags_are_checked() {
        assert!(check_bio("O").is_ok() && check_bio("B-name").is_ok() && check_bio("I-x").is_ok());
        assert!(
            check_bio("B-").is_err() && check_bio("name").is_err() && check_bio("E-x").is_err()
        );
    }
}
