//! The subcommands, generic over the backend.

use anyhow::{bail, Context, Result};
use ptune_transformer::FrozenOps;
use ptune_transformer::{check_ids, ids_tensor, load_model, Backbone, BackboneInput, LoadedModel};

use crate::backend::OnBackend;
use crate::cli::Command;

/// One subcommand (all but `compare`, which runs on several backends), on the chosen backend.
pub struct Run(pub Command);

impl OnBackend for Run {
    type Output = ();
    fn run<B: FrozenOps>(self) -> Result<()> {
        run::<B>(self.0)
    }
}

fn run<B: FrozenOps>(command: Command) -> Result<()> {
    let device = B::Device::default();
    match command {
        Command::Info { model, json } => {
            let loaded = load_model::<B>(&model, &device)
                .with_context(|| format!("loading {}", model.display()))?;
            info(&loaded, json)
        }
        Command::Encode { model, text, values } => {
            let loaded = load_model::<B>(&model, &device)?;
            let ids = tokenize(&loaded, &text)?;
            let backbone = &loaded.backbone;
            let hidden = backbone
                .forward(BackboneInput::new(backbone.embed(ids_tensor::<B>(&ids, &device))))?;
            let [_, s, d] = hidden.dims();
            let data = hidden
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("ids: {ids:?}");
            println!("last hidden state [{s}, {d}], first {} values per position:", values.min(d));
            for (pos, id) in ids.iter().enumerate() {
                let row = &data[pos * d..pos * d + values.min(d)];
                let cells: Vec<String> = row.iter().map(|v| format!("{v:+.5}")).collect();
                println!("  {pos:>3} {id:>6}  {}", cells.join(" "));
            }
            Ok(())
        }
        Command::Train(args) => crate::train::train::<burn::backend::Autodiff<B>>(args),
        Command::Eval(args) => crate::run::eval::<B>(args),
        Command::Predict(args) => crate::run::predict_texts::<B>(args),
        Command::Generate(args) => crate::run::generate_text::<B>(args),
        Command::Serve(args) => crate::serve::serve::<B>(args),
        Command::Compare(_) => bail!("`compare` runs on several backends: main dispatches it"),
        Command::Completions { .. } => bail!("`completions` needs no backend: main answers it"),
        Command::Params { model, virtual_tokens, encoder_hidden } => {
            let loaded = load_model::<B>(&model, &device)?;
            params(&loaded, virtual_tokens, encoder_hidden)
        }
        Command::Inspect { adapter, model, top } => {
            let loaded = load_model::<B>(&model, &device)?;
            inspect(&loaded, &adapter, top, &device)
        }
        Command::Complete { model, text, max_tokens } => {
            let loaded = load_model::<B>(&model, &device)?;
            let ids = tokenize(&loaded, &text)?;
            let Some(decoder) = loaded.backbone.as_decoder() else {
                bail!("`complete` needs a decoder; {} is an encoder", model.display());
            };
            let new_ids = decoder.generate_greedy(&ids, max_tokens, decoder.eos_token_id())?;
            let tokenizer = loaded.tokenizer.as_ref().context("model has no tokenizer")?;
            println!("{}{}", text, tokenizer.decode(&new_ids)?);
            Ok(())
        }
    }
}

fn tokenize<B: FrozenOps>(loaded: &LoadedModel<B>, text: &str) -> Result<Vec<u32>> {
    let tokenizer = loaded.tokenizer.as_ref().context("model has no tokenizer (tokenizer.json)")?;
    let ids = tokenizer.encode(text)?;
    if ids.is_empty() {
        bail!("the text has no tokens");
    }
    check_ids(&ids, loaded.backbone.dims().vocab_size)?;
    Ok(ids)
}

fn info<B: FrozenOps>(loaded: &LoadedModel<B>, json: bool) -> Result<()> {
    let d = loaded.backbone.dims();
    let params = loaded.backbone.num_params();
    if json {
        let value = serde_json::json!({
            "architecture": d.architecture, "layers": d.num_layers, "heads": d.num_heads,
            "kv_heads": d.num_kv_heads, "head_dim": d.head_dim, "hidden_size": d.hidden_size,
            "vocab_size": d.vocab_size, "max_positions": d.max_positions, "parameters": params,
            "weights": loaded.weights_path,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("model         {}", loaded.weights_path.display());
    println!("architecture  {}", d.architecture);
    println!("layers        {}", d.num_layers);
    println!(
        "heads         {} (KV heads {}, head dim {})",
        d.num_heads, d.num_kv_heads, d.head_dim
    );
    println!("hidden size   {}", d.hidden_size);
    println!("vocabulary    {}", d.vocab_size);
    println!("positions     {}", d.max_positions);
    println!("parameters    {} ({:.1}M)", params, params as f64 / 1e6);
    Ok(())
}

fn params<B: FrozenOps>(loaded: &LoadedModel<B>, n: usize, hidden: Option<usize>) -> Result<()> {
    use ptune_prompt::inspect::param_row;
    use ptune_prompt::p_tuning::{PTuningConfig, PTuningEncoder};
    use ptune_prompt::p_tuning_v2::PTuningV2Config;
    use ptune_prompt::prefix_tuning::PrefixTuningConfig;
    use ptune_prompt::prompt_tuning::PromptTuningConfig;
    let b = &loaded.backbone;
    let d = b.dims();
    let h_input = hidden.unwrap_or(d.hidden_size);
    let h_prefix = hidden.unwrap_or(d.kv_dim());
    let tok = loaded.tokenizer.as_ref();
    let rows = vec![
        param_row("Prompt Tuning", &PromptTuningConfig::new(n).init(b, tok)?),
        param_row(
            "P-Tuning (MLP)",
            &PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Mlp { hidden: Some(h_input) })
                .init(b, tok)?,
        ),
        param_row(
            "P-Tuning (LSTM, PEFT)",
            &PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Lstm { hidden: Some(h_input), paper: false })
                .init(b, tok)?,
        ),
        param_row(
            "P-Tuning (LSTM, paper)",
            &PTuningConfig::new(n)
                .with_encoder(PTuningEncoder::Lstm { hidden: None, paper: true })
                .init(b, tok)?,
        ),
        param_row(
            "Prefix-Tuning",
            &PrefixTuningConfig::new(n).with_projection(Some(h_prefix)).init(b, tok)?,
        ),
        param_row(
            "Prefix-Tuning (no projection)",
            &PrefixTuningConfig::new(n).with_projection(None).init(b, tok)?,
        ),
        param_row("P-Tuning v2", &PTuningV2Config::new(n).init(b, tok)?),
    ];
    println!(
        "{} ({} layers, d = {}, {} KV heads × {} = kv_dim {}), N = {n} virtual tokens\n",
        loaded.weights_path.display(),
        d.num_layers,
        d.hidden_size,
        d.num_kv_heads,
        d.head_dim,
        d.kv_dim()
    );
    println!("| method | where applied | reparameterization | trainable while training | stored for inference |");
    println!("|---|---|---|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.method, r.applied, r.reparameterization, r.trainable, r.stored
        );
    }
    println!(
        "\nclosed forms: prompt tuning N·d = {}; prefix N·layers·2·kv_dim = {}",
        n * d.hidden_size,
        n * d.num_layers * 2 * d.kv_dim()
    );
    Ok(())
}

fn inspect<B: FrozenOps>(
    loaded: &LoadedModel<B>,
    dir: &std::path::Path,
    top: usize,
    device: &B::Device,
) -> Result<()> {
    let adapter = ptune_prompt::adapter::load_adapter::<B>(dir, &loaded.backbone.dims(), device)?;
    let tokenizer = loaded.tokenizer.as_ref().context("model has no tokenizer")?;
    let nearest = ptune_prompt::inspect::nearest_tokens(&adapter.prompt, &loaded.backbone, top)?;
    println!(
        "{} ({}), nearest vocabulary tokens by cosine similarity:",
        dir.display(),
        adapter.prompt.spec.method.name()
    );
    for (i, row) in nearest.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .map(|&(id, sim)| {
                let text = tokenizer.decode(&[id]).unwrap_or_else(|_| format!("#{id}"));
                format!("{text:?} {sim:.3} (distance {:.3})", 1.0 - sim)
            })
            .collect();
        println!("  v{i:<3} {}", cells.join(", "));
    }
    Ok(())
}
