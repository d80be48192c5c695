//! PEFT's `adapter_config.json`, typed: the fields every prompt-learning method shares, plus the
//! method's own fields, each set defined in its method's folder. Written with the same keys (and
//! the same `null`s) PEFT 0.21.2 writes; read leniently (missing optional fields take PEFT's
//! defaults, unknown fields are ignored).

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::p_tuning::PTuningPeft;
use crate::prefix_tuning::PrefixPeft;
use crate::prompt_tuning::PromptTuningPeft;
use crate::spec::{EncoderSpec, MethodKind, PromptSpec};
use ptune_transformer::BackboneDims;

/// PEFT's `task_type` for sequence classification.
pub const SEQ_CLS: &str = "SEQ_CLS";
/// PEFT's `task_type` for causal language modelling.
pub const CAUSAL_LM: &str = "CAUSAL_LM";
/// PEFT's `task_type` for token classification (the head is saved under the same names as for
/// `SEQ_CLS`).
pub const TOKEN_CLS: &str = "TOKEN_CLS";

/// The version of PEFT whose format is written.
pub const PEFT_VERSION: &str = "0.21.2";

/// `adapter_config.json` of a prompt-learning adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// `PROMPT_TUNING`, `P_TUNING` or `PREFIX_TUNING`.
    pub peft_type: String,
    /// `SEQ_CLS`, `TOKEN_CLS`, `CAUSAL_LM`, … (PEFT's default when absent: causal LM).
    #[serde(default = "default_task_type")]
    pub task_type: String,
    /// Virtual tokens / prefix slots.
    pub num_virtual_tokens: usize,
    /// Width of one virtual token: the hidden size, or `kv_dim` for prefixes.
    #[serde(default)]
    pub token_dim: Option<usize>,
    /// Layers of the model.
    pub num_layers: usize,
    /// Attention heads (KV heads for prefixes, as PEFT does for GQA models).
    #[serde(default)]
    pub num_attention_heads: Option<usize>,
    /// Always 1 for the models ptune runs.
    #[serde(default = "one")]
    pub num_transformer_submodules: usize,
    /// Saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// The model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Model revision (unused by ptune).
    #[serde(default)]
    pub revision: Option<String>,
    /// PEFT's auto-mapping (unused by ptune).
    #[serde(default)]
    pub auto_mapping: Option<Value>,
    /// Modules saved beside the prompt (`["classifier", "score"]` for classification).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// The PEFT version of the format.
    #[serde(default)]
    pub peft_version: Option<String>,
    /// The method's own fields.
    #[serde(flatten)]
    pub method: PeftMethodConfig,
}

/// The method-specific part of [`PeftConfig`]. Read untagged: P-Tuning's fields name its encoder,
/// Prefix-Tuning's name its projection; anything else reads as Prompt Tuning's (all optional), and
/// [`PeftConfig::method_and_encoder`] decides by `peft_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PeftMethodConfig {
    /// `P_TUNING` (PEFT `PromptEncoderConfig`).
    PTuning(PTuningPeft),
    /// `PREFIX_TUNING` (PEFT `PrefixTuningConfig`): Prefix-Tuning and P-Tuning v2.
    Prefix(PrefixPeft),
    /// `PROMPT_TUNING` (PEFT `PromptTuningConfig`).
    PromptTuning(PromptTuningPeft),
}

fn default_task_type() -> String {
    CAUSAL_LM.into()
}
fn one() -> usize {
    1
}

impl PeftConfig {
    /// The config PEFT would write for `spec` on a model of shape `dims`.
    pub fn for_spec(
        spec: &PromptSpec,
        dims: &BackboneDims,
        task_type: &str,
        base_model: &str,
    ) -> Self {
        let prefix = !spec.method.is_input_level();
        let method = match spec.method {
            MethodKind::PromptTuning => {
                PeftMethodConfig::PromptTuning(PromptTuningPeft::for_spec())
            }
            MethodKind::PTuning => PeftMethodConfig::PTuning(PTuningPeft::for_spec(spec, dims)),
            MethodKind::PrefixTuning | MethodKind::PTuningV2 => {
                PeftMethodConfig::Prefix(PrefixPeft::for_spec(spec, dims))
            }
        };
        Self {
            peft_type: spec.method.peft_type().into(),
            task_type: task_type.into(),
            num_virtual_tokens: spec.num_virtual_tokens,
            token_dim: Some(if prefix { dims.kv_dim() } else { dims.hidden_size }),
            num_layers: dims.num_layers,
            num_attention_heads: Some(if prefix { dims.num_kv_heads } else { dims.num_heads }),
            num_transformer_submodules: 1,
            inference_mode: true,
            base_model_name_or_path: Some(base_model.into()),
            revision: None,
            auto_mapping: None,
            modules_to_save: (task_type == SEQ_CLS)
                .then(|| vec!["classifier".to_string(), "score".to_string()]),
            peft_version: Some(PEFT_VERSION.into()),
            method,
        }
    }

    /// The method and the encoder its `prompt_embeddings` came from, read from `peft_type` (and,
    /// for prefixes, `prefix_projection`: with it Prefix-Tuning, without it P-Tuning v2's direct
    /// tables). `Err` names an unknown `peft_type`.
    pub fn method_and_encoder(&self) -> Result<(MethodKind, EncoderSpec), String> {
        match (self.peft_type.as_str(), &self.method) {
            ("PROMPT_TUNING", _) => Ok((MethodKind::PromptTuning, EncoderSpec::Table)),
            ("P_TUNING", _) => Ok((MethodKind::PTuning, EncoderSpec::Table)),
            ("PREFIX_TUNING", PeftMethodConfig::Prefix(p)) if p.prefix_projection => {
                let hidden = p.encoder_hidden_size.ok_or_else(|| {
                    "`prefix_projection` is set but `encoder_hidden_size` is missing".to_string()
                })?;
                Ok((MethodKind::PrefixTuning, EncoderSpec::PrefixMlp { hidden }))
            }
            ("PREFIX_TUNING", _) => Ok((MethodKind::PTuningV2, EncoderSpec::Table)),
            (other, _) => Err(format!("peft_type `{other}` is not a soft-prompt method")),
        }
    }
}
