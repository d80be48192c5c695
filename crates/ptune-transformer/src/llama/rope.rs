//! Rotary position embedding in HF's rotate-half layout (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// `(cos, sin)` for positions `offsets[r]..offsets[r] + s` of each row, each `[b, 1, s, head_dim]`,
/// computed in f32 as HF does: `inv_freq = 1 / theta^(2i/head_dim)`, `emb = cat(freqs, freqs)`.
///
/// # Shapes
/// - offsets: `b` → cos, sin: `[b, 1, s, head_dim]`
pub fn rope_tables<B: Backend>(
    theta: f64,
    head_dim: usize,
    offsets: &[usize],
    s: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> =
        (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
    let b = offsets.len();
    let mut cos = Vec::with_capacity(b * s * head_dim);
    let mut sin = Vec::with_capacity(b * s * head_dim);
    for p in offsets.iter().flat_map(|&o| o..o + s) {
        for _ in 0..2 {
            for f in &inv_freq {
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
