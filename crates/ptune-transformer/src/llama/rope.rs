//! Rotary position embedding in HF's rotate-half layout (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::RopeScaling;

/// The `head_dim / 2` inverse frequencies, in f32 as HF computes them:
/// `inv_freq = 1 / theta^(2i/head_dim)` (`_compute_default_rope_parameters`), then scaled as
/// `_compute_linear_scaling_rope_parameters` or `_compute_llama3_parameters` do.
pub fn inv_freq(theta: f64, head_dim: usize, scaling: Option<RopeScaling>) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor as f32).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        }) => {
            let low_wavelen = (old / low_freq_factor) as f32;
            let high_wavelen = (old / high_freq_factor) as f32;
            let (factor, low, span) = (
                factor as f32,
                low_freq_factor as f32,
                (high_freq_factor - low_freq_factor) as f32,
            );
            base.iter()
                .map(|&f| {
                    let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old as f32 / wavelen - low) / span;
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `(cos, sin)` for positions `offsets[r]..offsets[r] + s` of each row, each `[b, 1, s, head_dim]`,
/// computed in f32 as HF does from the inverse frequencies ([`inv_freq`]):
/// `emb = cat(freqs, freqs)`.
///
/// # Shapes
/// - inv_freq: `head_dim / 2`, offsets: `b` → cos, sin: `[b, 1, s, head_dim]`
pub fn rope_tables<B: Backend>(
    inv_freq: &[f32],
    offsets: &[usize],
    s: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let head_dim = 2 * inv_freq.len();
    let b = offsets.len();
    let mut cos = Vec::with_capacity(b * s * head_dim);
    let mut sin = Vec::with_capacity(b * s * head_dim);
    for p in offsets.iter().flat_map(|&o| o..o + s) {
        for _ in 0..2 {
            for f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [b, 1, s, head_dim]), device),
        Tensor::from_data(TensorData::new(sin, [b, 1, s, head_dim]), device),
    )
}
