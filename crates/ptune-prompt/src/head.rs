//! PEFT's sequence-classification head for encoders (`BertForSequenceClassification.classifier`:
//! a linear layer on the pooled output), saved in adapters as `base_model.classifier.{weight,bias}`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ptune_transformer::FrozenOps;

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
    /// A fresh head (Burn's default init, from the backend's RNG).
    pub fn init<B: FrozenOps>(&self, device: &B::Device) -> ClassifierHead<B> {
        ClassifierHead { linear: LinearConfig::new(self.d_model, self.num_labels).init(device) }
    }

    /// A head drawn from `U(-1/√d, 1/√d)` by a host-side seeded stream (zero bias): the same values on
    /// every backend, for cross-backend comparisons.
    pub fn init_seeded<B: FrozenOps>(&self, seed: u64, device: &B::Device) -> ClassifierHead<B> {
        let mut next = crate::prompt_tuning::splitmix(seed);
        let k = 1.0 / (self.d_model as f64).sqrt();
        let values: Vec<f32> = (0..self.d_model * self.num_labels)
            .map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * k as f32)
            .collect();
        let mut linear = LinearConfig::new(self.d_model, self.num_labels).init::<B>(device);
        let data = burn::tensor::TensorData::new(values, [self.d_model, self.num_labels]);
        linear.weight = burn::module::Param::from_tensor(Tensor::from_data(
            data.convert::<B::FloatElem>(),
            device,
        ));
        linear.bias =
            Some(burn::module::Param::from_tensor(Tensor::zeros([self.num_labels], device)));
        ClassifierHead { linear }
    }
}

impl<B: FrozenOps> ClassifierHead<B> {
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
