//! P-Tuning v2 (Liu et al., 2022): deep prompts at every layer, by default without
//! reparameterization, with prefix dropout 0.1 and optional layer selection. It is the prefix
//! machinery configured differently, not a copy: PEFT expresses it as `PrefixTuningConfig` with
//! `prefix_projection=False`.

use burn::config::Config;
use ptune_transformer::FrozenOps;
use ptune_transformer::{Backbone, TextTokenizer};

use crate::prefix_tuning::{PrefixInit, PrefixTuningConfig};
use crate::registry::{MethodInfo, MethodOptions};
use crate::soft_prompt::SoftPrompt;
use crate::spec::MethodKind;

/// Which layers get deep prompts.
#[derive(Config, Debug, PartialEq)]
pub enum LayerSelection {
    /// Every layer.
    All,
    /// Only the top `k` layers (closest to the output).
    Top(usize),
    /// An explicit list.
    List(Vec<usize>),
}

/// Config of P-Tuning v2.
#[derive(Config, Debug)]
pub struct PTuningV2Config {
    /// Prefix slots `N`.
    pub num_virtual_tokens: usize,
    /// Dropout on the prefix while training.
    #[config(default = 0.1)]
    pub prefix_dropout: f64,
    /// Reparameterize with the Tanh MLP of this hidden width (off by default, as in the paper).
    #[config(default = "None")]
    pub projection: Option<usize>,
    /// Layers with deep prompts.
    #[config(default = "LayerSelection::All")]
    pub layers: LayerSelection,
    /// Start of the per-layer tables (PEFT's `N(0, 1)` by default; `Text` starts from the model's
    /// own keys and values of a real text).
    #[config(default = "PrefixInit::Random")]
    pub init: PrefixInit,
}

/// The registry entry of P-Tuning v2.
pub const INFO: MethodInfo = MethodInfo {
    kind: MethodKind::PTuningV2,
    name: "p-tuning-v2",
    peft_type: "PREFIX_TUNING",
    summary: "deep prompts at every layer (or the top k), without reparameterization",
    options: &["virtual_tokens", "prefix_dropout", "top_layers", "init_text"],
};

impl PTuningV2Config {
    /// The config `options` describe: direct per-layer tables on every layer (or the top
    /// `top_layers`), prefix dropout 0.1, `N(0, 1)` or the keys and values of `init_text`.
    pub fn from_options(options: &MethodOptions) -> Self {
        let layers = match options.top_layers {
            Some(k) => LayerSelection::Top(k),
            None => LayerSelection::All,
        };
        let init = match &options.init_text {
            Some(text) => PrefixInit::Text(text.clone()),
            None => PrefixInit::Random,
        };
        Self::new(options.virtual_tokens())
            .with_layers(layers)
            .with_prefix_dropout(options.prefix_dropout.unwrap_or(0.1))
            .with_init(init)
    }

    /// Builds the deep prompt for `backbone`.
    pub fn init<B: FrozenOps>(
        &self,
        backbone: &(impl Backbone<B> + ?Sized),
        tokenizer: Option<&TextTokenizer>,
    ) -> crate::error::Result<SoftPrompt<B>> {
        let n_layers = backbone.dims().num_layers;
        let layers = match &self.layers {
            LayerSelection::All => None,
            LayerSelection::Top(k) => Some((n_layers.saturating_sub(*k)..n_layers).collect()),
            LayerSelection::List(list) => Some(list.clone()),
        };
        PrefixTuningConfig::new(self.num_virtual_tokens)
            .with_projection(self.projection)
            .with_prefix_dropout(self.prefix_dropout)
            .with_init(self.init.clone())
            .with_layers(layers)
            .build(backbone, tokenizer, MethodKind::PTuningV2)
    }
}
