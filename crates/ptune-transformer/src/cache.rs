//! The KV cache a decoder reads and extends while generating.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

/// Rotated keys and values of the real tokens seen so far, per layer, plus their padding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    pub(crate) padding: Option<Tensor<B, 2, Bool>>,
    pub(crate) len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], padding: None, len: 0 }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of layers the cache holds keys and values for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Each layer's cached keys and values; an error names the first layer that has none.
    ///
    /// # Shapes
    /// → per layer `([b, n_kv_heads, len, head_dim], same)`
    #[allow(clippy::type_complexity)]
    pub fn into_layers(self) -> crate::Result<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
        self.layers
            .into_iter()
            .enumerate()
            .map(|(i, kv)| {
                kv.ok_or_else(|| {
                    crate::TransformerError::Input(format!("layer {i} produced no keys"))
                })
            })
            .collect()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps rows `rows` of the batch, in that order (a row may repeat): beam search reorders its
    /// hypotheses with this.
    pub fn select_rows(&mut self, rows: &[usize]) {
        let Some(device) = self.layers.iter().flatten().map(|(k, _)| k.device()).next() else {
            return;
        };
        let index = crate::input::index_tensor::<B>(rows, &device);
        for kv in self.layers.iter_mut().flatten() {
            kv.0 = kv.0.clone().select(0, index.clone());
            kv.1 = kv.1.clone().select(0, index.clone());
        }
        if let Some(p) = self.padding.take() {
            // Through ints: some backends (flex) change a bool tensor's storage type on `select`.
            self.padding = Some(p.int().select(0, index).bool());
        }
    }
}
