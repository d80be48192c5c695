use burn::tensor::{backend::Backend, Distribution, Tensor};
use std::time::Instant;
fn run<B: Backend>(name: &str) {
    let d = Default::default();
    let a = Tensor::<B, 3>::random([32, 40, 384], Distribution::Normal(0.0, 1.0), &d);
    let w = Tensor::<B, 2>::random([384, 1536], Distribution::Normal(0.0, 1.0), &d);
    for _ in 0..3 {
        let t = Instant::now();
        let y = burn::tensor::module::linear(a.clone(), w.clone(), None);
        let _ = y.into_data();
        let e = t.elapsed();
        eprintln!(
            "{name}: linear 1280x384x1536 {:?} = {:.1} GFLOP/s",
            e,
            2.0 * 1280.0 * 384.0 * 1536.0 / e.as_secs_f64() / 1e9
        );
    }
    let a2 = a.clone().reshape([1280, 384]);
    for _ in 0..3 {
        let t = Instant::now();
        let y = a2.clone().matmul(w.clone());
        let _ = y.into_data();
        let e = t.elapsed();
        eprintln!(
            "{name}: 2d matmul 1280x384x1536 {:?} = {:.1} GFLOP/s",
            e,
            2.0 * 1280.0 * 384.0 * 1536.0 / e.as_secs_f64() / 1e9
        );
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
