//! [`SoftPrompt`]: the one trainable module all four methods produce (an encoder plus its spec), and
//! how a batch of token rows becomes backbone input with it — alone or mixed with other adapters.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ptune_reparam::Reparam;
use ptune_transformer::FrozenOps;
use ptune_transformer::{Backbone, BackboneInput, PositionPolicy, PrefixKv};

use crate::error::{PromptError, Result};
use crate::spec::PromptSpec;
use crate::wiring::{assemble, prefix_kv, row_slots, PromptedBatch};

/// A soft prompt of any method: an encoder producing its table, and what to do with the table.
#[derive(Module, Debug)]
pub struct SoftPrompt<B: Backend> {
    /// Produces the table: `[N, d]` (input-level) or `[N, |layers|·2·kv_dim]` (prefix).
    pub encoder: Reparam<B>,
    /// Prefix dropout, active only while the prompt trains (its table is tracked by autodiff): a
    /// prompt made `no_grad()` for evaluation, or on a backend without autodiff, drops nothing.
    pub dropout: Dropout,
    /// Method, size, placement, layers.
    #[module(skip)]
    pub spec: PromptSpec,
}

impl<B: FrozenOps> SoftPrompt<B> {
    /// Wraps an encoder; checks the table it produces against the spec.
    pub fn new(encoder: Reparam<B>, spec: PromptSpec) -> Result<Self> {
        let [n, w] = encoder.output_shape();
        if n != spec.num_virtual_tokens {
            return Err(PromptError::Config(format!(
                "encoder makes {n} rows, the method has {} virtual tokens",
                spec.num_virtual_tokens
            )));
        }
        if spec.method.is_input_level() && w != spec.token_dim {
            return Err(PromptError::Config(format!(
                "encoder width {w} != token dim {}",
                spec.token_dim
            )));
        }
        let dropout = DropoutConfig::new(spec.prefix_dropout).init();
        Ok(Self { encoder, dropout, spec })
    }

    /// The table for this step: the encoder runs once (not once per row), then prefix dropout
    /// while training. Burn's `Dropout` is active on every autodiff backend, evaluation included;
    /// here it applies only when the table is tracked (the prompt is being trained), so dev
    /// scores and predictions are deterministic on every backend.
    ///
    /// # Shapes
    /// - output: `[N, width]`
    pub fn table(&self) -> Tensor<B, 2> {
        let t = self.encoder.forward();
        if self.spec.method.is_input_level() || !t.is_require_grad() {
            t
        } else {
            self.dropout.forward(t)
        }
    }

    /// The same soft prompt with its encoder replaced by the table it produces (for inference and
    /// adapter files: the encoder is discarded).
    pub fn materialized(&self) -> Self {
        Self {
            encoder: Reparam::Table(self.encoder.materialize()),
            dropout: self.dropout.clone(),
            spec: self.spec.clone(),
        }
    }

    /// Checks the spec against a backbone.
    pub fn check_backbone(&self, backbone: &(impl Backbone<B> + ?Sized)) -> Result<()> {
        let dims = backbone.dims();
        if self.spec.token_dim != dims.hidden_size {
            return Err(PromptError::Config(format!(
                "adapter made for hidden size {}, model has {}",
                self.spec.token_dim, dims.hidden_size
            )));
        }
        if !self.spec.method.is_input_level() {
            let [_, w] = self.encoder.output_shape();
            let expected = crate::wiring::prefix_width(&dims, self.spec.layers.len());
            if w != expected {
                return Err(PromptError::Config(format!(
                    "prefix width {w}, the model needs {} layers · 2 · {} KV dims = {expected}",
                    self.spec.layers.len(),
                    dims.kv_dim()
                )));
            }
        }
        Ok(())
    }

    /// Builds backbone input for token rows (unpadded ids, with the tokenizer's special tokens).
    pub fn prepare(
        &self,
        backbone: &(impl Backbone<B> + ?Sized),
        rows: &[Vec<u32>],
    ) -> Result<PromptedBatch<B>> {
        prepare_mixed(backbone, &[self], None, rows)
    }
}

/// Builds backbone input for rows that may each use a different adapter (`row_adapter[r]` indexes
/// `adapters`; `None` = every row uses `adapters[0]`). Each row gets exactly the output it would get
/// alone: input-level prompts are placed per row, prefixes of different lengths are masked per row
/// and positions shift by each row's own prefix length.
pub fn prepare_mixed<B: FrozenOps, M: Backbone<B> + ?Sized>(
    backbone: &M,
    adapters: &[&SoftPrompt<B>],
    row_adapter: Option<&[usize]>,
    rows: &[Vec<u32>],
) -> Result<PromptedBatch<B>> {
    if adapters.is_empty() {
        return Err(PromptError::Config("no adapter".into()));
    }
    let map: Vec<Option<usize>> = match row_adapter {
        Some(map) => map.iter().map(|&a| Some(a)).collect(),
        None => vec![Some(0); rows.len()],
    };
    if row_adapter.is_some_and(|m| m.len() != rows.len()) {
        return Err(PromptError::Config(format!(
            "row → adapter map {row_adapter:?} does not fit {} rows",
            rows.len()
        )));
    }
    prepare_rows(backbone, adapters, &map, rows)
}

/// [`prepare_mixed`] where a row may also run without any adapter (`row_adapter[r] == None`:
/// the frozen model alone, as [`PromptedBatch::plain`] would run it). A server mixing requests
/// for several adapters and for the base model builds its batches with this.
pub fn prepare_rows<B: FrozenOps, M: Backbone<B> + ?Sized>(
    backbone: &M,
    adapters: &[&SoftPrompt<B>],
    row_adapter: &[Option<usize>],
    rows: &[Vec<u32>],
) -> Result<PromptedBatch<B>> {
    check_map(adapters, row_adapter, rows.len())?;
    for a in adapters {
        a.check_backbone(backbone)?;
    }
    let device = backbone.embedding_matrix().device();
    let tables: Vec<Tensor<B, 2>> = adapters.iter().map(|a| a.table()).collect();

    // Input-level prompts: stack the input tables, each adapter's rows starting at its offset.
    let mut offsets = Vec::with_capacity(adapters.len());
    let mut input_tables = Vec::new();
    let mut next = 0;
    for (a, t) in adapters.iter().zip(&tables) {
        offsets.push(next);
        if a.spec.method.is_input_level() {
            input_tables.push(t.clone());
            next += a.spec.num_virtual_tokens;
        }
    }
    let slots: Vec<_> = rows
        .iter()
        .zip(row_adapter)
        .map(|(ids, a)| {
            let placement = a.and_then(|a| {
                let (spec, offset) = (&adapters.get(a)?.spec, *offsets.get(a)?);
                spec.method.is_input_level().then_some((
                    &spec.placement,
                    offset,
                    spec.num_virtual_tokens,
                ))
            });
            row_slots(ids, placement)
        })
        .collect();
    let prompts = (!input_tables.is_empty()).then(|| Tensor::cat(input_tables, 0));
    let (embeds, padding, text_positions) = assemble(backbone, prompts, &slots, &device)?;
    let mut input = BackboneInput::new(embeds).with_padding_mask(padding);
    if let Some(prefix) = prefix_of_rows(backbone, adapters, &tables, row_adapter)? {
        input = input.with_prefix(prefix).with_positions(PositionPolicy::Shift);
    }
    Ok(PromptedBatch { input, text_positions })
}

/// The per-layer prefixes of rows that each use an adapter or none (decoding steps pass them
/// again on every call); `None` when no row uses a prefix method.
pub fn rows_prefix<B: FrozenOps, M: Backbone<B> + ?Sized>(
    backbone: &M,
    adapters: &[&SoftPrompt<B>],
    row_adapter: &[Option<usize>],
) -> Result<Option<PrefixKv<B>>> {
    check_map(adapters, row_adapter, row_adapter.len())?;
    let tables: Vec<Tensor<B, 2>> = adapters.iter().map(|a| a.table()).collect();
    prefix_of_rows(backbone, adapters, &tables, row_adapter)
}

fn check_map<B: FrozenOps>(
    adapters: &[&SoftPrompt<B>],
    row_adapter: &[Option<usize>],
    rows: usize,
) -> Result<()> {
    if row_adapter.len() != rows || row_adapter.iter().flatten().any(|&a| a >= adapters.len()) {
        return Err(PromptError::Config(format!(
            "row → adapter map {row_adapter:?} does not fit {rows} rows and {} adapters",
            adapters.len()
        )));
    }
    Ok(())
}

/// Prefixes for the rows: rows of input-level adapters and rows without an adapter get zero slots.
fn prefix_of_rows<B: FrozenOps, M: Backbone<B> + ?Sized>(
    backbone: &M,
    adapters: &[&SoftPrompt<B>],
    tables: &[Tensor<B, 2>],
    row_adapter: &[Option<usize>],
) -> Result<Option<PrefixKv<B>>> {
    let is_prefix = |a: usize| adapters.get(a).is_some_and(|a| !a.spec.method.is_input_level());
    let used: Vec<usize> = {
        let mut u: Vec<usize> =
            row_adapter.iter().flatten().copied().filter(|&a| is_prefix(a)).collect();
        u.sort_unstable();
        u.dedup();
        u
    };
    let (Some(&first), Some(first_table)) =
        (used.first(), used.first().and_then(|&a| tables.get(a)))
    else {
        return Ok(None);
    };
    let dims = backbone.dims();
    let layers = &adapters[first].spec.layers;
    if used.len() == 1 && row_adapter.iter().all(|&a| a == Some(first)) {
        return prefix_kv(&dims, &[(first_table.clone(), layers)], None).map(Some);
    }
    let width = crate::wiring::prefix_width(&dims, layers.len());
    let device = first_table.device();
    // Adapter index → table; input-level and unused adapters, and the extra entry for rows
    // without an adapter, get an empty table (zero slots) on the common layers.
    let empty = || (Tensor::zeros([0, width], &device), layers.as_slice());
    let mut entries: Vec<(Tensor<B, 2>, &[usize])> = adapters
        .iter()
        .zip(tables)
        .enumerate()
        .map(
            |(i, (a, t))| {
                if used.contains(&i) {
                    (t.clone(), a.spec.layers.as_slice())
                } else {
                    empty()
                }
            },
        )
        .collect();
    entries.push(empty());
    let map: Vec<usize> = row_adapter.iter().map(|a| a.unwrap_or(adapters.len())).collect();
    prefix_kv(&dims, &entries, Some(&map)).map(Some)
}
