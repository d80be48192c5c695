//! # ptune-benches
//!
//! The benchmark workload, defined once and shared by the criterion benches (`benches/methods.rs`),
//! the per-workload runner (`ptune-bench`, which `cargo xtask bench` calls) and, word for word, the
//! PEFT peer script (`benches/peer/peft_bench.py`):
//!
//! - MiniLM: batch 32 × 128 tokens, row `r` = `[CLS] (1000 + (7r + 13j) mod 20000)_{j<126} [SEP]`,
//!   labels `r mod 2`; sequence classification (the head on HF's pooler, as PEFT's
//!   `BertForSequenceClassification`).
//! - SmolLM2: batch 8 × 128 tokens, row `r` = `(100 + (7r + 13j) mod 20000)_{j<128}`; causal-LM loss
//!   on every next token.
//! - 20 virtual tokens for every method: Prompt Tuning (table), P-Tuning MLP and LSTM (hidden 128),
//!   Prefix-Tuning (Tanh MLP, hidden 512), P-Tuning v2 (per-layer table, no projection; prefix
//!   dropout 0.1, which PEFT does not have).
//! - "forward": the prompted forward pass and the loss, no gradients; "train-step": forward, backward
//!   and an AdamW step of the trainable parameters (prompt and head).

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use ptune_data::tasks::LmExample;
use ptune_prompt::{ClassifierHeadConfig, EncoderKind, MethodKind, MethodOptions, SoftPrompt};
use ptune_train::classify::{cross_entropy, pooled};
use ptune_train::lm::target_loss;
use ptune_train::trainer::gradients;
use ptune_train::Pooling;
use ptune_transformer::FrozenOps;
use ptune_transformer::{load_model, AnyBackbone, Backbone, CheckpointedLayers};

/// The methods benchmarked, by name.
pub const METHODS: [&str; 5] =
    ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm", "prefix-tuning", "p-tuning-v2"];

/// The registry's method and options behind each of [`METHODS`]: `VIRTUAL_TOKENS` virtual tokens,
/// P-Tuning's encoders 128 wide, every other option the method's default (as the PEFT peer script).
pub fn method(name: &str) -> Result<(MethodKind, MethodOptions)> {
    let options = |encoder: Option<EncoderKind>, hidden: Option<usize>| MethodOptions {
        virtual_tokens: Some(VIRTUAL_TOKENS),
        encoder,
        encoder_hidden: hidden,
        ..MethodOptions::default()
    };
    Ok(match name {
        "p-tuning-mlp" => (MethodKind::PTuning, options(Some(EncoderKind::Mlp), Some(128))),
        "p-tuning-lstm" => (MethodKind::PTuning, options(Some(EncoderKind::Lstm), Some(128))),
        other if METHODS.contains(&other) => (other.parse()?, options(None, None)),
        other => bail!("unknown method `{other}` ({})", METHODS.join(", ")),
    })
}

/// The models benchmarked, by name (fetched by `cargo xtask fetch`).
pub const MODELS: [&str; 2] = ["minilm", "smollm2"];

/// Virtual tokens of every method.
pub const VIRTUAL_TOKENS: usize = 20;

/// Batch size and sequence length of `model`.
pub fn shape(model: &str) -> Result<(usize, usize)> {
    match model {
        "minilm" => Ok((32, 128)),
        "smollm2" => Ok((8, 128)),
        other => bail!("unknown model `{other}` ({})", MODELS.join(", ")),
    }
}

/// The token rows of `model`'s workload.
pub fn rows(model: &str) -> Result<Vec<Vec<u32>>> {
    let (b, s) = shape(model)?;
    Ok((0..b)
        .map(|r| match model {
            "minilm" => std::iter::once(101)
                .chain((0..s - 2).map(|j| 1000 + ((r * 7 + j * 13) % 20000) as u32))
                .chain(std::iter::once(102))
                .collect(),
            _ => (0..s).map(|j| 100 + ((r * 7 + j * 13) % 20000) as u32).collect(),
        })
        .collect())
}

/// A soft prompt of `method` (one of [`METHODS`]) for `backbone`, built through the registry.
pub fn prompt<B: AutodiffBackend + FrozenOps>(
    method_name: &str,
    backbone: &dyn Backbone<B>,
) -> Result<SoftPrompt<B>> {
    let (kind, options) = method(method_name)?;
    Ok(kind.build(&options, backbone, None)?)
}

/// The trainable part of a workload: the prompt, and for the encoder its classification head.
#[derive(Module, Debug)]
pub struct Trainable<B: burn::tensor::backend::Backend> {
    /// The soft prompt.
    pub prompt: SoftPrompt<B>,
    /// The head (MiniLM only).
    pub head: Option<ptune_prompt::ClassifierHead<B>>,
}

/// One benchmark workload: model, batch and trainable module.
pub struct Workload<B: AutodiffBackend> {
    /// The frozen backbone.
    pub backbone: AnyBackbone<B>,
    /// The model name.
    pub model: String,
    /// Token rows.
    pub rows: Vec<Vec<u32>>,
    /// Trainable module.
    pub trainable: Trainable<B>,
    /// Run the backbone with gradient checkpointing (`ptune train --gradient-checkpointing`).
    pub gradient_checkpointing: bool,
}

impl<B: AutodiffBackend + FrozenOps> std::fmt::Debug for Workload<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workload({}, {} rows)", self.model, self.rows.len())
    }
}

impl<B: AutodiffBackend + FrozenOps> Workload<B> {
    /// Loads `model` (fetched) and builds `method`'s prompt (seeded).
    pub fn new(model: &str, method: &str) -> Result<Self> {
        let device = B::Device::default();
        let dir = ptune_data::recipes::fetched("models", model)
            .with_context(|| format!("model `{model}`"))?;
        let backbone = load_model::<B>(&dir, &device)?.backbone;
        B::seed(&device, 0);
        let prompt = prompt(method, &backbone)?;
        let head = backbone
            .as_encoder()
            .is_some()
            .then(|| ClassifierHeadConfig::new(backbone.dims().hidden_size, 2).init(&device));
        Ok(Self {
            rows: rows(model)?,
            model: model.into(),
            backbone,
            trainable: Trainable { prompt, head },
            gradient_checkpointing: false,
        })
    }

    /// Trainable parameters.
    pub fn trainable_parameters(&self) -> usize {
        self.trainable.num_params()
    }

    /// The workload's loss for `t`.
    pub fn loss(&self, t: &Trainable<B>) -> Result<Tensor<B, 1>> {
        self.loss_on(&self.backbone, t)
    }

    /// The workload's loss for `t` through `backbone` (the loaded one, or a checkpointing wrapper).
    fn loss_on(&self, backbone: &dyn Backbone<B>, t: &Trainable<B>) -> Result<Tensor<B, 1>> {
        match &t.head {
            Some(head) => {
                let labels: Vec<usize> = (0..self.rows.len()).map(|r| r % 2).collect();
                let x = pooled(backbone, Some(&t.prompt), &self.rows, Pooling::Pooler)?;
                Ok(cross_entropy(head.forward(x), &labels))
            }
            None => {
                let examples: Vec<LmExample> = self
                    .rows
                    .iter()
                    .map(|r| LmExample { source: r[..1].to_vec(), target: r[1..].to_vec() })
                    .collect();
                let refs: Vec<&LmExample> = examples.iter().collect();
                Ok(target_loss(backbone, Some(&t.prompt), &refs)?)
            }
        }
    }

    /// The forward pass and loss without gradients (parameters detached); returns the loss.
    pub fn forward(&self) -> Result<f64> {
        let frozen = self.trainable.clone().no_grad();
        Ok(self.loss(&frozen)?.into_scalar().elem())
    }

    /// Forward, backward and one AdamW step (the optimizer is created by the caller).
    pub fn train_step<O: Optimizer<Trainable<B>, B>>(&mut self, optim: &mut O) -> Result<f64> {
        let checkpointed =
            self.gradient_checkpointing.then(|| CheckpointedLayers::new(&self.backbone));
        let backbone: &dyn Backbone<B> = match &checkpointed {
            Some(c) => c,
            None => &self.backbone,
        };
        let loss = self.loss_on(backbone, &self.trainable)?;
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = gradients(loss, checkpointed.as_ref(), &self.trainable)?;
        self.trainable = optim.step(1e-3, self.trainable.clone(), grads);
        Ok(value)
    }

    /// An AdamW optimizer for the trainable module.
    pub fn optimizer(&self) -> impl Optimizer<Trainable<B>, B> {
        AdamWConfig::new().init::<B, Trainable<B>>()
    }
}

/// Peak resident memory of this process so far, in MiB (`VmHWM`; Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_rows_follow_the_peer_definition() {
        let minilm = rows("minilm").unwrap();
        assert_eq!((minilm.len(), minilm[0].len()), (32, 128));
        assert_eq!((minilm[0][0], minilm[0][127]), (101, 102));
        // Row 1, position 2: 1000 + (7·1 + 13·1) mod 20000 (j counts from the first text token).
        assert_eq!(minilm[1][2], 1020);
        let smol = rows("smollm2").unwrap();
        assert_eq!((smol.len(), smol[0].len()), (8, 128));
        assert_eq!(smol[2][3], 100 + 14 + 39);
        assert!(smol.iter().flatten().all(|&t| t < 49152));
        assert!(rows("gpt2").is_err());
    }
}
