//! HF `BertModel` weights → [`Bert`].
//!
//! | HF name (optionally prefixed `bert.`)                 | field                                   |
//! |-------------------------------------------------------|-----------------------------------------|
//! | `embeddings.word_embeddings.weight`                   | `embeddings.word.weight`                |
//! | `embeddings.position_embeddings.weight`               | `embeddings.position.weight`            |
//! | `embeddings.token_type_embeddings.weight`             | `embeddings.token_type.weight`          |
//! | `embeddings.LayerNorm.{weight,bias}`                  | `embeddings.norm.{gamma,beta}`          |
//! | `encoder.layer.{i}.attention.self.{query,key,value}`  | `layers[i].attention.{query,key,value}` |
//! | `encoder.layer.{i}.attention.output.dense`            | `layers[i].attention.output`            |
//! | `encoder.layer.{i}.attention.output.LayerNorm`        | `layers[i].attention.norm`              |
//! | `encoder.layer.{i}.intermediate.dense`                | `layers[i].intermediate`                |
//! | `encoder.layer.{i}.output.dense`                      | `layers[i].output`                      |
//! | `encoder.layer.{i}.output.LayerNorm`                  | `layers[i].norm`                        |
//! | `pooler.dense` (optional)                             | `pooler`                                |

use burn::tensor::backend::Backend;

use super::{Bert, BertAttention, BertEmbeddings, BertLayer};
use crate::config::BertConfig;
use crate::error::Result;
use crate::loader::{ParamLoader, TensorSource};

/// Loads a frozen [`Bert`] from `source`; also returns the HF names of every tensor loaded.
pub fn load_bert<B: Backend>(
    config: &BertConfig,
    source: &dyn TensorSource,
    device: &B::Device,
) -> Result<(Bert<B>, Vec<String>)> {
    let mut l = ParamLoader::<B>::new(source, device);
    let (d, ffn, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
    let embeddings = BertEmbeddings {
        word: l.embedding("embeddings.word_embeddings", config.vocab_size, d)?,
        position: l.embedding(
            "embeddings.position_embeddings",
            config.max_position_embeddings,
            d,
        )?,
        token_type: l.embedding("embeddings.token_type_embeddings", config.type_vocab_size, d)?,
        norm: l.layer_norm("embeddings.LayerNorm", d, eps)?,
    };
    // No capacity from the config: a huge layer count fails at the first missing tensor
    // instead of allocating.
    let mut layers = Vec::new();
    for i in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        layers.push(BertLayer {
            attention: BertAttention {
                query: l.linear(&format!("{p}.attention.self.query"), d, d, true)?,
                key: l.linear(&format!("{p}.attention.self.key"), d, d, true)?,
                value: l.linear(&format!("{p}.attention.self.value"), d, d, true)?,
                output: l.linear(&format!("{p}.attention.output.dense"), d, d, true)?,
                norm: l.layer_norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
                num_heads: config.num_attention_heads,
            },
            intermediate: l.linear(&format!("{p}.intermediate.dense"), d, ffn, true)?,
            output: l.linear(&format!("{p}.output.dense"), ffn, d, true)?,
            norm: l.layer_norm(&format!("{p}.output.LayerNorm"), d, eps)?,
        });
    }
    let pooler = if l.has("pooler.dense.weight")? {
        Some(l.linear("pooler.dense", d, d, true)?)
    } else {
        None
    };
    let names = l.loaded_names().to_vec();
    Ok((Bert { embeddings, layers, pooler, config: config.clone() }, names))
}
