//! The wiring every method shares, in one place: placing input-level virtual tokens (prepend or
//! template) among token embeddings with their padding mask, turning prefix tables into per-layer
//! [`PrefixKv`] (PEFT's layout, sized by KV heads), batches whose rows use different adapters, and
//! stripping virtual tokens from sequence outputs so token-level heads line up with the text.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use ptune_transformer::FrozenOps;
use ptune_transformer::{check_ids, Backbone, BackboneDims, BackboneInput, LayerPrefix, PrefixKv};

use crate::error::{PromptError, Result};
use crate::spec::{Placement, TemplatePiece};

/// Where one position of an assembled row takes its embedding from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Row `k` of the stacked prompt tables.
    Prompt(usize),
    /// A vocabulary token (a text token when `text` is true, else a template literal).
    Token {
        /// Token id.
        id: u32,
        /// Whether it is one of the example's own tokens.
        text: bool,
    },
}

/// The slots of one row: `placement` applied to `ids`, with this adapter's prompt rows starting at
/// `first_prompt_row` of the stacked tables. `None` placement: no input-level prompt (prefix methods).
pub fn row_slots(ids: &[u32], placement: Option<(&Placement, usize, usize)>) -> Vec<Slot> {
    let text = ids.iter().map(|&id| Slot::Token { id, text: true });
    match placement {
        None => text.collect(),
        Some((Placement::Prepend, first, n)) => {
            (first..first + n).map(Slot::Prompt).chain(text).collect()
        }
        Some((Placement::Template(pieces), first, _)) => {
            let mut next = first;
            let mut slots = Vec::new();
            for piece in pieces {
                match piece {
                    TemplatePiece::Virtual(k) => {
                        slots.extend((next..next + k).map(Slot::Prompt));
                        next += k;
                    }
                    TemplatePiece::Text => slots.extend(text.clone()),
                    TemplatePiece::Literal { ids, .. } => {
                        slots.extend(ids.iter().map(|&id| Slot::Token { id, text: false }))
                    }
                }
            }
            slots
        }
    }
}

/// A batch ready for the backbone, and where each row's text tokens ended up.
#[derive(Debug, Clone)]
pub struct PromptedBatch<B: Backend> {
    /// Backbone input (embeddings with virtual tokens placed, mask, prefix).
    pub input: BackboneInput<B>,
    /// Per row, the positions of its text tokens in the assembled sequence, in order.
    pub text_positions: Vec<Vec<usize>>,
}

impl<B: FrozenOps> PromptedBatch<B> {
    /// A batch without any soft prompt (baselines such as the linear probe): padded token embeddings.
    pub fn plain<M: Backbone<B> + ?Sized>(backbone: &M, rows: &[Vec<u32>]) -> Result<Self> {
        let device = backbone.embedding_matrix().device();
        let slots: Vec<Vec<Slot>> = rows.iter().map(|ids| row_slots(ids, None)).collect();
        let (embeds, padding, text_positions) = assemble(backbone, None, &slots, &device)?;
        Ok(Self { input: BackboneInput::new(embeds).with_padding_mask(padding), text_positions })
    }

    /// Each row's real length: its slots before the right padding (all `s` when nothing is
    /// padded). A row's last slot, `r·s + len − 1`, is where a decoder reads the next token.
    pub fn row_lengths(&self) -> Result<Vec<usize>> {
        let [b, s, _] = self.input.embeds.dims();
        let Some(mask) = &self.input.padding_mask else {
            return Ok(vec![s; b]);
        };
        let flags = mask
            .clone()
            .int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| PromptError::Config(format!("reading the padding mask: {e:?}")))?;
        Ok(flags.chunks(s.max(1)).map(|row| row.iter().filter(|&&p| p == 0).count()).collect())
    }

    /// Longest text (in tokens) among the rows.
    pub fn max_text_len(&self) -> usize {
        self.text_positions.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Removes virtual tokens and template literals from a sequence output, so position `i` of row `r`
    /// is the row's `i`-th text token (label alignment for token-level heads and losses). Positions
    /// past a row's text are filled from its first position and marked in [`Self::text_padding`].
    ///
    /// # Shapes
    /// - hidden: `[b, S, d]` → `[b, L_max, d]`
    pub fn strip_virtual<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        let dims = hidden.dims();
        let (b, s) = (dims[0], dims[1]);
        let l = self.max_text_len();
        let index: Vec<i64> = self
            .text_positions
            .iter()
            .enumerate()
            .flat_map(|(r, pos)| {
                (0..l).map(move |i| (r * s + pos.get(i).copied().unwrap_or(0)) as i64)
            })
            .collect();
        let mut out_shape = dims;
        out_shape[1] = l;
        let rest: usize = dims[2..].iter().product();
        let flat = hidden.reshape([b * s, rest]);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * l]), &flat.device());
        flat.select(0, index).reshape(out_shape)
    }

    /// `[b, L_max]`, `true` where a row has no text token (padding of the stripped output).
    ///
    /// # Shapes
    /// - output: `[b, L_max]`
    pub fn text_padding(&self, device: &B::Device) -> Tensor<B, 2, Bool> {
        let l = self.max_text_len();
        let values: Vec<bool> = self
            .text_positions
            .iter()
            .flat_map(|pos| (0..l).map(move |i| i >= pos.len()))
            .collect();
        Tensor::from_bool(TensorData::new(values, [self.text_positions.len(), l]), device)
    }
}

/// Assembles input embeddings `[b, S, d]` for `rows` of slots with one gather over
/// `[prompt rows | token embeddings]`, so gradients reach the prompt rows. Rows are right-padded.
///
/// # Shapes
/// - prompts: `[N, d]` → embeddings `[b, S, d]`, padding `[b, S]`
#[allow(clippy::type_complexity)]
pub fn assemble<B: FrozenOps, M: Backbone<B> + ?Sized>(
    backbone: &M,
    prompts: Option<Tensor<B, 2>>,
    rows: &[Vec<Slot>],
    device: &B::Device,
) -> Result<(Tensor<B, 3>, Tensor<B, 2, Bool>, Vec<Vec<usize>>)> {
    let dims = backbone.dims();
    let b = rows.len();
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    if b == 0 || s == 0 {
        return Err(PromptError::Config("empty batch".into()));
    }
    let n_prompt = prompts.as_ref().map_or(0, |p| p.dims()[0]);
    let mut token_ids: Vec<u32> = vec![0]; // index 0: the padding embedding (masked anyway)
    let mut index = Vec::with_capacity(b * s);
    let mut padding = Vec::with_capacity(b * s);
    let mut text_positions = Vec::with_capacity(b);
    for row in rows {
        let mut text = Vec::new();
        for (pos, slot) in row.iter().enumerate() {
            match *slot {
                Slot::Prompt(k) => {
                    if k >= n_prompt {
                        return Err(PromptError::Config(format!("prompt row {k} of {n_prompt}")));
                    }
                    index.push(k as i64);
                }
                Slot::Token { id, text: is_text } => {
                    token_ids.push(id);
                    index.push((n_prompt + token_ids.len() - 1) as i64);
                    if is_text {
                        text.push(pos);
                    }
                }
            }
            padding.push(false);
        }
        for _ in row.len()..s {
            index.push(n_prompt as i64);
            padding.push(true);
        }
        text_positions.push(text);
    }
    check_ids(&token_ids, dims.vocab_size)?;
    let m = token_ids.len();
    let ids = ptune_transformer::ids_tensor::<B>(&token_ids, device);
    let token_embeds = backbone.embed(ids).reshape([m, dims.hidden_size]);
    let source = match prompts {
        Some(p) => Tensor::cat(vec![p, token_embeds], 0),
        None => token_embeds,
    };
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * s]), device);
    let embeds = source.select(0, index).reshape([b, s, dims.hidden_size]);
    let padding = Tensor::<B, 2, Bool>::from_bool(TensorData::new(padding, [b, s]), device);
    Ok((embeds, padding, text_positions))
}

/// Width of a prefix table row for `n_layers` layers: `n_layers · 2 · kv_dim`.
pub fn prefix_width(dims: &BackboneDims, n_layers: usize) -> usize {
    n_layers * 2 * dims.kv_dim()
}

/// Splits prefix tables into per-layer keys/values, PEFT's layout: a row of width
/// `layers·2·kv_dim` is `[layer][key|value][kv_head][head_dim]`.
///
/// `tables[a]` is adapter `a`'s `[n_a, |layers_a|·2·kv_dim]` table with its layer list; `row_adapter`
/// maps batch rows to adapters (`None`: one adapter, broadcast over the batch without copies).
///
/// # Shapes
/// - each table: `[n_a, |layers|·2·kv_heads·head_dim]` → per layer `[b | 1, kv_heads, n_max, head_dim]`
pub fn prefix_kv<B: FrozenOps>(
    dims: &BackboneDims,
    tables: &[(Tensor<B, 2>, &[usize])],
    row_adapter: Option<&[usize]>,
) -> Result<PrefixKv<B>> {
    let (kvh, hd) = (dims.num_kv_heads, dims.head_dim);
    let per_layer = 2 * kvh * hd;
    for (t, layers) in tables {
        let [_, w] = t.dims();
        if w != layers.len() * per_layer {
            return Err(PromptError::Config(format!(
                "prefix table width {w} != {} layers · 2 · {kvh} KV heads · {hd}",
                layers.len()
            )));
        }
        if let Some(&l) = layers.iter().find(|&&l| l >= dims.num_layers) {
            return Err(PromptError::Config(format!(
                "layer {l} of a {}-layer model",
                dims.num_layers
            )));
        }
    }
    let n_max = tables.iter().map(|(t, _)| t.dims()[0]).max().unwrap_or(0);
    let Some((first, selected)) = tables.first() else {
        return Err(PromptError::Config("no prefix table".into()));
    };
    // One slot mask serves every layer, so adapters mixed in a batch must prefix the same layers.
    if tables.iter().any(|(_, sel)| sel != selected) {
        return Err(PromptError::Config(
            "adapters mixed in one batch must put prefixes on the same layers".into(),
        ));
    }
    let width = selected.len() * per_layer;
    let (batched, b, row_lengths) = match row_adapter {
        None if tables.len() == 1 => (first.clone().unsqueeze::<3>(), 1, None),
        None => {
            return Err(PromptError::Config("several adapters need a row → adapter map".into()))
        }
        Some(rows) => {
            if let Some(&a) = rows.iter().find(|&&a| a >= tables.len()) {
                return Err(PromptError::Config(format!(
                    "row uses adapter {a} of {}",
                    tables.len()
                )));
            }
            let device = first.device();
            let padded: Vec<Tensor<B, 2>> = tables
                .iter()
                .map(|(t, _)| {
                    let n = t.dims()[0];
                    if n == n_max {
                        t.clone()
                    } else if n == 0 {
                        Tensor::zeros([n_max, width], &device)
                    } else {
                        Tensor::cat(vec![t.clone(), Tensor::zeros([n_max - n, width], &device)], 0)
                    }
                })
                .collect();
            let index = ptune_transformer::index_tensor::<B>(rows, &device);
            let per_row = Tensor::stack::<3>(padded, 0).select(0, index);
            let lengths = rows.iter().map(|&a| tables[a].0.dims()[0]).collect();
            (per_row, rows.len(), Some(lengths))
        }
    };
    let split = batched.reshape([b, n_max, selected.len() * 2, kvh, hd]).permute([2, 0, 3, 1, 4]);
    let mut layers: Vec<Option<LayerPrefix<B>>> = vec![None; dims.num_layers];
    for (i, &layer) in selected.iter().enumerate() {
        let key = split.clone().narrow(0, 2 * i, 1).reshape([b, kvh, n_max, hd]);
        let value = split.clone().narrow(0, 2 * i + 1, 1).reshape([b, kvh, n_max, hd]);
        layers[layer] = Some(LayerPrefix { key, value });
    }
    Ok(PrefixKv { layers, row_lengths })
}
