//! Criterion benches: the forward pass and the training step of every method on the real MiniLM
//! (32 × 128) and SmolLM2 (8 × 128), per CPU backend — the workload of `ptune_benches` (and of the
//! PEFT peer script). Each iteration takes seconds on a 2-core CPU, so samples are few (criterion's
//! minimum of 10). Select with criterion's filter, e.g. `cargo bench -p ptune-benches -- minilm/flex`.
//! Models must be fetched (`cargo xtask fetch minilm smollm2`).

#![allow(clippy::expect_used)]

use burn::tensor::backend::AutodiffBackend;
use criterion::{criterion_group, criterion_main, Criterion};
use ptune_benches::{Workload, METHODS, MODELS};
use ptune_transformer::FrozenOps;

fn bench_backend<B: AutodiffBackend + FrozenOps>(c: &mut Criterion, backend: &str) {
    for model in MODELS {
        let mut group = c.benchmark_group(format!("{model}/{backend}"));
        group.sample_size(10);
        group.sampling_mode(criterion::SamplingMode::Flat);
        for method in METHODS {
            let mut w = Workload::<B>::new(model, method).expect(
                "the workload loads (fetch the models first: cargo xtask fetch minilm smollm2)",
            );
            group.bench_function(format!("{method}/forward"), |b| {
                b.iter(|| w.forward().expect("forward"))
            });
            let mut optim = w.optimizer();
            group.bench_function(format!("{method}/train-step"), |b| {
                b.iter(|| w.train_step(&mut optim).expect("train step"))
            });
        }
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "flex")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Flex>>(c, "flex");
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::Autodiff<burn::backend::NdArray>>(c, "ndarray");
}

criterion_group!(methods, benches);
criterion_main!(methods);
