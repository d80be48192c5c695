//! # ptune-transformer
//!
//! Backend-generic frozen backbones for soft-prompt tuning: a BERT-family encoder and a Llama-family
//! decoder that match Hugging Face transformers, loaded from HF safetensors folders or GGUF files,
//! with the hooks the methods need (run from embeddings, per-layer [`PrefixKv`], position policy,
//! KV cache). The contracts are the
//! [`Backbone`] trait and its two capabilities, [`Encoder`] and [`Decoder`] (docs/design.md).

pub mod attention;
pub mod bert;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod dense;
pub mod error;
pub mod frozen;
pub mod hub;
pub mod input;
pub mod llama;
pub mod loader;
pub mod lower_cache;
pub mod model;
pub mod tokenizer;

pub use attention::{LayerPrefix, PrefixKv};
pub use cache::KvCache;
pub use checkpoint::CheckpointedLayers;
pub use config::{BackboneDims, BertConfig, LlamaConfig, ModelConfig, PositionPolicy, RopeScaling};
pub use error::{Result, TransformerError};
pub use frozen::FrozenOps;
pub use hub::resolve_model_path;
pub use input::{
    check_ids, ids_tensor, index_tensor, rows_at, Backbone, BackboneInput, Decoder, Encoder,
};
pub use lower_cache::CachedLowerLayers;
pub use model::{load_model, AnyBackbone, LoadedModel};
pub use tokenizer::TextTokenizer;
