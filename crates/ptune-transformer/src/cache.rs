//! The KV cache a decoder reads and extends while generating.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

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

    /// Number of rows (0 before the first pass).
    pub fn rows(&self) -> usize {
        self.layers.iter().flatten().map(|(k, _)| k.dims()[0]).next().unwrap_or(0)
    }

    /// Per row, the padded slots among the cached ones (all zero when nothing is padded). A new
    /// token's position counts only the real tokens before it (HF's positions from the attention
    /// mask), so rows padded to a common cache length decode as they would alone.
    pub fn padded_per_row(&self) -> Vec<usize> {
        let rows = self.rows();
        match &self.padding {
            Some(p) if self.len > 0 => p
                .clone()
                .int()
                .sum_dim(1)
                .into_data()
                .convert::<i64>()
                .iter::<i64>()
                .map(|n| n.max(0) as usize)
                .collect(),
            _ => vec![0; rows],
        }
    }

    /// Appends the rows of `other` (a cache of the same model) after this cache's rows. The
    /// shorter of the two is padded on the right to the longer one's length; the padded slots are
    /// masked and not counted as positions, so every row decodes on as it would alone
    /// (continuous batching: a new request joins the running batch).
    ///
    /// # Shapes
    /// - self: `b1` rows of `l1` slots, other: `b2` rows of `l2` → `b1 + b2` rows of `max(l1, l2)`
    pub fn append_rows(&mut self, other: KvCache<B>) -> crate::Result<()> {
        if other.layers.len() != self.layers.len() {
            return Err(crate::TransformerError::Input(format!(
                "caches of {} and {} layers cannot be joined",
                self.layers.len(),
                other.layers.len()
            )));
        }
        if self.rows() == 0 {
            *self = other;
            return Ok(());
        }
        if other.rows() == 0 {
            return Ok(());
        }
        let len = self.len.max(other.len);
        let (mut a, mut b) = (std::mem::replace(self, KvCache::new(0)), other);
        a.pad_to(len);
        b.pad_to(len);
        let layers = a
            .layers
            .into_iter()
            .zip(b.layers)
            .map(|(x, y)| match (x, y) {
                (Some((kx, vx)), Some((ky, vy))) => {
                    Some((Tensor::cat(vec![kx, ky], 0), Tensor::cat(vec![vx, vy], 0)))
                }
                _ => None,
            })
            .collect();
        let padding = match (a.padding, b.padding) {
            (Some(x), Some(y)) => Some(Tensor::cat(vec![x.int(), y.int()], 0).bool()),
            _ => None,
        };
        *self = KvCache { layers, padding, len };
        Ok(())
    }

    /// Pads every row on the right to `len` slots (masked); a padding mask is kept from then on.
    fn pad_to(&mut self, len: usize) {
        let rows = self.rows();
        let extra = len.saturating_sub(self.len);
        let Some(device) = self.layers.iter().flatten().map(|(k, _)| k.device()).next() else {
            return;
        };
        let bools = |values: Vec<bool>, n: usize| {
            Tensor::<B, 2, Bool>::from_bool(TensorData::new(values, [rows, n]), &device)
        };
        let past =
            self.padding.take().unwrap_or_else(|| bools(vec![false; rows * self.len], self.len));
        if extra == 0 {
            self.padding = Some(past);
            return;
        }
        for kv in self.layers.iter_mut().flatten() {
            let [b, h, _, d] = kv.0.dims();
            let zeros = || Tensor::<B, 4>::zeros([b, h, extra, d], &device);
            kv.0 = Tensor::cat(vec![kv.0.clone(), zeros()], 2);
            kv.1 = Tensor::cat(vec![kv.1.clone(), zeros()], 2);
        }
        let pads = bools(vec![true; rows * extra], extra);
        self.padding = Some(Tensor::cat(vec![past.int(), pads.int()], 1).bool());
        self.len = len;
    }

    /// Drops the slots that are padding in every row (left behind by rows that have finished),
    /// so the cache stays as long as its longest row.
    pub fn drop_padded_columns(&mut self) {
        let Some(padding) = &self.padding else { return };
        let rows = self.rows();
        if rows == 0 || self.len == 0 {
            return;
        }
        let flags: Vec<bool> = padding
            .clone()
            .int()
            .into_data()
            .convert::<i64>()
            .iter::<i64>()
            .map(|v| v != 0)
            .collect();
        let keep: Vec<usize> = (0..self.len)
            .filter(|&c| (0..rows).any(|r| !flags.get(r * self.len + c).copied().unwrap_or(false)))
            .collect();
        if keep.len() == self.len {
            return;
        }
        let Some(device) = self.layers.iter().flatten().map(|(k, _)| k.device()).next() else {
            return;
        };
        let index = crate::input::index_tensor::<B>(&keep, &device);
        for kv in self.layers.iter_mut().flatten() {
            kv.0 = kv.0.clone().select(2, index.clone());
            kv.1 = kv.1.clone().select(2, index.clone());
        }
        self.padding = Some(padding.clone().int().select(1, index).bool());
        self.len = keep.len();
    }

    /// Puts a prefix's keys and values in front of the cached ones, as cached tokens: later
    /// passes then need no prefix (decoding steps skip re-attaching it every call). A row's
    /// unused slots ([`PrefixKv::slot_mask`](crate::PrefixKv::slot_mask)) become padding; the
    /// slots it uses count as its past tokens, so its positions stay `row_len + tokens`, as under
    /// [`PositionPolicy::Shift`](crate::PositionPolicy) with the prefix passed. Call it after the
    /// first pass (which ran with the prefix). Returns `false`, changing nothing, when the prefix
    /// covers only some layers (a mask shared by every layer cannot hide slots in the others).
    ///
    /// # Shapes
    /// - prefix: per layer `[b | 1, n_kv_heads, n, head_dim]`; the cache grows by `n` slots
    pub fn prepend_prefix(&mut self, prefix: &crate::PrefixKv<B>) -> crate::Result<bool> {
        let n = prefix.len();
        if n == 0 {
            return Ok(true);
        }
        let rows = self.rows();
        if rows == 0 || self.layers.len() != prefix.layers.len() {
            return Err(crate::TransformerError::Input(format!(
                "a prefix of {} layers cannot go in front of a cache of {} layers and {rows} rows",
                prefix.layers.len(),
                self.layers.len()
            )));
        }
        if prefix.layers.iter().any(Option::is_none) {
            return Ok(false);
        }
        let Some(device) = self.layers.iter().flatten().map(|(k, _)| k.device()).next() else {
            return Ok(false);
        };
        for (kv, p) in self.layers.iter_mut().zip(&prefix.layers) {
            let (Some(kv), Some(p)) = (kv, p) else { continue };
            let [b, h, _, d] = kv.0.dims();
            let pk = p.key.clone().expand([b, h, n, d]);
            let pv = p.value.clone().expand([b, h, n, d]);
            kv.0 = Tensor::cat(vec![pk, kv.0.clone()], 2);
            kv.1 = Tensor::cat(vec![pv, kv.1.clone()], 2);
        }
        let bools = |values: Vec<bool>, width: usize| {
            Tensor::<B, 2, Bool>::from_bool(TensorData::new(values, [rows, width]), &device)
        };
        let slots =
            prefix.slot_mask(rows, &device).unwrap_or_else(|| bools(vec![false; rows * n], n));
        let past =
            self.padding.take().unwrap_or_else(|| bools(vec![false; rows * self.len], self.len));
        self.padding = Some(Tensor::cat(vec![slots.int(), past.int()], 1).bool());
        self.len += n;
        Ok(true)
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
