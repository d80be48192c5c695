//! The method registry: each method's name, PEFT type, one-line summary and the options it reads,
//! and one way to build any method from [`MethodOptions`]. The CLI, the TOML run files and the
//! benches go through it instead of keeping their own lists of method names.
//!
//! Each method's folder owns its entry (`INFO`) and its defaults (`from_options`); this module only
//! collects them.

use std::fmt;
use std::str::FromStr;

use ptune_transformer::{Backbone, FrozenOps, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::error::{PromptError, Result};
use crate::soft_prompt::SoftPrompt;
use crate::spec::MethodKind;
use crate::{p_tuning, p_tuning_v2, prefix_tuning, prompt_tuning};

/// Virtual tokens (prefix slots) when the options give none.
pub const DEFAULT_VIRTUAL_TOKENS: usize = 16;

/// The reparameterization encoder of P-Tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum EncoderKind {
    /// PEFT's two-layer MLP.
    #[default]
    Mlp,
    /// PEFT's (and NeMo's) BiLSTM + MLP.
    Lstm,
    /// The P-Tuning paper's BiLSTM layout (width `d/2`).
    LstmPaper,
}

/// What a user may set about a method; each method reads the options its [`MethodInfo`] lists and
/// fills the rest with its own defaults.
///
/// With the `clap` feature these are also command-line flags (`--virtual-tokens`, `--encoder`, …),
/// which a CLI flattens into its own arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct MethodOptions {
    /// Virtual tokens / prefix slots (default 16).
    #[cfg_attr(feature = "clap", arg(long))]
    pub virtual_tokens: Option<usize>,
    /// P-Tuning encoder (default mlp).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub encoder: Option<EncoderKind>,
    /// Hidden width of the reparameterization encoder: P-Tuning's MLP/LSTM (default the model's
    /// hidden size, as PEFT), Prefix-Tuning's Tanh MLP (default 512).
    #[cfg_attr(feature = "clap", arg(long))]
    pub encoder_hidden: Option<usize>,
    /// P-Tuning placement template, e.g. `[P*4] {text} [P*4]` (default: prepend).
    #[cfg_attr(feature = "clap", arg(long))]
    pub template: Option<String>,
    /// Dropout on the prefix while training (Prefix-Tuning 0.0, P-Tuning v2 0.1).
    #[cfg_attr(feature = "clap", arg(long))]
    pub prefix_dropout: Option<f64>,
    /// P-Tuning v2: deep prompts on the top K layers only (default every layer).
    #[cfg_attr(feature = "clap", arg(long))]
    pub top_layers: Option<usize>,
    /// P-Tuning v2: start every layer's table from the model's own keys and values of this text
    /// (tiled or trimmed to the virtual tokens) instead of PEFT's `N(0, 1)`.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_text: Option<String>,
}

impl MethodOptions {
    /// Each option of `self`, or `other`'s where `self` has none (command line over file).
    pub fn or(self, other: MethodOptions) -> MethodOptions {
        MethodOptions {
            virtual_tokens: self.virtual_tokens.or(other.virtual_tokens),
            encoder: self.encoder.or(other.encoder),
            encoder_hidden: self.encoder_hidden.or(other.encoder_hidden),
            template: self.template.or(other.template),
            prefix_dropout: self.prefix_dropout.or(other.prefix_dropout),
            top_layers: self.top_layers.or(other.top_layers),
            init_text: self.init_text.or(other.init_text),
        }
    }

    /// The virtual tokens, or the default.
    pub fn virtual_tokens(&self) -> usize {
        self.virtual_tokens.unwrap_or(DEFAULT_VIRTUAL_TOKENS)
    }
}

/// A method's registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method.
    pub kind: MethodKind,
    /// CLI, TOML and file name (`prompt-tuning`, …).
    pub name: &'static str,
    /// PEFT's `peft_type` of its adapters.
    pub peft_type: &'static str,
    /// One line for `--help` and the docs.
    pub summary: &'static str,
    /// The [`MethodOptions`] fields it reads.
    pub options: &'static [&'static str],
}

impl MethodKind {
    /// Every method, in the spec's order.
    pub const ALL: [MethodKind; 4] = [
        MethodKind::PromptTuning,
        MethodKind::PTuning,
        MethodKind::PrefixTuning,
        MethodKind::PTuningV2,
    ];

    /// The method's registry entry (owned by its folder).
    pub fn info(self) -> &'static MethodInfo {
        match self {
            MethodKind::PromptTuning => &prompt_tuning::INFO,
            MethodKind::PTuning => &p_tuning::INFO,
            MethodKind::PrefixTuning => &prefix_tuning::INFO,
            MethodKind::PTuningV2 => &p_tuning_v2::INFO,
        }
    }

    /// The names of every method, comma-separated (for messages).
    pub fn names() -> String {
        MethodKind::ALL.iter().map(|m| m.info().name).collect::<Vec<_>>().join(", ")
    }

    /// Builds the method for `backbone` from `options` (each folder's `from_options` fills the
    /// defaults); `tokenizer` resolves text inits and template literals.
    pub fn build<B: FrozenOps>(
        self,
        options: &MethodOptions,
        backbone: &(impl Backbone<B> + ?Sized),
        tokenizer: Option<&TextTokenizer>,
    ) -> Result<SoftPrompt<B>> {
        match self {
            MethodKind::PromptTuning => {
                prompt_tuning::PromptTuningConfig::from_options(options).init(backbone, tokenizer)
            }
            MethodKind::PTuning => {
                p_tuning::PTuningConfig::from_options(options).init(backbone, tokenizer)
            }
            MethodKind::PrefixTuning => {
                prefix_tuning::PrefixTuningConfig::from_options(options).init(backbone, tokenizer)
            }
            MethodKind::PTuningV2 => {
                p_tuning_v2::PTuningV2Config::from_options(options).init(backbone, tokenizer)
            }
        }
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

impl FromStr for MethodKind {
    type Err = PromptError;
    fn from_str(s: &str) -> Result<Self> {
        MethodKind::ALL.into_iter().find(|m| m.info().name == s).ok_or_else(|| {
            PromptError::Config(format!("unknown method `{s}` ({})", MethodKind::names()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_tuning_v2_starts_from_a_text_when_given_one() {
        use crate::prefix_tuning::PrefixInit;
        let random = p_tuning_v2::PTuningV2Config::from_options(&MethodOptions::default());
        assert_eq!(random.init, PrefixInit::Random);
        let options =
            MethodOptions { init_text: Some("a review".into()), ..MethodOptions::default() };
        let text = p_tuning_v2::PTuningV2Config::from_options(&options);
        assert_eq!(text.init, PrefixInit::Text("a review".into()));
        let merged = MethodOptions::default().or(options);
        assert_eq!(merged.init_text.as_deref(), Some("a review"));
    }

    #[test]
    fn names_round_trip_and_serde_agrees_with_the_registry() {
        for m in MethodKind::ALL {
            assert_eq!(m.info().kind, m);
            assert_eq!(m.to_string().parse::<MethodKind>().unwrap(), m);
            assert_eq!(serde_json::to_value(m).unwrap(), m.info().name);
        }
        let e = "lora".parse::<MethodKind>().unwrap_err().to_string();
        assert!(e.contains("prompt-tuning, p-tuning, prefix-tuning, p-tuning-v2"), "{e}");
    }
}
