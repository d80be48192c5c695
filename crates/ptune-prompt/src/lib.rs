//! # ptune-prompt
//!
//! The four soft-prompt methods of the spec over frozen `ptune-transformer` backbones, one folder each
//! ([`prompt_tuning`], [`p_tuning`], [`prefix_tuning`], [`p_tuning_v2`]), all producing a
//! [`SoftPrompt`] and sharing one [`wiring`] module (placing prompts, extending masks, per-layer K/V,
//! mixed-adapter batches, stripping virtual tokens). [`adapter`] reads and writes PEFT's adapter
//! format; [`inspect`] counts parameters and projects prompts onto the vocabulary. [`registry`]
//! names every method and builds any of them from [`MethodOptions`].

pub mod adapter;
pub mod error;
pub mod files;
pub mod head;
pub mod inspect;
pub mod p_tuning;
pub mod p_tuning_v2;
pub mod peft_config;
pub mod prefix_tuning;
pub mod prompt_tuning;
pub mod registry;
pub mod soft_prompt;
pub mod spec;
pub mod training_state;
pub mod wiring;

pub use error::{PromptError, Result};
pub use head::{ClassifierHead, ClassifierHeadConfig};
pub use registry::{EncoderKind, MethodInfo, MethodOptions};
pub use soft_prompt::{prepare_mixed, prepare_rows, rows_prefix, SoftPrompt};
pub use spec::{EncoderSpec, MethodKind, Placement, PromptSpec};
pub use wiring::PromptedBatch;
