//! Model configs. The serde structs mirror Hugging Face `config.json` (`BertConfig`, `LlamaConfig`
//! of transformers 4.57); unknown fields are ignored, missing optional fields take HF's defaults.

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TransformerError};

/// Where real tokens sit when virtual tokens or prefix slots come before them.
///
/// - `Shift`: real tokens start at position `N` (the number of prefix slots), which is what HF and
///   PEFT do when prefixes are passed as `past_key_values`. The default, needed for PEFT parity.
/// - `Keep`: real tokens keep positions `0..L`, as if there were no prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionPolicy {
    /// Real tokens start after the prefix slots.
    #[default]
    Shift,
    /// Real tokens keep positions `0..L`.
    Keep,
}

/// HF `BertConfig` (modeling_bert.py), also read for RoBERTa and XLM-R (`RobertaConfig`,
/// `XLMRobertaConfig`: the same encoder, with positions counted from `pad_token_id + 1`). Only
/// absolute position embeddings are supported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// HF's `model_type`: `bert`, `roberta` or `xlm-roberta`.
    #[serde(default = "default_bert_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Activation of the FFN (only `gelu`, HF's exact erf GELU, is supported).
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// Size of the absolute position table.
    pub max_position_embeddings: usize,
    /// Number of token types (segment ids).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
    /// Position embedding type (only `absolute`).
    #[serde(default = "default_absolute")]
    pub position_embedding_type: String,
}

fn default_bert_type() -> String {
    "bert".into()
}
fn default_gelu() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_absolute() -> String {
    "absolute".into()
}

/// HF `LlamaConfig` (modeling_llama.py), also read for Qwen2 (`Qwen2Config`, modeling_qwen2.py:
/// the same decoder with biases on the query, key and value projections). RoPE scaling of the
/// `linear` and `llama3` kinds is supported ([`RopeScaling`]); other kinds and sliding-window
/// attention are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// HF's `model_type`: `llama` or `qwen2`.
    #[serde(default = "default_llama_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Activation of the MLP (only `silu`).
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling as HF writes it (`{"rope_type": "llama3", "factor": 8.0, …}`); read through
    /// [`LlamaConfig::rope_scaling`].
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Whether the LM head shares the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v/o projections (Llama's `attention_bias`).
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Qwen2's sliding-window attention (unsupported: must be false or absent).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<usize>,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<usize>,
}

fn default_llama_type() -> String {
    "llama".into()
}
fn default_silu() -> String {
    "silu".into()
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}

impl BertConfig {
    /// Index of the first real position: RoBERTa and XLM-R count positions from
    /// `pad_token_id + 1` (HF `create_position_ids_from_input_ids`), BERT from 0.
    pub fn position_offset(&self) -> usize {
        if self.model_type == "bert" {
            0
        } else {
            self.pad_token_id.saturating_add(1)
        }
    }
}

/// RoPE frequency scaling (HF `ROPE_INIT_FUNCTIONS` in modeling_rope_utils.py).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `linear`: every inverse frequency divided by `factor` (positions interpolated).
    Linear {
        /// Interpolation factor.
        factor: f64,
    },
    /// `llama3` (Llama 3.1+): low frequencies divided by `factor`, high ones kept, the band
    /// between interpolated smoothly.
    Llama3 {
        /// Scale of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// Reads HF's `rope_scaling` object (`rope_type`, or the older `type`); `None` for the
    /// `default` kind. Unknown kinds and missing or non-positive fields are errors.
    pub fn from_hf(value: &serde_json::Value) -> std::result::Result<Option<Self>, String> {
        if value.is_null() {
            return Ok(None);
        }
        let obj = value.as_object().ok_or("rope_scaling must be an object")?;
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(serde_json::Value::as_str)
            .ok_or("rope_scaling has no `rope_type`")?;
        let num = |key: &str| -> std::result::Result<f64, String> {
            obj.get(key)
                .and_then(serde_json::Value::as_f64)
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("rope_scaling `{kind}` needs a positive number `{key}`"))
        };
        match kind {
            "default" => Ok(None),
            "linear" => Ok(Some(RopeScaling::Linear { factor: num("factor")? })),
            "llama3" => {
                let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
                if high <= low {
                    return Err(format!(
                        "rope_scaling llama3: high_freq_factor {high} must exceed low_freq_factor {low}"
                    ));
                }
                Ok(Some(RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                }))
            }
            other => Err(format!(
                "rope_scaling kind `{other}` is not supported (supported: default, linear, llama3)"
            )),
        }
    }
}

impl LlamaConfig {
    /// The RoPE scaling of the config, checked (`None` when absent, null or `default`).
    pub fn rope_scaling(&self) -> std::result::Result<Option<RopeScaling>, String> {
        self.rope_scaling.as_ref().map_or(Ok(None), RopeScaling::from_hf)
    }

    /// Whether the query, key and value projections have a bias (Qwen2, or `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Whether the output projection has a bias (only with `attention_bias`).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Key/value heads (GQA).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

/// The code family that runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// [`crate::bert::Bert`].
    Bert,
    /// [`crate::llama::Llama`].
    Llama,
}

/// Every HF `model_type` ptune reads, with the family that runs it: the registry a new checkpoint
/// type is added to.
pub const FAMILIES: &[(&str, Family)] = &[
    ("bert", Family::Bert),
    ("roberta", Family::Bert),
    ("xlm-roberta", Family::Bert),
    ("llama", Family::Llama),
    ("qwen2", Family::Llama),
];

/// The largest size (vocabulary, width, heads, positions) a config may give.
pub const MAX_SIZE: usize = 1 << 24;
/// The largest layer count a config may give.
pub const MAX_LAYERS: usize = 1 << 12;

/// The `model_type`s of [`FAMILIES`], comma-separated (for messages).
pub fn supported_model_types() -> String {
    FAMILIES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// A backbone config, tagged by HF's `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A BERT-family encoder.
    Bert(BertConfig),
    /// A Llama-family decoder.
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// Reads and validates an HF `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TransformerError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates the text of an HF `config.json`; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let err = |message: String| TransformerError::Config { origin: origin.into(), message };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| err("no `model_type` field".into()))?
            .to_string();
        let family = FAMILIES
            .iter()
            .find(|(name, _)| *name == model_type)
            .map(|&(_, family)| family)
            .ok_or_else(|| TransformerError::UnknownArchitecture(model_type.clone()))?;
        let config = match family {
            Family::Bert => ModelConfig::Bert(
                serde_json::from_value(value)
                    .map_err(|e| err(format!("{model_type} config: {e}")))?,
            ),
            Family::Llama => ModelConfig::Llama(
                serde_json::from_value(value)
                    .map_err(|e| err(format!("{model_type} config: {e}")))?,
            ),
        };
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks the invariants the modules rely on, and bounds every size before anything is
    /// allocated from it (a size beyond the bound is a corrupt or hostile config, not a model).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |name: &str, v: usize| {
            let max = if name.ends_with("layers") { MAX_LAYERS } else { MAX_SIZE };
            if v == 0 {
                Err(format!("`{name}` must be positive"))
            } else if v > max {
                Err(format!("`{name}` is {v}, beyond the largest supported {max}"))
            } else {
                Ok(())
            }
        };
        let positive_float = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("`{name}` is {v}; it must be a positive number"))
            }
        };
        match self {
            ModelConfig::Bert(c) => {
                positive_float("layer_norm_eps", c.layer_norm_eps)?;
                positive("vocab_size", c.vocab_size)?;
                positive("hidden_size", c.hidden_size)?;
                positive("num_hidden_layers", c.num_hidden_layers)?;
                positive("num_attention_heads", c.num_attention_heads)?;
                positive("intermediate_size", c.intermediate_size)?;
                positive("max_position_embeddings", c.max_position_embeddings)?;
                positive("type_vocab_size", c.type_vocab_size)?;
                if c.hidden_size % c.num_attention_heads != 0 {
                    return Err(format!(
                        "hidden_size {} is not divisible by num_attention_heads {}",
                        c.hidden_size, c.num_attention_heads
                    ));
                }
                if c.hidden_act != "gelu" {
                    return Err(format!("hidden_act `{}` unsupported (only `gelu`)", c.hidden_act));
                }
                if c.max_position_embeddings <= c.position_offset() {
                    return Err(format!(
                        "max_position_embeddings {} leaves no position after the offset {} of {}",
                        c.max_position_embeddings,
                        c.position_offset(),
                        c.model_type
                    ));
                }
                if c.position_embedding_type != "absolute" {
                    return Err(format!(
                        "position_embedding_type `{}` unsupported (only `absolute`)",
                        c.position_embedding_type
                    ));
                }
            }
            ModelConfig::Llama(c) => {
                positive_float("rms_norm_eps", c.rms_norm_eps)?;
                positive_float("rope_theta", c.rope_theta)?;
                positive("vocab_size", c.vocab_size)?;
                positive("hidden_size", c.hidden_size)?;
                positive("num_hidden_layers", c.num_hidden_layers)?;
                positive("num_attention_heads", c.num_attention_heads)?;
                positive("num_key_value_heads", c.kv_heads())?;
                positive("intermediate_size", c.intermediate_size)?;
                positive("max_position_embeddings", c.max_position_embeddings)?;
                positive("head_dim", c.head_dim())?;
                if c.num_attention_heads % c.kv_heads() != 0 {
                    return Err(format!(
                        "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                        c.num_attention_heads,
                        c.kv_heads()
                    ));
                }
                if c.head_dim() % 2 != 0 {
                    return Err(format!("head_dim {} must be even for RoPE", c.head_dim()));
                }
                if c.hidden_act != "silu" {
                    return Err(format!("hidden_act `{}` unsupported (only `silu`)", c.hidden_act));
                }
                c.rope_scaling()?;
                if c.use_sliding_window {
                    return Err("sliding-window attention is not supported".into());
                }
            }
        }
        Ok(())
    }

    /// The shape facts every method needs, whatever the family.
    pub fn dims(&self) -> BackboneDims {
        match self {
            ModelConfig::Bert(c) => BackboneDims {
                architecture: "bert",
                num_layers: c.num_hidden_layers,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_attention_heads,
                head_dim: c.hidden_size / c.num_attention_heads,
                hidden_size: c.hidden_size,
                vocab_size: c.vocab_size,
                max_positions: c.max_position_embeddings.saturating_sub(c.position_offset()),
            },
            ModelConfig::Llama(c) => BackboneDims {
                architecture: "llama",
                num_layers: c.num_hidden_layers,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.kv_heads(),
                head_dim: c.head_dim(),
                hidden_size: c.hidden_size,
                vocab_size: c.vocab_size,
                max_positions: c.max_position_embeddings,
            },
        }
    }
}

/// Shape facts of a loaded backbone: what prompt and prefix modules size themselves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackboneDims {
    /// `bert` or `llama`.
    pub architecture: &'static str,
    /// Transformer layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (equal to `num_heads` without GQA).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Size of the position table / trained context.
    pub max_positions: usize,
}

impl BackboneDims {
    /// Width of one layer's keys (or values): `num_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_architecture_and_bad_shapes() {
        let e = ModelConfig::from_json(r#"{"model_type":"gpt_neox"}"#, "t").unwrap_err();
        assert!(matches!(e, TransformerError::UnknownArchitecture(ref a) if a == "gpt_neox"));
        let e = ModelConfig::from_json(
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":30,"num_hidden_layers":1,
                "num_attention_heads":4,"intermediate_size":8,"max_position_embeddings":8}"#,
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not divisible"), "{e}");
        let e = ModelConfig::from_json("{not json", "cfg.json").unwrap_err();
        assert!(e.to_string().contains("cfg.json"), "{e}");
    }

    #[test]
    fn llama_defaults_follow_hf() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":32,"num_hidden_layers":1,
                "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":8,
                "max_position_embeddings":64}"#,
            "t",
        )
        .unwrap();
        let d = c.dims();
        assert_eq!((d.num_kv_heads, d.head_dim, d.kv_dim()), (2, 8, 16));
    }

    #[test]
    fn every_registered_model_type_parses_to_its_family() {
        let encoder = |t: &str| {
            format!(
                r#"{{"model_type":"{t}","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                    "num_attention_heads":2,"intermediate_size":8,"max_position_embeddings":514,
                    "pad_token_id":1}}"#
            )
        };
        for (t, offset) in [("bert", 0), ("roberta", 2), ("xlm-roberta", 2)] {
            let ModelConfig::Bert(c) = ModelConfig::from_json(&encoder(t), "t").unwrap() else {
                panic!("{t} is an encoder")
            };
            assert_eq!(c.position_offset(), offset, "{t}");
            assert_eq!(ModelConfig::Bert(c).dims().max_positions, 514 - offset, "{t}");
        }
        let decoder = |t: &str, extra: &str| {
            format!(
                r#"{{"model_type":"{t}","vocab_size":10,"hidden_size":32,"num_hidden_layers":1,
                    "num_attention_heads":4,"intermediate_size":8,"max_position_embeddings":64{extra}}}"#
            )
        };
        let parse = |json: String| match ModelConfig::from_json(&json, "t").unwrap() {
            ModelConfig::Llama(c) => (c.qkv_bias(), c.o_bias()),
            other => panic!("{other:?} is not a decoder"),
        };
        assert_eq!(parse(decoder("llama", "")), (false, false));
        assert_eq!(parse(decoder("llama", r#","attention_bias":true"#)), (true, true));
        assert_eq!(parse(decoder("qwen2", "")), (true, false));
        let e = ModelConfig::from_json(&decoder("qwen2", r#","use_sliding_window":true"#), "t")
            .unwrap_err();
        assert!(e.to_string().contains("sliding-window"), "{e}");
        let e = ModelConfig::from_json(r#"{"model_type":"gpt2"}"#, "t").unwrap_err();
        assert!(e.to_string().contains("bert, roberta, xlm-roberta, llama, qwen2"), "{e}");
    }
}
