//! Train a soft prompt from Rust and label new texts with the run folder it wrote.
//!
//! P-Tuning v2 on 400 Rotten Tomatoes sentences with the fetched all-MiniLM-L6-v2, one epoch on
//! the CPU, then `TextClassifier::from_run` on the run folder — the same files `ptune train`
//! writes and `ptune predict` reads.
//!
//! ```sh
//! cargo xtask fetch minilm && cargo xtask fetch rt-sentences
//! cargo run --release -p ptune-train --example train_and_predict
//! ```

use burn::backend::{Autodiff, Flex};
use ptune_prompt::MethodKind;
use ptune_train::{Silent, TextClassifier, TrainJob};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::Path::new("runs/example-train-and-predict");

    // The job: the model, the data, the method (its registry defaults: 16 virtual tokens) and
    // the loop's settings; the task (classification) follows from the data set.
    let mut job = TrainJob::new("minilm", "rt-sentences");
    job.method = Some(MethodKind::PTuningV2);
    job.train_limit = Some(400);
    job.train.epochs = 1;
    job.train.batch_size = 16;
    job.train.lr = 5e-2;
    let outcome = job.run::<Autodiff<Flex>>(out, false, &mut Silent)?;
    println!("dev accuracy {:.4}", outcome.report.summary.best_metric("accuracy"));

    // Predict from the run folder alone (inference backend, no autodiff).
    let classifier = TextClassifier::<Flex>::from_run(out)?;
    let texts = ["a gorgeous, witty, seductive movie", "a dull, lifeless and tedious mess"];
    for (text, p) in texts.iter().zip(classifier.predict(&texts)?) {
        println!("{:<10} {:.3}  {text}", p.label, p.scores[p.index]);
    }
    Ok(())
}
