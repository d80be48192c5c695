//! # ptune-testkit
//!
//! Seeded mutation fuzzing on stable Rust, shared by the test suites of every crate that parses
//! user files: start from a valid file, apply thousands of seeded random mutations, and check that
//! each mutant gives `Ok` or a typed error — never a panic ([`Tally`] counts panics under
//! `catch_unwind`; an abort or an out-of-memory kill fails the whole test binary).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// A seeded splitmix64 generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One of `items` (`items` must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// Values a length or size field is set to: zero, small, huge, and the edges.
pub const HUGE: [u64; 7] = [0, 1, 255, 1 << 31, 1 << 40, u64::MAX / 2, u64::MAX];

fn write_at(out: &mut [u8], at: usize, bytes: &[u8]) {
    for (k, b) in bytes.iter().enumerate() {
        if let Some(x) = out.get_mut(at + k) {
            *x = *b;
        }
    }
}

/// One random mutation of a binary file: truncation, bit flips, a u64 / u32 field set to an extreme
/// value (length fields of safetensors and GGUF headers among them), a zeroed or duplicated range.
pub fn mutate_bytes(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let n = out.len().max(1);
    let huge = HUGE[rng.below(HUGE.len())];
    match rng.below(6) {
        0 => out.truncate(rng.below(n)),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(n);
                if let Some(b) = out.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            // Header fields sit at the start: favour the first 256 bytes.
            let i = if rng.below(2) == 0 { rng.below(256.min(n)) } else { rng.below(n) };
            write_at(&mut out, i, &huge.to_le_bytes());
        }
        3 => {
            let i = rng.below(256.min(n));
            write_at(&mut out, i, &(huge as u32).to_le_bytes());
        }
        4 => {
            let (a, len) = (rng.below(n), 1 + rng.below(64));
            for b in out.iter_mut().skip(a).take(len) {
                *b = 0;
            }
        }
        _ => {
            let (a, len) = (rng.below(n), 1 + rng.below(64));
            let piece: Vec<u8> = out.iter().skip(a).take(len).copied().collect();
            let at = rng.below(n).min(out.len());
            out.splice(at..at, piece);
        }
    }
    out
}

/// Byte spans of the numbers in `text`.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b.get(i).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !b.get(i - 1).is_some_and(u8::is_ascii_alphanumeric));
        if starts {
            let start = i;
            while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'.' || *c == b'e') {
                i += 1;
            }
            spans.push((start, i));
        }
        i += 1;
    }
    spans
}

/// What a number or value is replaced with: extremes, other types, nothing.
const REPLACEMENTS: [&str; 12] = [
    "1000000000",
    "0",
    "-1",
    "1e300",
    "18446744073709551615",
    "2.5",
    "\"7\"",
    "null",
    "[]",
    "{}",
    "true",
    "NaN",
];

/// The largest char boundary of `text` at or below `at`.
fn boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&c| text.is_char_boundary(c)).unwrap_or(0)
}

/// One random mutation of a JSON text: a number set to an extreme (huge, negative, fractional, a
/// string, another type), a character deleted, a line (a key) duplicated, truncation.
pub fn mutate_json(text: &str, rng: &mut Rng) -> String {
    let numbers = number_spans(text);
    match rng.below(5) {
        0 | 1 if !numbers.is_empty() => {
            let (a, b) = numbers[rng.below(numbers.len())];
            let with = REPLACEMENTS[rng.below(REPLACEMENTS.len())];
            format!("{}{with}{}", &text[..a], &text[b..])
        }
        2 => {
            let mut chars: Vec<char> = text.chars().collect();
            if !chars.is_empty() {
                chars.remove(rng.below(chars.len()));
            }
            chars.into_iter().collect()
        }
        3 => {
            // Duplicate one line (a `"key": value,` line: serde takes the last or rejects it).
            let lines: Vec<&str> = text.lines().collect();
            let mut out = lines.clone();
            if let Some(line) = rng.pick(&lines) {
                out.insert(rng.below(lines.len()), line);
            }
            out.join("\n")
        }
        _ => text[..boundary(text, rng.below(text.len().max(1)))].to_string(),
    }
}

/// One random mutation of a line-oriented text file (CSV, TSV, JSONL, TOML): a JSON-style mutation,
/// a line duplicated, deleted or swapped with another, a separator (`,` `\t` `"` `=` `:` `[`)
/// inserted or deleted, an empty or very long line, invalid UTF-8 is left to [`mutate_bytes`].
pub fn mutate_text(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    match rng.below(7) {
        0 | 1 => return mutate_json(text, rng),
        2 if n > 0 => {
            lines.remove(rng.below(n));
        }
        3 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            lines.swap(a, b);
        }
        4 if n > 0 => {
            let i = rng.below(n);
            let line = &mut lines[i];
            let at = boundary(line, rng.below(line.len() + 1));
            let sep = [",", "\t", "\"", "=", ":", "[", "]", "{", "}"][rng.below(9)];
            if rng.below(2) == 0 || at == line.len() {
                line.insert_str(at, sep);
            } else if let Some(c) = line[at..].chars().next() {
                line.replace_range(at..at + c.len_utf8(), "");
            }
        }
        5 => {
            let i = rng.below(n + 1);
            let filler = if rng.below(2) == 0 { String::new() } else { "x".repeat(100_000) };
            lines.insert(i.min(lines.len()), filler);
        }
        _ if n > 0 => {
            let i = rng.below(n);
            let line = lines[i].clone();
            lines.insert(i, line);
        }
        _ => {}
    }
    lines.join("\n")
}

/// Counts of one fuzz run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Mutants tried.
    pub inputs: usize,
    /// Mutants that parsed (and ran).
    pub loaded: usize,
    /// Mutants refused with a typed error.
    pub errors: usize,
    /// Panics, each with the mutant's name and the message.
    pub panics: Vec<String>,
}

impl Tally {
    /// Runs `f` under `catch_unwind`: `true` counts as loaded, `false` as a typed error, a panic
    /// is recorded under `what`.
    pub fn run(&mut self, what: &str, f: impl FnOnce() -> bool) {
        self.inputs += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(true) => self.loaded += 1,
            Ok(false) => self.errors += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.panics.push(format!("{what}: {msg}"));
            }
        }
    }

    /// Prints the counts; fails on any panic, or when no mutant was rejected (nothing tested).
    ///
    /// # Panics
    /// When a mutant panicked or none was rejected: this is a test assertion.
    #[allow(clippy::panic)]
    pub fn check(&self, name: &str) {
        eprintln!(
            "{name}: {} inputs, {} loaded, {} typed errors, {} panics",
            self.inputs,
            self.loaded,
            self.errors,
            self.panics.len()
        );
        if !self.panics.is_empty() {
            panic!("{name}: panics: {:#?}", &self.panics);
        }
        if self.errors == 0 {
            panic!("{name}: no mutant was rejected, so nothing was tested");
        }
    }
}

/// A fresh scratch folder under the system's temporary folder, unique to this process and `tag`.
///
/// # Panics
/// When the folder cannot be made (a test precondition).
#[allow(clippy::expect_used)]
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ptune-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}
