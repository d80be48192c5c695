//! Prompt Tuning (Lester et al., 2021): `N` trainable vectors prepended to the input embeddings.
//! PEFT: `PromptTuningConfig`, `PromptEmbedding`.

use burn::config::Config;
use burn::tensor::{Distribution, Tensor};
use ptune_reparam::{PromptTable, Reparam};
use ptune_transformer::FrozenOps;
use ptune_transformer::{Backbone, TextTokenizer};

use serde::{Deserialize, Serialize};

use crate::error::PromptError;
use crate::registry::{MethodInfo, MethodOptions};
use crate::soft_prompt::SoftPrompt;
use crate::spec::{EncoderSpec, MethodKind, Placement, PromptSpec};

/// How the prompt vectors start.
#[derive(Config, Debug, PartialEq)]
pub enum PromptInit {
    /// `N(0, 1)`, PEFT's `RANDOM` (an `nn.Embedding` default): use this for PEFT parity.
    PeftRandom,
    /// `N(0, σ²)` with σ the standard deviation of the vocabulary embedding values, so the prompt
    /// vectors have the norm of real token embeddings (ptune's default).
    ScaledRandom,
    /// Embeddings of vocabulary tokens drawn uniformly (PEFT's `SAMPLE_VOCAB`), seeded.
    SampleVocab {
        /// Seed of the draw.
        seed: u64,
    },
    /// Embeddings of the tokens of a text, tiled or trimmed to `N` (PEFT's `TEXT`, without special tokens).
    Text(String),
    /// Embeddings of the class-label words, in order, tiled or trimmed to `N`.
    ClassLabels(Vec<String>),
}

/// Config of Prompt Tuning.
#[derive(Config, Debug)]
pub struct PromptTuningConfig {
    /// Virtual tokens `N`.
    pub num_virtual_tokens: usize,
    /// Initialization.
    #[config(default = "PromptInit::ScaledRandom")]
    pub init: PromptInit,
}

/// The registry entry of Prompt Tuning.
pub const INFO: MethodInfo = MethodInfo {
    kind: MethodKind::PromptTuning,
    name: "prompt-tuning",
    peft_type: "PROMPT_TUNING",
    summary: "N trainable vectors prepended to the input embeddings",
    options: &["virtual_tokens"],
};

impl PromptTuningConfig {
    /// The config `options` describe (ptune's scaled-random init).
    pub fn from_options(options: &MethodOptions) -> Self {
        Self::new(options.virtual_tokens())
    }
}

/// Prompt Tuning's fields of PEFT's `adapter_config.json` (`PromptTuningConfig`). A saved
/// adapter holds the trained table, so its init is recorded as PEFT's `RANDOM`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTuningPeft {
    /// `RANDOM`, `SAMPLE_VOCAB` or `TEXT`.
    #[serde(default = "random_init")]
    pub prompt_tuning_init: String,
    /// The init text of `TEXT`.
    #[serde(default)]
    pub prompt_tuning_init_text: Option<String>,
    /// The tokenizer of `TEXT`.
    #[serde(default)]
    pub tokenizer_name_or_path: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub tokenizer_kwargs: Option<serde_json::Value>,
}

fn random_init() -> String {
    "RANDOM".into()
}

impl PromptTuningPeft {
    /// The fields written for a trained prompt.
    pub fn for_spec() -> Self {
        Self {
            prompt_tuning_init: random_init(),
            prompt_tuning_init_text: None,
            tokenizer_name_or_path: None,
            tokenizer_kwargs: None,
        }
    }
}

/// Ids tiled or trimmed to `n` (PEFT's TEXT init rule).
pub(crate) fn tile(ids: &[u32], n: usize) -> crate::error::Result<Vec<u32>> {
    if ids.is_empty() {
        return Err(PromptError::Config("init text has no tokens".into()));
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

/// Rows of the vocabulary embedding matrix.
///
/// # Shapes
/// - ids: `n` → `[n, d]`
pub(crate) fn embedding_rows<B: FrozenOps>(
    backbone: &(impl Backbone<B> + ?Sized),
    ids: &[u32],
) -> crate::error::Result<Tensor<B, 2>> {
    let dims = backbone.dims();
    ptune_transformer::check_ids(ids, dims.vocab_size)?;
    let matrix = backbone.embedding_matrix();
    let index = ptune_transformer::ids_tensor::<B>(ids, &matrix.device()).reshape([ids.len()]);
    Ok(matrix.select(0, index))
}

/// A deterministic splitmix64 stream (seeded draws that do not depend on the backend's RNG).
pub(crate) fn splitmix(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl PromptTuningConfig {
    /// Builds the trainable prompt for `backbone` (`tokenizer` is needed by the text and label inits).
    pub fn init<B: FrozenOps>(
        &self,
        backbone: &(impl Backbone<B> + ?Sized),
        tokenizer: Option<&TextTokenizer>,
    ) -> crate::error::Result<SoftPrompt<B>> {
        let n = crate::spec::check_virtual_tokens(self.num_virtual_tokens)?;
        let dims = backbone.dims();
        let d = dims.hidden_size;
        let device = backbone.embedding_matrix().device();
        let need_tokenizer =
            || tokenizer.ok_or_else(|| PromptError::Config("this init needs a tokenizer".into()));
        let values = match &self.init {
            PromptInit::PeftRandom => {
                Tensor::random([n, d], Distribution::Normal(0.0, 1.0), &device)
            }
            PromptInit::ScaledRandom => {
                let m = backbone.embedding_matrix();
                let std = m
                    .clone()
                    .sub(m.clone().mean().unsqueeze())
                    .square()
                    .mean()
                    .sqrt()
                    .into_scalar();
                let std: f64 = burn::tensor::ElementConversion::elem(std);
                Tensor::random([n, d], Distribution::Normal(0.0, std), &device)
            }
            PromptInit::SampleVocab { seed } => {
                let mut next = splitmix(*seed);
                let ids: Vec<u32> =
                    (0..n).map(|_| (next() % dims.vocab_size as u64) as u32).collect();
                embedding_rows(backbone, &ids)?
            }
            PromptInit::Text(text) => {
                let ids = need_tokenizer()?.encode_plain(text)?;
                embedding_rows(backbone, &tile(&ids, n)?)?
            }
            PromptInit::ClassLabels(labels) => {
                let tok = need_tokenizer()?;
                let mut ids = Vec::new();
                for label in labels {
                    ids.extend(tok.encode_plain(label)?);
                }
                embedding_rows(backbone, &tile(&ids, n)?)?
            }
        };
        let spec = PromptSpec {
            method: MethodKind::PromptTuning,
            num_virtual_tokens: n,
            token_dim: d,
            placement: Placement::Prepend,
            layers: Vec::new(),
            prefix_dropout: 0.0,
            encoder: EncoderSpec::Table,
        };
        SoftPrompt::new(Reparam::Table(PromptTable::from_tensor(values.detach())), spec)
    }
}
