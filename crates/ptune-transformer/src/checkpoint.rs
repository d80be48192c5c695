//! Gradient checkpointing of a frozen backbone: the forward keeps one `[b, s, d]` tensor per layer
//! (its input) instead of every activation of every layer, and the backward runs each layer again,
//! top to bottom, to get the gradients of its input and of its prefix.
//!
//! It works at the level of whole backward passes, not inside Burn's graph: the forward runs the
//! layers one by one without a graph (the prompt's tensors detached) and hands the task a hidden
//! state that is a fresh leaf; [`CheckpointedLayers::backward`] back-propagates the task's loss to
//! that leaf, then for each layer from the top runs the layer again on a leaf of its saved input
//! (its prefix keys and values as leaves too) and back-propagates the gradient it has so far
//! through that one layer; finally one backward of `Σ tensor·gradient` over the prompt's tensors
//! (the input embeddings and every prefix) carries the gradients into the trainable parameters.
//! Every backward is a top-level one. (Running a layer's backward from inside a custom graph node
//! would nest one backward in another, which Burn 0.21's autodiff graph lock does not allow.)
//!
//! The result is exact: the same operations on the same values, since the frozen backbone has no
//! dropout and the prompt's tensors (prefix dropout included) are computed once. PEFT refuses
//! gradient checkpointing for prefix tuning; here prefixes work like any other input.

use std::cell::RefCell;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::attention::PrefixKv;
use crate::error::{Result, TransformerError};
use crate::input::{delegate_backbone, Backbone, BackboneInput};

/// One checkpointed forward: what its backward needs.
struct Segment<B: AutodiffBackend> {
    /// The input as given (the prompt's tracked tensors).
    input: BackboneInput<B>,
    /// Its prefix detached from the graph, as the layers ran on it.
    prefix: Option<PrefixKv<B>>,
    /// The first layer run.
    start: usize,
    /// The input of each layer run, without a graph.
    hidden: Vec<Tensor<B::InnerBackend, 3>>,
    /// The leaf the task's loss was computed from (the backbone's output).
    top: Tensor<B, 3>,
}

/// A backbone whose [`forward`](Backbone::forward) is checkpointed (see the module docs). Hand it
/// to a task's loss in place of the backbone, then call [`backward`](Self::backward) on the loss
/// instead of `loss.backward()`. Everything but `forward` is the wrapped backbone's.
pub struct CheckpointedLayers<'a, B: AutodiffBackend> {
    backbone: &'a dyn Backbone<B>,
    segments: RefCell<Vec<Segment<B>>>,
}

impl<'a, B: AutodiffBackend> CheckpointedLayers<'a, B> {
    /// Wraps `backbone`.
    pub fn new(backbone: &'a dyn Backbone<B>) -> Self {
        Self { backbone, segments: RefCell::new(Vec::new()) }
    }

    /// The gradients of `loss` (computed through this wrapper's forwards since the last call), as
    /// two sets to be summed (e.g. by Burn's `GradientsAccumulator`): the loss's own backward
    /// (everything outside the backbone, such as a task head) and the final one (the prompt's).
    ///
    /// # Shapes
    /// - loss: `[1]`
    pub fn backward(&self, loss: Tensor<B, 1>) -> Result<Vec<B::Gradients>> {
        let device = loss.device();
        let first = loss.backward();
        let segments = std::mem::take(&mut *self.segments.borrow_mut());
        // A tracked zero, so the last backward has a graph even when nothing upstream is tracked.
        let mut total = Tensor::<B, 1>::zeros([1], &device).require_grad();
        for seg in segments {
            let Some(mut grad) = seg.top.grad(&first) else { continue };
            let prefix_layers =
                seg.input.prefix.as_ref().map(|p| p.layers.clone()).unwrap_or_default();
            for (i, h) in seg.hidden.iter().enumerate().rev() {
                let l = seg.start + i;
                let x = Tensor::<B, 3>::from_inner(h.clone()).require_grad();
                let mut leaves = None;
                let prefix = seg.prefix.clone().map(|mut p| {
                    if let Some(Some(lp)) = p.layers.get_mut(l) {
                        lp.key = lp.key.clone().require_grad();
                        lp.value = lp.value.clone().require_grad();
                        leaves = Some((lp.key.clone(), lp.value.clone()));
                    }
                    p
                });
                let step = BackboneInput {
                    embeds: x.clone(),
                    prefix,
                    layers: l..l + 1,
                    ..seg.input.clone()
                };
                let y = self.backbone.forward(step)?;
                let grads = (y * Tensor::from_inner(grad)).sum().backward();
                if let (Some((k, v)), Some(Some(orig))) = (leaves, prefix_layers.get(l)) {
                    if let Some(gk) = k.grad(&grads) {
                        total = total + (orig.key.clone() * Tensor::from_inner(gk)).sum();
                    }
                    if let Some(gv) = v.grad(&grads) {
                        total = total + (orig.value.clone() * Tensor::from_inner(gv)).sum();
                    }
                }
                grad = x.grad(&grads).ok_or_else(|| {
                    TransformerError::Input(format!(
                        "layer {l} output does not depend on its input"
                    ))
                })?;
            }
            total = total + (seg.input.embeds.clone() * Tensor::from_inner(grad)).sum();
        }
        Ok(vec![first, total.backward()])
    }
}

/// The prefix with every tensor detached from the graph.
fn detached<B: AutodiffBackend>(p: &PrefixKv<B>) -> PrefixKv<B> {
    let mut p = p.clone();
    for lp in p.layers.iter_mut().flatten() {
        lp.key = lp.key.clone().detach();
        lp.value = lp.value.clone().detach();
    }
    p
}

impl<B: AutodiffBackend> Backbone<B> for CheckpointedLayers<'_, B> {
    delegate_backbone!(.backbone);

    /// The checkpointed forward over `input.layers`.
    ///
    /// # Shapes
    /// - input.embeds: `[b, s, d]` → `[b, s, d]`
    fn forward(&self, input: BackboneInput<B>) -> Result<Tensor<B, 3>> {
        let n = self.backbone.dims().num_layers;
        let (start, end) = input.layer_range(n)?;
        if start == end {
            return self.backbone.forward(input);
        }
        // Piece `l` is layer `l` alone; layer 0's includes the embedding stage (its input is the
        // input embeddings) and the last layer's the final norm (Llama).
        let prefix = input.prefix.as_ref().map(detached);
        let mut hidden = Vec::with_capacity(end - start);
        let mut x = input.embeds.clone().inner();
        for l in start..end {
            hidden.push(x.clone());
            let step = BackboneInput {
                embeds: Tensor::from_inner(x),
                prefix: prefix.clone(),
                layers: l..l + 1,
                ..input.clone()
            };
            x = self.backbone.forward(step)?.inner();
        }
        let top = Tensor::<B, 3>::from_inner(x).require_grad();
        let segment = Segment { input, prefix, start, hidden, top: top.clone() };
        self.segments.borrow_mut().push(segment);
        Ok(top)
    }
}
