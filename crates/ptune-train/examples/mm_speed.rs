use burn::tensor::{Distribution, Tensor};
use ptune_transformer::FrozenOps;
use std::time::Instant;
fn run<B: FrozenOps>(name: &str) {
    let d = Default::default();
    let a = Tensor::<B, 3>::random([32, 40, 384], Distribution::Normal(0.0, 1.0), &d);
    let w = Tensor::<B, 2>::random([384, 1536], Distribution::Normal(0.0, 1.0), &d);
    // The same 1280×384×1536 product as Burn's `linear` on a 3-D input (32 batched products) and
    // as one 2-D product (what `ptune_transformer::dense` runs).
    let a2 = a.clone().reshape([1280, 384]);
    let products: [(&str, &dyn Fn() -> Tensor<B, 2>); 2] = [
        ("linear 3-D", &|| {
            burn::tensor::module::linear(a.clone(), w.clone(), None).reshape([1280, 1536])
        }),
        ("2-D matmul", &|| a2.clone().matmul(w.clone())),
    ];
    for (label, product) in products {
        for _ in 0..3 {
            let t = Instant::now();
            let _ = product().into_data();
            let e = t.elapsed();
            eprintln!(
                "{name}: {label} 1280x384x1536 {:?} = {:.1} GFLOP/s",
                e,
                2.0 * 1280.0 * 384.0 * 1536.0 / e.as_secs_f64() / 1e9
            );
        }
    }
    let x = Tensor::<B, 3>::random([32, 40, 1536], Distribution::Normal(0.0, 1.0), &d);
    let t = Instant::now();
    let _ = (x.clone() / 1.4142).erf().into_data();
    eprintln!("{name}: erf 2M {:?}", t.elapsed());
    let q = Tensor::<B, 4>::random([32, 12, 40, 32], Distribution::Normal(0.0, 1.0), &d);
    let t = Instant::now();
    let s = q.clone().matmul(q.clone().swap_dims(2, 3));
    let _ = burn::tensor::activation::softmax(s, 3).matmul(q).into_data();
    eprintln!("{name}: attention {:?}", t.elapsed());
}
fn main() {
    run::<burn::backend::Flex>("flex");
    run::<burn::backend::NdArray>("ndarray");
}
