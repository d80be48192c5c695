//! The layers below the first prefixed layer, run once per distinct row and remembered.
//!
//! When only the top layers get a prefix (P-Tuning v2 with `top_layers`) and the input embeddings
//! are plain token embeddings, the layers below the first prefixed layer compute the same thing
//! for a row at every epoch: their input does not depend on anything trained. [`CachedLowerLayers`]
//! wraps a backbone, keeps each row's hidden state entering the first prefixed layer (only the
//! row's real tokens), and runs only the layers above it when a row comes back, in any batch.
//!
//! A row is recognised by its content, not by its place in a data set: a 128-bit hash of its
//! input embeddings (bit for bit), token types, length, position offset and the prefix length. So
//! the cache can never serve a stale value: embeddings that change (a trained input-level prompt)
//! are new rows, and a run whose embeddings always change simply never hits.
//!
//! Exactness: a row's real positions get the same values as without the cache (same operations on
//! the same inputs; the layers above mask padded keys, so what stands at padded positions does not
//! reach real ones — they are zeros here, where the plain pass has the padding tokens' states).
//! Batches must be padded at the end of each row (ptune's batches are); a batch that is not, or
//! one with prefixes below the split, runs uncached.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::attention::{position_offsets, PrefixKv};
use crate::error::Result;
use crate::input::{delegate_backbone, Backbone, BackboneInput};

/// Most floats the cache holds by default (1 GiB of f32); rows beyond it are computed, not kept.
pub const DEFAULT_CACHE_FLOATS: usize = 1 << 28;

/// A backbone that remembers the lower layers' output per row (see the module docs).
pub struct CachedLowerLayers<'a, B: Backend> {
    backbone: &'a dyn Backbone<B>,
    rows: RefCell<HashMap<u128, Tensor<B, 2>>>,
    floats: Cell<usize>,
    max_floats: usize,
    hits: Cell<usize>,
    misses: Cell<usize>,
}

impl<'a, B: Backend> CachedLowerLayers<'a, B> {
    /// Wraps `backbone` with a cache of at most [`DEFAULT_CACHE_FLOATS`].
    pub fn new(backbone: &'a dyn Backbone<B>) -> Self {
        Self::with_capacity(backbone, DEFAULT_CACHE_FLOATS)
    }

    /// Wraps `backbone` with a cache of at most `max_floats` floats.
    pub fn with_capacity(backbone: &'a dyn Backbone<B>, max_floats: usize) -> Self {
        Self {
            backbone,
            rows: RefCell::new(HashMap::new()),
            floats: Cell::new(0),
            max_floats,
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// Rows served from the cache and rows computed, so far.
    pub fn stats(&self) -> (usize, usize) {
        (self.hits.get(), self.misses.get())
    }

    /// Keeps row `i` of `hidden` (its first `lengths[i]` positions) under `keys[i]` while the cache
    /// has room; returns the rows.
    ///
    /// # Shapes
    /// - hidden: `[m, s, d]` → `m` tensors `[len, d]`
    fn remember(
        &self,
        hidden: &Tensor<B, 3>,
        keys: &[u128],
        lengths: &[usize],
    ) -> Vec<Tensor<B, 2>> {
        let [_, s, d] = hidden.dims();
        let mut rows = self.rows.borrow_mut();
        keys.iter()
            .zip(lengths)
            .enumerate()
            .map(|(i, (key, &len))| {
                let row =
                    hidden.clone().narrow(0, i, 1).reshape([s, d]).narrow(0, 0, len.clamp(1, s));
                let floats = self.floats.get() + len * d;
                if floats <= self.max_floats {
                    self.floats.set(floats);
                    rows.insert(*key, row.clone());
                }
                row
            })
            .collect()
    }

    /// The first layer with a prefix, if the layers below it can be cached for this input.
    fn split(&self, input: &BackboneInput<B>, n: usize) -> Option<usize> {
        let prefix = input.prefix.as_ref()?;
        let first = prefix.layers.iter().position(Option::is_some)?;
        (first > 0 && first < n).then_some(first)
    }
}

/// Per row: the number of real tokens, if the row's padding is all at its end.
fn real_lengths(mask: Option<&[bool]>, b: usize, s: usize) -> Option<Vec<usize>> {
    let Some(mask) = mask else { return Some(vec![s; b]) };
    (0..b)
        .map(|r| {
            let row = mask.get(r * s..(r + 1) * s)?;
            let len = row.iter().position(|&p| p).unwrap_or(s);
            row[len..].iter().all(|&p| p).then_some(len)
        })
        .collect()
}

/// The rows `index` of a prefix (per-row tensors and lengths; shared `[1, ..]` ones as they are).
fn select_prefix<B: Backend>(
    p: &PrefixKv<B>,
    index: &Tensor<B, 1, Int>,
    rows: &[usize],
) -> PrefixKv<B> {
    let mut p = p.clone();
    for lp in p.layers.iter_mut().flatten() {
        if lp.key.dims()[0] > 1 {
            lp.key = lp.key.clone().select(0, index.clone());
            lp.value = lp.value.clone().select(0, index.clone());
        }
    }
    if let Some(lengths) = &p.row_lengths {
        p.row_lengths = Some(rows.iter().map(|&r| lengths.get(r).copied().unwrap_or(0)).collect());
    }
    p
}

impl<B: Backend> Backbone<B> for CachedLowerLayers<'_, B> {
    delegate_backbone!(.backbone);

    /// The lower layers from the cache (computing the rows it lacks), then the layers above.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → `[b, s, d]`
    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>> {
        let dims = self.backbone.dims();
        let n = dims.num_layers;
        let [b, s] = input.validate(&dims)?;
        let split = match self.split(&input, n) {
            Some(split) if input.layer_range(n)? == (0, n) => split,
            _ => return self.backbone.forward(input),
        };
        let mask: Option<Vec<bool>> = input
            .padding_mask
            .as_ref()
            .map(|m| m.clone().into_data().convert::<bool>().to_vec().unwrap_or_default());
        let Some(lengths) = real_lengths(mask.as_deref(), b, s) else {
            return self.backbone.forward(input);
        };
        let offsets = position_offsets(
            input.positions,
            input.prefix.as_ref(),
            b,
            &[],
            s,
            dims.max_positions,
        )?;
        let d = dims.hidden_size;
        let embeds: Vec<f32> =
            input.embeds.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
        let types: Vec<i64> = match &input.token_types {
            Some(t) => t.clone().into_data().convert::<i64>().to_vec().unwrap_or_default(),
            None => vec![0; b * s],
        };
        if embeds.len() != b * s * d || types.len() != b * s {
            return self.backbone.forward(input);
        }
        let n_prefix = input.prefix_len();
        let keys: Vec<u128> = (0..b)
            .map(|r| {
                let len = lengths[r];
                let half = |salt: u64| {
                    let mut h = DefaultHasher::new();
                    h.write_u64(salt);
                    h.write_usize(len);
                    h.write_usize(offsets[r]);
                    h.write_usize(n_prefix);
                    h.write_usize(split);
                    for t in &types[r * s..r * s + len] {
                        h.write_i64(*t);
                    }
                    for v in &embeds[r * s * d..(r * s + len) * d] {
                        h.write_u32(v.to_bits());
                    }
                    h.finish()
                };
                (u128::from(half(0x9e37_79b9)) << 64) | u128::from(half(0x7f4a_7c15))
            })
            .collect();

        let missing: Vec<usize> = {
            let rows = self.rows.borrow();
            (0..b).filter(|&r| !rows.contains_key(&keys[r])).collect()
        };
        let device = input.embeds.device();
        if missing.len() == b {
            // Nothing cached yet (a first epoch): run the lower layers on the batch as it is and
            // hand their output straight to the upper ones, keeping each row's real part.
            let hidden = self.backbone.forward(input.clone().with_layers(0..split))?.detach();
            self.remember(&hidden, &keys, &lengths);
            self.misses.set(self.misses.get() + b);
            let upper = BackboneInput { embeds: hidden, layers: split..n, ..input };
            return self.backbone.forward(upper);
        }
        let mut fresh: HashMap<usize, Tensor<B, 2>> = HashMap::new();
        if !missing.is_empty() {
            let index = crate::input::index_tensor::<B>(&missing, &device);
            let lower = BackboneInput {
                embeds: input.embeds.clone().select(0, index.clone()),
                // Rebuilt from the host copy: burn-flex 0.21's `select` on a bool tensor returns
                // `u8` storage, which its `cat` (of the attention mask) then refuses.
                padding_mask: mask.as_ref().map(|m| {
                    let rows: Vec<bool> = missing
                        .iter()
                        .flat_map(|&r| m[r * s..(r + 1) * s].iter().copied())
                        .collect();
                    Tensor::from_bool(TensorData::new(rows, [missing.len(), s]), &device)
                }),
                token_types: input.token_types.clone().map(|t| t.select(0, index.clone())),
                prefix: input.prefix.as_ref().map(|p| select_prefix(p, &index, &missing)),
                positions: input.positions,
                layers: 0..split,
            };
            let hidden = self.backbone.forward(lower)?.detach();
            let keys: Vec<u128> = missing.iter().map(|&r| keys[r]).collect();
            let lengths: Vec<usize> = missing.iter().map(|&r| lengths[r]).collect();
            for (&r, row) in missing.iter().zip(self.remember(&hidden, &keys, &lengths)) {
                fresh.insert(r, row);
            }
        }
        self.misses.set(self.misses.get() + missing.len());
        self.hits.set(self.hits.get() + b - missing.len());

        let rows = self.rows.borrow();
        let mut stacked = Vec::with_capacity(b);
        for (r, key) in keys.iter().enumerate() {
            let row = match fresh.remove(&r) {
                Some(row) => row,
                None => match rows.get(key) {
                    Some(row) => row.clone(),
                    None => return self.backbone.forward(input),
                },
            };
            let len = row.dims()[0];
            let row = if len < s {
                Tensor::cat(
                    vec![
                        row.clone(),
                        Tensor::<B, 2>::zeros([s - len, d], &device).cast(row.dtype()),
                    ],
                    0,
                )
            } else {
                row
            };
            stacked.push(row.unsqueeze::<3>());
        }
        drop(rows);
        let upper = BackboneInput { embeds: Tensor::cat(stacked, 0), layers: split..n, ..input };
        self.backbone.forward(upper)
    }
}
