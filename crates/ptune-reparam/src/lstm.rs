//! LSTM reparameterization of P-Tuning, two variants:
//!
//! - [`LstmVariant::Peft`] (PEFT / NeMo `PromptEncoder`, LSTM): 2-layer BiLSTM of width `H` over the
//!   embedding rows, then `Linear(2H, 2H) → ReLU → Linear(2H, d)`.
//! - [`LstmVariant::Paper`] (P-Tuning paper, "GPT Understands, Too"): 2-layer BiLSTM of width `d/2`
//!   (so its output is `d`), then `Linear(d, d) → ReLU → Linear(d, d)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BiLstm, BiLstmConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Which LSTM encoder layout.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum LstmVariant {
    /// PEFT/NeMo: BiLSTM width `H`, head `2H → 2H → d`.
    Peft,
    /// P-Tuning paper: BiLSTM width `d/2`, head `d → d → d`.
    Paper,
}

/// Config of an [`LstmEncoder`].
#[derive(Config, Debug)]
pub struct LstmEncoderConfig {
    /// Virtual tokens `N`.
    pub n_tokens: usize,
    /// Token width `d`.
    pub token_dim: usize,
    /// LSTM width `H` (ignored by the paper variant, which uses `d/2`).
    pub hidden: usize,
    /// Layout.
    #[config(default = "LstmVariant::Peft")]
    pub variant: LstmVariant,
    /// Stacked BiLSTM layers (PEFT's `encoder_num_layers`, default 2).
    #[config(default = 2)]
    pub num_layers: usize,
}

/// BiLSTM + MLP head.
#[derive(Module, Debug)]
pub struct LstmEncoder<B: Backend> {
    /// `embedding` `[N, d]`.
    pub embedding: Embedding<B>,
    /// `lstm_head` layers (each bidirectional).
    pub lstm: Vec<BiLstm<B>>,
    /// `mlp_head.0`.
    pub head_up: Linear<B>,
    /// `mlp_head.2`.
    pub head_out: Linear<B>,
}

impl LstmEncoderConfig {
    /// LSTM width per direction.
    pub fn lstm_width(&self) -> usize {
        match self.variant {
            LstmVariant::Peft => self.hidden,
            LstmVariant::Paper => self.token_dim / 2,
        }
    }

    /// A freshly initialized encoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LstmEncoder<B> {
        let (d, h) = (self.token_dim, self.lstm_width());
        let lstm = (0..self.num_layers.max(1))
            .map(|i| {
                let input = if i == 0 { d } else { 2 * h };
                BiLstmConfig::new(input, h, true).with_batch_first(true).init(device)
            })
            .collect();
        let (up_out, out) = match self.variant {
            LstmVariant::Peft => (2 * h, d),
            LstmVariant::Paper => (d, d),
        };
        LstmEncoder {
            embedding: EmbeddingConfig::new(self.n_tokens, d).init(device),
            lstm,
            head_up: LinearConfig::new(2 * h, up_out).init(device),
            head_out: LinearConfig::new(up_out, out).init(device),
        }
    }
}

impl<B: Backend> LstmEncoder<B> {
    /// # Shapes
    /// - output: `[N, d]`
    pub fn forward(&self) -> Tensor<B, 2> {
        let n = self.embedding.weight.dims()[0];
        let ids = Tensor::<B, 1, Int>::arange(0..n as i64, &self.embedding.weight.device())
            .reshape([1, n]);
        let mut x = self.embedding.forward(ids);
        for layer in &self.lstm {
            x = layer.forward(x, None).0;
        }
        let x = self.head_out.forward(relu(self.head_up.forward(x)));
        let [_, n, w] = x.dims();
        x.reshape([n, w])
    }

    /// Width of the produced rows.
    pub fn output_width(&self) -> usize {
        self.head_out.weight.dims()[1]
    }
}
