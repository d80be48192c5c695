//! The long phases outside the training batches (linear-probe features, dev evaluation) report
//! their progress to the process's phase hook, each advancing to its total. (One test: the hook is
//! process-wide.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, NdArray};
use ptune_prompt::MethodKind;
use ptune_train::progress::{set_phase_hook, PhaseEvent};
use ptune_train::{Silent, TrainJob};

#[test]
fn probe_and_evaluation_report_their_progress() {
    let seen: Arc<Mutex<Vec<(String, usize, usize)>>> = Arc::default();
    let log = Arc::clone(&seen);
    assert!(set_phase_hook(Box::new(move |event| {
        let mut log = log.lock().unwrap();
        match event {
            PhaseEvent::Start { name, total } => log.push((name.to_string(), total, 0)),
            PhaseEvent::Advance(n) => {
                if let Some(last) = log.last_mut() {
                    last.2 += n;
                }
            }
            PhaseEvent::End => {}
        }
    })));
    let dir = std::env::temp_dir().join(format!("ptune-phases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    let rows: Vec<String> = (0..40)
        .map(|i| {
            let (w, l) = if i % 2 == 0 { ("good", "pos") } else { ("bad", "neg") };
            serde_json::json!({"text": format!("the film was {w}"), "label": l}).to_string()
        })
        .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ptune-transformer/tests/fixtures/tiny-bert");
    let mut job = TrainJob::new(model.to_str().unwrap(), data.to_str().unwrap());
    job.method = Some(MethodKind::PromptTuning);
    job.method_options.virtual_tokens = Some(2);
    job.train.epochs = 1;
    job.train.batch_size = 8;
    job.baselines = true;
    job.run::<Autodiff<NdArray>>(&dir.join("run"), false, &mut Silent).unwrap();
    let seen = seen.lock().unwrap();
    let probe = seen.iter().find(|(n, _, _)| n == "linear probe: features").expect("probe phase");
    assert_eq!((probe.1, probe.2), (32, 32), "{seen:?}"); // the 80 % train split
    let evals: Vec<_> = seen.iter().filter(|(n, _, _)| n == "classifying").collect();
    assert!(!evals.is_empty(), "{seen:?}");
    assert!(evals.iter().all(|(_, total, done)| total == done && *total > 0), "{seen:?}");
}
