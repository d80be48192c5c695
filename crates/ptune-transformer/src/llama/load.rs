//! HF `LlamaForCausalLM` (and `Qwen2ForCausalLM`) weights → [`Llama`]. GGUF files are read through
//! the same HF names (see `loader::gguf` for the GGUF side of the table). Biases (`.bias` beside
//! each `.weight`) are read where the config has them: q/k/v for Qwen2, q/k/v/o with
//! `attention_bias`, the MLP with `mlp_bias`.
//!
//! | HF name                                            | field                                 |
//! |----------------------------------------------------|---------------------------------------|
//! | `model.embed_tokens.weight`                        | `embed_tokens.weight`                 |
//! | `model.layers.{i}.input_layernorm.weight`          | `layers[i].input_norm.gamma`          |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | `layers[i].attention.{q,k,v,o}_proj`  |
//! | `model.layers.{i}.post_attention_layernorm.weight` | `layers[i].post_norm.gamma`           |
//! | `model.layers.{i}.mlp.{gate,up,down}_proj.weight`  | `layers[i].mlp.{gate,up,down}_proj`   |
//! | `model.norm.weight`                                | `norm.gamma`                          |
//! | `lm_head.weight` (absent when tied)                | `lm_head`                             |

use burn::tensor::backend::Backend;

use super::{Llama, LlamaAttention, LlamaLayer, LlamaMlp};
use crate::config::LlamaConfig;
use crate::error::{Result, TransformerError};
use crate::loader::{ParamLoader, TensorSource};

/// Loads a frozen [`Llama`] from `source`; also returns the HF names of every tensor loaded.
pub fn load_llama<B: Backend>(
    config: &LlamaConfig,
    source: &dyn TensorSource,
    device: &B::Device,
) -> Result<(Llama<B>, Vec<String>)> {
    let mut l = ParamLoader::<B>::new(source, device);
    let (d, ffn, eps) = (config.hidden_size, config.intermediate_size, config.rms_norm_eps);
    let (heads, kv_heads, hd) = (config.num_attention_heads, config.kv_heads(), config.head_dim());
    let (qkv_bias, o_bias, mlp_bias) = (config.qkv_bias(), config.o_bias(), config.mlp_bias);
    let embed_tokens = l.embedding("model.embed_tokens", config.vocab_size, d)?;
    // No capacity from the config: a huge layer count fails at the first missing tensor
    // instead of allocating.
    let mut layers = Vec::new();
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(LlamaLayer {
            input_norm: l.rms_norm(&format!("{p}.input_layernorm"), d, eps)?,
            attention: LlamaAttention {
                q_proj: l.linear(&format!("{p}.self_attn.q_proj"), d, heads * hd, qkv_bias)?,
                k_proj: l.linear(&format!("{p}.self_attn.k_proj"), d, kv_heads * hd, qkv_bias)?,
                v_proj: l.linear(&format!("{p}.self_attn.v_proj"), d, kv_heads * hd, qkv_bias)?,
                o_proj: l.linear(&format!("{p}.self_attn.o_proj"), heads * hd, d, o_bias)?,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
            },
            post_norm: l.rms_norm(&format!("{p}.post_attention_layernorm"), d, eps)?,
            mlp: LlamaMlp {
                gate_proj: l.linear(&format!("{p}.mlp.gate_proj"), d, ffn, mlp_bias)?,
                up_proj: l.linear(&format!("{p}.mlp.up_proj"), d, ffn, mlp_bias)?,
                down_proj: l.linear(&format!("{p}.mlp.down_proj"), ffn, d, mlp_bias)?,
            },
        });
    }
    let norm = l.rms_norm("model.norm", d, eps)?;
    let lm_head = if config.tie_word_embeddings && !l.has("lm_head.weight")? {
        None
    } else {
        Some(l.linear("lm_head", d, config.vocab_size, false)?)
    };
    let names = l.loaded_names().to_vec();
    let scaling = config.rope_scaling().map_err(|message| TransformerError::Config {
        origin: source.origin().display().to_string(),
        message,
    })?;
    let inv_freq = super::inv_freq(config.rope_theta, hd, scaling);
    Ok((Llama { embed_tokens, layers, norm, lm_head, config: config.clone(), inv_freq }, names))
}
