//! The subcommands, generic over the backend.

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ptune_transformer::{check_ids, load_model, AnyBackbone, Backbone, BackboneInput, LoadedModel};

use crate::Command;

pub fn run<B: Backend>(command: Command) -> Result<()> {
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
        Command::Complete { model, text, max_tokens } => {
            let loaded = load_model::<B>(&model, &device)?;
            let ids = tokenize(&loaded, &text)?;
            let AnyBackbone::Llama(llama) = &loaded.backbone else {
                bail!("`complete` needs a decoder; {} is an encoder", model.display());
            };
            let eos = llama.config.eos_token_id.map(|e| e as u32);
            let new_ids = llama.generate_greedy(&ids, max_tokens, eos)?;
            let tokenizer = loaded.tokenizer.as_ref().context("model has no tokenizer")?;
            println!("{}{}", text, tokenizer.decode(&new_ids)?);
            Ok(())
        }
    }
}

fn tokenize<B: Backend>(loaded: &LoadedModel<B>, text: &str) -> Result<Vec<u32>> {
    let tokenizer = loaded.tokenizer.as_ref().context("model has no tokenizer (tokenizer.json)")?;
    let ids = tokenizer.encode(text)?;
    if ids.is_empty() {
        bail!("the text has no tokens");
    }
    check_ids(&ids, loaded.backbone.dims().vocab_size)?;
    Ok(ids)
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn info<B: Backend>(loaded: &LoadedModel<B>, json: bool) -> Result<()> {
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
