//! PEFT's sequence-classification head for encoders (`BertForSequenceClassification.classifier`:
//! a linear layer on the pooled output), saved in adapters as `base_model.classifier.{weight,bias}`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Config of a [`ClassifierHead`].
#[derive(Config, Debug)]
pub struct ClassifierHeadConfig {
    /// Input width (pooled hidden size).
    pub d_model: usize,
    /// Number of classes.
    pub num_labels: usize,
}

/// Linear classifier on a pooled representation.
#[derive(Module, Debug)]
pub struct ClassifierHead<B: Backend> {
    /// `classifier` (`[d, num_labels]` in Burn's layout).
    pub linear: Linear<B>,
}

impl ClassifierHeadConfig {
    /// A fresh head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassifierHead<B> {
        ClassifierHead { linear: LinearConfig::new(self.d_model, self.num_labels).init(device) }
    }
}

impl<B: Backend> ClassifierHead<B> {
    /// # Shapes
    /// - pooled: `[b, d]` → `[b, num_labels]`
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(pooled)
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.linear.weight.dims()[1]
    }
}
