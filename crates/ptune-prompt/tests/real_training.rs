//! Every method trains a few steps on the real MiniLM (classification) with the loss going down;
//! prefix init from the activations of real text. (Every method on SmolLM2 generation, through the
//! task code on real E2E data: `ptune-train/tests/real_tasks.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "fetched-models")]

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ptune_prompt::p_tuning::{PTuningConfig, PTuningEncoder};
use ptune_prompt::p_tuning_v2::PTuningV2Config;
use ptune_prompt::prefix_tuning::{PrefixInit, PrefixTuningConfig};
use ptune_prompt::prompt_tuning::{PromptInit, PromptTuningConfig};
use ptune_prompt::{ClassifierHead, ClassifierHeadConfig, SoftPrompt};
use ptune_transformer::FrozenOps;
use ptune_transformer::{
    load_model, AnyBackbone, Backbone, BackboneInput, LoadedModel, TextTokenizer,
};

type AD = Autodiff<Flex>;

/// The backend RNG is global: these tests draw inits and dropout from it, so they run one at a
/// time to stay reproducible.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fetched(name: &str) -> std::path::PathBuf {
    let cache =
        std::env::var_os("PTUNE_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/ptune")
        });
    cache.join("models").join(name)
}

#[derive(Module, Debug)]
struct Trainable<B: Backend> {
    prompt: SoftPrompt<B>,
    head: Option<ClassifierHead<B>>,
}

fn methods<B: FrozenOps>(
    b: &AnyBackbone<B>,
    tok: &TextTokenizer,
    n: usize,
) -> Vec<(&'static str, SoftPrompt<B>)> {
    let t = Some(tok);
    vec![
        (
            "prompt-tuning",
            PromptTuningConfig::new(n)
                .with_init(PromptInit::Text("positive or negative review".into()))
                .init(b, t)
                .unwrap(),
        ),
        (
            "p-tuning-mlp",
            PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Mlp { hidden: Some(64) })
                .init(b, t)
                .unwrap(),
        ),
        (
            "p-tuning-lstm",
            PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Lstm { hidden: Some(32), paper: false })
                .init(b, t)
                .unwrap(),
        ),
        ("prefix-tuning", PrefixTuningConfig::new(n).with_projection(Some(64)).init(b, t).unwrap()),
        (
            "p-tuning-v2",
            PTuningV2Config::new(n)
                .with_init(PrefixInit::Text("Describe the restaurant in one sentence".into()))
                .init(b, t)
                .unwrap(),
        ),
    ]
}

fn ce<B: FrozenOps>(logits: Tensor<B, 2>, targets: Vec<i64>) -> Tensor<B, 1> {
    let n = targets.len();
    let t = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &logits.device());
    log_softmax(logits, 1).gather(1, t).mean().neg()
}

fn train<F: Fn(&Trainable<AD>) -> Tensor<AD, 1>>(
    mut t: Trainable<AD>,
    steps: usize,
    lr: f64,
    loss: F,
) -> (f64, f64) {
    let mut optim = AdamWConfig::new().init::<AD, Trainable<AD>>();
    let mut first = f64::NAN;
    let mut last = f64::NAN;
    for i in 0..steps {
        let l = loss(&t);
        let value: f64 = l.clone().into_scalar().into();
        if i == 0 {
            first = value;
        }
        last = value;
        let grads = GradientsParams::from_grads(l.backward(), &t);
        t = optim.step(lr, t, grads);
    }
    (first, last)
}

#[test]
fn every_method_trains_on_minilm() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    AD::seed(&device, 1);
    let LoadedModel { backbone, tokenizer, .. } =
        load_model::<AD>(&fetched("minilm"), &device).unwrap();
    let tok = tokenizer.unwrap();
    let bert = backbone.as_encoder().expect("an encoder");
    let texts = [
        ("a moving, beautifully acted film", 1),
        ("dull and lifeless from start to finish", 0),
        ("the best thing I have seen all year", 1),
        ("a tedious, overlong mess", 0),
        ("funny, warm and wise", 1),
        ("I wanted my two hours back", 0),
    ];
    let rows: Vec<Vec<u32>> = texts.iter().map(|(t, _)| tok.encode(t).unwrap()).collect();
    let labels: Vec<i64> = texts.iter().map(|&(_, l)| l).collect();
    for (name, prompt) in methods(&backbone, &tok, 8) {
        let head = ClassifierHeadConfig::new(384, 2).init(&device);
        let (first, last) = train(Trainable { prompt, head: Some(head) }, 12, 1e-2, |t| {
            let batch = t.prompt.prepare(&backbone, &rows).unwrap();
            let pooled = bert.pooler(backbone.forward(batch.input).unwrap()).unwrap();
            ce(t.head.as_ref().unwrap().forward(pooled), labels.clone())
        });
        eprintln!("minilm {name}: loss {first:.4} → {last:.4}");
        assert!(last < first * 0.85, "minilm {name}: loss {first} → {last}");
    }
}

#[test]
fn prefix_from_real_text_holds_the_models_own_keys_and_values() {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let LoadedModel { backbone, tokenizer, .. } =
        load_model::<Flex>(&fetched("smollm2"), &device).unwrap();
    let tok = tokenizer.unwrap();
    let text = "Write a short description of a restaurant";
    let prefix = PrefixTuningConfig::new(4)
        .with_projection(None)
        .with_init(PrefixInit::Text(text.into()))
        .init(&backbone, Some(&tok))
        .unwrap();
    let ids = tok.encode_plain(text).unwrap();
    let id_tensor = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(ids[..4].iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, 4]),
        &device,
    );
    let kv = backbone.key_values(BackboneInput::new(backbone.embed(id_tensor))).unwrap();
    let dims = backbone.dims();
    let table = prefix.encoder.forward();
    // Row 1, layer 2 keys: the key of the second token at layer 2.
    let kv_dim = dims.kv_dim();
    let ours = table.narrow(0, 1, 1).narrow(1, 2 * 2 * kv_dim, kv_dim).reshape([kv_dim]);
    let expected = kv[2].0.clone().narrow(2, 1, 1).swap_dims(1, 2).reshape([kv_dim]);
    let diff: f32 = (ours - expected).abs().max().into_scalar();
    assert!(diff < 1e-5, "{diff}");
}
