//! # ptune-transformer
//!
//! Backend-generic frozen backbones for soft-prompt tuning: a BERT-family encoder and a Llama-family
//! decoder that match Hugging Face transformers, loaded from HF safetensors folders or GGUF files,
//! with the hooks the methods need (run from embeddings, per-layer [`PrefixKv`], position policy,
//! KV cache). See DESIGN.md §3 for the contracts.

pub mod attention;
pub mod bert;
pub mod config;
pub mod dense;
pub mod error;
pub mod frozen;
pub mod input;
pub mod llama;
pub mod loader;
pub mod model;
pub mod tokenizer;

pub use attention::{LayerPrefix, PrefixKv};
pub use config::{BackboneDims, BertConfig, LlamaConfig, ModelConfig, PositionPolicy};
pub use error::{Result, TransformerError};
pub use frozen::FrozenOps;
pub use input::{check_ids, Backbone, BackboneInput};
pub use model::{load_model, AnyBackbone, LoadedModel};
pub use tokenizer::TextTokenizer;
