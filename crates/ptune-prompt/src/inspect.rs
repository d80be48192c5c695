//! Inspection: the spec's comparison table computed from the real modules, and the projection of
//! prompt vectors onto the vocabulary (nearest tokens by cosine similarity).

use burn::module::Module;
use burn::tensor::Tensor;
use ptune_transformer::Backbone;
use ptune_transformer::FrozenOps;

use crate::error::{PromptError, Result};
use crate::soft_prompt::SoftPrompt;

/// One row of the comparison table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRow {
    /// Method (and encoder).
    pub method: String,
    /// Where the prompt acts.
    pub applied: String,
    /// The reparameterization used while training.
    pub reparameterization: String,
    /// Parameters the optimizer updates (encoder or table).
    pub trainable: usize,
    /// Parameters kept for inference (the materialized table).
    pub stored: usize,
}

/// Builds the row of one soft prompt by counting its modules.
pub fn param_row<B: FrozenOps>(name: &str, prompt: &SoftPrompt<B>) -> ParamRow {
    let [n, w] = prompt.encoder.output_shape();
    let applied = if prompt.spec.method.is_input_level() {
        "input embeddings".to_string()
    } else {
        format!("K, V of {} layers", prompt.spec.layers.len())
    };
    let reparameterization = match &prompt.spec.encoder {
        crate::spec::EncoderSpec::Table => "none (direct)".to_string(),
        crate::spec::EncoderSpec::Mlp { hidden } => format!("MLP (H={hidden})"),
        crate::spec::EncoderSpec::Lstm { hidden, paper } => {
            format!("BiLSTM+MLP (H={hidden}{})", if *paper { ", paper" } else { "" })
        }
        crate::spec::EncoderSpec::PrefixMlp { hidden } => format!("Tanh MLP (H={hidden})"),
    };
    ParamRow {
        method: name.to_string(),
        applied,
        reparameterization,
        trainable: prompt.encoder.num_params(),
        stored: n * w,
    }
}

/// The `k` vocabulary tokens nearest (cosine) to each row of an input-level prompt:
/// per virtual token, `(token id, cosine similarity)` best first.
pub fn nearest_tokens<B: FrozenOps>(
    prompt: &SoftPrompt<B>,
    backbone: &(impl Backbone<B> + ?Sized),
    k: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    if !prompt.spec.method.is_input_level() {
        return Err(PromptError::Config(
            "nearest-token projection applies to input-level prompts (prompt tuning, p-tuning), \
             not to key/value prefixes"
                .into(),
        ));
    }
    let table = prompt.encoder.forward().detach();
    let vocab = backbone.embedding_matrix();
    let normalize = |t: Tensor<B, 2>| {
        let norm = t.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        t / norm
    };
    let sims = normalize(table).matmul(normalize(vocab).transpose()); // [N, V]
    let v = sims.dims()[1];
    let k = k.clamp(1, v.max(1));
    let (values, indices) = sims.topk_with_indices(k, 1);
    let values = values
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| PromptError::Config(format!("{e:?}")))?;
    let indices = indices
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .map_err(|e| PromptError::Config(format!("{e:?}")))?;
    Ok(values
        .chunks(k)
        .zip(indices.chunks(k))
        .map(|(vals, ids)| ids.iter().zip(vals).map(|(&i, &s)| (i as u32, s)).collect())
        .collect())
}
