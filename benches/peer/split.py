#!/usr/bin/env python3
"""ptune's `rt-sentences` split, reproduced exactly in Python (for the PEFT peer scripts).

Mirrors crates/ptune-data/src/recipes.rs (`rt_sentences`, `split_records`, SPLIT_SEED = 13) and
crates/ptune-data/src/split.rs (`SplitMix`, `shuffled`, `split_indices`):

- rows of `$PTUNE_CACHE/datasets/rt-sentences/movieReviewSnippets_GroundTruth.txt` (TSV: id, score,
  sentence; the sentence is everything after the second tab), blank lines skipped;
- `|score| <= 0.5` dropped, else `score > 0` positive, otherwise negative; labels
  ["negative", "positive"] (label index 0, 1);
- `split_indices(n, 0.1, 0.1, 13)`: the order is `shuffled(n, 13)` (splitmix64 + Fisher–Yates);
  dev = its first round(0.1 n), test = the next round(0.1 n), train = the rest, each in shuffled order;
- the CLI's `--train-limit N` takes the first N rows of train in that order.

`python benches/peer/split.py --check` prints the sizes and the first 3 dev and train sentences, to be
compared with the Rust side.
"""
import math
import os
import re
import sys
from pathlib import Path

MASK64 = (1 << 64) - 1
SPLIT_SEED = 13
LABELS = ["negative", "positive"]
CACHE = Path(os.environ.get("PTUNE_CACHE", Path.home() / ".cache" / "ptune"))
RT_FILE = CACHE / "datasets" / "rt-sentences" / "movieReviewSnippets_GroundTruth.txt"

# Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` strips. Python's `str.strip()`
# also strips U+001C..U+001F, so it is not used.
_RUST_WS = "".join(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                             0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
# The strings Rust's `f64::from_str` accepts (no surrounding whitespace, no `_`, unlike `float()`).
_RUST_F64 = re.compile(r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
                       re.IGNORECASE)


class SplitMix:
    """splitmix64, as `ptune_data::split::SplitMix` (u64 wrapping arithmetic)."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return self.next_u64() % n


def shuffled(n, seed):
    """`0..n` shuffled with `seed` (Fisher–Yates from the end, as `ptune_data::split::shuffled`)."""
    order = list(range(n))
    rng = SplitMix(seed)
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def round_half_away(x):
    """Rust's `f64::round` (halves away from zero; Python's `round` rounds halves to even)."""
    a = abs(x)
    f = math.floor(a)
    return math.copysign(f + (1.0 if a - f >= 0.5 else 0.0), x)  # a - f is exact


def split_indices(n, dev, test, seed):
    """(train, dev, test) index lists, as `ptune_data::split::split_indices`."""
    order = shuffled(n, seed)
    n_dev = int(round_half_away(n * dev))
    n_test = int(round_half_away(n * test))
    return order[n_dev + n_test:], order[:n_dev], order[n_dev:n_dev + n_test]


def read_rt_sentences(path=RT_FILE):
    """The binarized rows in file order: a list of dicts {text, label (0/1), line (1-based)}."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8")  # strict, like read_to_string; no newline translation
    lines = text.split("\n")
    if lines and lines[-1] == "":  # str::lines yields no empty line after a final "\n"
        lines.pop()
    records = []
    for i, raw in enumerate(lines):
        raw = raw.rstrip("\r")  # str::lines drops one "\r", trim_end_matches('\r') the rest
        if raw.strip(_RUST_WS) == "":
            continue
        cols = raw.split("\t", 2)
        if len(cols) < 3:
            raise ValueError(f"{path}:{i + 1}: expected 3 tab-separated columns")
        score_s = cols[1].strip(_RUST_WS)
        if not _RUST_F64.fullmatch(score_s):
            raise ValueError(f"{path}:{i + 1}: score `{cols[1]}` is not a number")
        score = float(score_s)
        if abs(score) <= 0.5:
            continue
        records.append({"text": cols[2], "label": 1 if score > 0.0 else 0, "line": i + 1})
    if not records:
        raise ValueError(f"{path}: no rows")
    return records


def rt_splits(path=RT_FILE, train_limit=None):
    """{"train", "dev", "test"}: lists of records in split order; train cut to its first
    `train_limit` rows (the CLI's `--train-limit`)."""
    records = read_rt_sentences(path)
    train, dev, test = split_indices(len(records), 0.1, 0.1, SPLIT_SEED)
    pick = lambda idx: [records[i] for i in idx]  # noqa: E731
    out = {"train": pick(train), "dev": pick(dev), "test": pick(test)}
    if train_limit is not None:
        out["train"] = out["train"][:train_limit]
    return out


def check():
    records = read_rt_sentences()
    s = rt_splits()
    pos = sum(r["label"] for r in records)
    print(f"file: {RT_FILE}")
    print(f"rows: {len(records)} ({pos} positive, {len(records) - pos} negative)")
    print(f"train / dev / test: {len(s['train'])} / {len(s['dev'])} / {len(s['test'])}")
    for name in ["dev", "train"]:
        print(f"first 3 {name}:")
        for r in s[name][:3]:
            print(f"  [{LABELS[r['label']]}] (line {r['line']}) {r['text']}")
    expected = (10043, 8035, 1004, 1004, 4982)
    got = (len(records), len(s["train"]), len(s["dev"]), len(s["test"]), pos)
    ok = got == expected
    print("sizes match the expected 10043 rows, 8035/1004/1004, 4982 positive" if ok
          else f"MISMATCH: got {got}, expected {expected}")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    print(__doc__)
    sys.exit(0 if not sys.argv[1:] else 2)
