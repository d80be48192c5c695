//! [`FrozenOps`] on Burn's autodiff backend: one graph node per op, with the backward written by
//! hand (Burn's `Backward` / `OpsKind` extension API). The forward runs the inner backend's op and
//! keeps only what the backward needs; the backward calls the inner backend's backward. Weights are
//! constants of the node; if one requires gradients the composed form is used instead.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::ops::FloatTensor;

use super::{composed, FrozenOps, NormKind, NormSaved};

#[derive(Debug)]
struct LinearBackward;

impl<B: FrozenOps> Backward<B, 1> for LinearBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let weight = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::frozen_linear_backward(grad, weight));
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: FrozenOps> Backward<B, 1> for CrossEntropyBackward {
    /// Logits, per-row logsumexp, labels.
    type State = (FloatTensor<B>, FloatTensor<B>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, lse, labels) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::frozen_cross_entropy_backward(grad, logits, lse, &labels)
        });
    }
}

#[derive(Debug)]
struct LinearCrossEntropyBackward;

impl<B: FrozenOps> Backward<B, 1> for LinearCrossEntropyBackward {
    /// The gradient of the mean loss with respect to the input, computed in the forward.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dx = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            // grad is `[1]`: scale the saved gradient by it.
            let grad = B::float_reshape(grad, [1, 1].into());
            B::float_mul(dx, grad)
        });
    }
}

#[derive(Debug)]
struct NormBackward;

impl<B: FrozenOps> Backward<B, 1> for NormBackward {
    type State = (NormSaved<B>, FloatTensor<B>, NormKind);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (saved, gamma, kind) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::frozen_norm_backward(grad, saved, gamma, kind)
        });
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: FrozenOps> Backward<B, 1> for GeluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::frozen_gelu_backward(grad, x));
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FrozenOps> Backward<B, 2> for SwigluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [node_gate, node_up] = ops.parents;
        let (d_gate, d_up) = B::frozen_swiglu_backward(grad, gate, up);
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, d_gate);
        }
        if let Some(node) = node_up {
            grads.register::<B>(node.id, d_up);
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

/// Saved `q`, `k`, `v`, probabilities and scale.
type AttentionState<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

impl<B: FrozenOps> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, p, scale) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let need = [ops.parents[0].is_some(), ops.parents[1].is_some(), ops.parents[2].is_some()];
        let out = B::frozen_attention_backward(grad, q, k, v, p, scale, need);
        for (node, g) in ops.parents.into_iter().zip(out) {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct RopeBackward;

impl<B: FrozenOps> Backward<B, 1> for RopeBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::frozen_rope_backward(grad, cos, sin));
    }
}

impl<B: FrozenOps, C: CheckpointStrategy> FrozenOps for Autodiff<B, C> {
    fn frozen_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        if weight.is_tracked() || bias.as_ref().is_some_and(|b| b.is_tracked()) {
            return composed::linear::<Self>(x, weight, bias);
        }
        let (weight, bias) = (weight.primitive, bias.map(|b| b.primitive));
        match LinearBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_linear(x.primitive, weight.clone(), bias);
                prep.finish(weight, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_linear(x.primitive, weight, bias)),
        }
    }

    fn frozen_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
        kind: NormKind,
    ) -> FloatTensor<Self> {
        if gamma.is_tracked() || beta.as_ref().is_some_and(|b| b.is_tracked()) {
            return composed::norm_train::<Self>(x, gamma, beta, eps, kind).0;
        }
        let (gamma, beta) = (gamma.primitive, beta.map(|b| b.primitive));
        match NormBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, saved) = B::frozen_norm_train(x.primitive, gamma.clone(), beta, eps, kind);
                prep.finish((saved, gamma, kind), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::frozen_norm(x.primitive, gamma, beta, eps, kind))
            }
        }
    }

    fn frozen_cross_entropy(logits: FloatTensor<Self>, labels: &[usize]) -> FloatTensor<Self> {
        match CrossEntropyBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (loss, lse) = B::frozen_cross_entropy_train(logits.primitive.clone(), labels);
                prep.finish((logits.primitive, lse, labels.to_vec()), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::frozen_cross_entropy_train(logits.primitive, labels).0)
            }
        }
    }

    fn frozen_linear_cross_entropy(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        labels: &[usize],
    ) -> FloatTensor<Self> {
        if weight.is_tracked() || bias.as_ref().is_some_and(|b| b.is_tracked()) {
            let logits = composed::linear::<Self>(x, weight, bias);
            return Self::frozen_cross_entropy(logits, labels);
        }
        let (weight, bias) = (weight.primitive, bias.map(|b| b.primitive));
        match LinearCrossEntropyBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (loss, dx) =
                    B::frozen_linear_cross_entropy_train(x.primitive, weight, bias, labels);
                prep.finish(dx, loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::frozen_linear_cross_entropy(x.primitive, weight, bias, labels))
            }
        }
    }

    fn frozen_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_gelu(x.primitive.clone());
                prep.finish(x.primitive, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_gelu(x.primitive)),
        }
    }

    fn frozen_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward
            .prepare::<C>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_swiglu(gate.primitive.clone(), up.primitive.clone());
                prep.finish((gate.primitive, up.primitive), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_swiglu(gate.primitive, up.primitive)),
        }
    }

    fn frozen_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> FloatTensor<Self> {
        if bias.as_ref().is_some_and(|b| b.is_tracked()) {
            return composed::attention_train::<Self>(q, k, v, bias, scale).0;
        }
        let bias = bias.map(|b| b.primitive);
        match AttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, p) = B::frozen_attention_train(
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                    bias,
                    scale,
                );
                prep.finish((q.primitive, k.primitive, v.primitive, p, scale), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::frozen_attention(q.primitive, k.primitive, v.primitive, bias, scale))
            }
        }
    }

    fn frozen_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if cos.is_tracked() || sin.is_tracked() {
            return composed::rope::<Self>(x, cos, sin, false);
        }
        let (cos, sin) = (cos.primitive, sin.primitive);
        match RopeBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_rope(x.primitive, cos.clone(), sin.clone());
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_rope(x.primitive, cos, sin)),
        }
    }
}
