//! Adapter files in PEFT's format, both ways:
//!
//! - `adapter_config.json`: PEFT's fields (`peft_type`, `task_type`, `num_virtual_tokens`, `token_dim`,
//!   `num_layers`, `num_attention_heads` (KV heads for prefixes, as PEFT does for GQA), encoder fields …);
//! - `adapter_model.safetensors`: `prompt_embeddings` — the materialized table, `[N, d]` or
//!   `[N, layers·2·kv_dim]` — plus the task head under PEFT's names (`base_model.classifier.*`);
//! - `ptune_spec.json` (ptune only; PEFT never reads it): placement template and layer selection.
//!
//! [`load_peft_encoder`] reads a PEFT prompt encoder's own weights (`embedding`, `mlp_head`,
//! `lstm_head`, `transform`) into ptune's encoders. Files are written atomically (temp + rename).

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use ptune_transformer::FrozenOps;
use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ptune_reparam::{LstmEncoder, PromptTable, Reparam};
use ptune_transformer::BackboneDims;
use safetensors::{Dtype, SafeTensors};

use crate::error::{adapter_err, PromptError, Result};
use crate::head::ClassifierHead;
use crate::soft_prompt::SoftPrompt;
use crate::spec::{Placement, PromptSpec};

pub use crate::peft_config::{PeftConfig, CAUSAL_LM, SEQ_CLS, TOKEN_CLS};

/// A loaded adapter: the materialized prompt and the task head, if any.
#[derive(Debug)]
pub struct Adapter<B: Backend> {
    /// The prompt (a plain table: the encoder is not part of an adapter).
    pub prompt: SoftPrompt<B>,
    /// The classification head (`base_model.classifier.*`), if saved.
    pub head: Option<ClassifierHead<B>>,
    /// PEFT's `task_type`.
    pub task_type: String,
    /// PEFT's `base_model_name_or_path`.
    pub base_model: String,
}

pub use crate::files::write_atomic;

///
/// # Shapes
/// - t: any shape → (its shape, its values in row-major order)
fn host<B: FrozenOps, const D: usize>(t: Tensor<B, D>) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| PromptError::Config(format!("{e:?}")))?;
    Ok((shape, data))
}

/// Serializes named f32 tensors to safetensors bytes.
pub fn safetensors_bytes(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| PromptError::Config(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| PromptError::Config(e.to_string()))
}

/// A tensor on the host: its shape and its values in row-major order.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// Reads every tensor of a safetensors file as f32 (stored as F32, F16 or BF16, as PEFT saves
/// adapters of half-precision models); a NaN or infinite value is an error naming the tensor and
/// the index.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| adapter_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| adapter_err(path, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = ptune_transformer::loader::safetensors::decode(view.dtype(), view.data())
            .ok_or_else(|| {
                adapter_err(
                    path,
                    format!("tensor `{name}` is {:?}, expected F32, F16 or BF16", view.dtype()),
                )
            })?;
        if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(adapter_err(
                path,
                format!("tensor `{name}` has a non-finite value ({v}) at flat index {i}"),
            ));
        }
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Saves `prompt` (materialized) and `head` as a PEFT adapter: the folder `dir` is replaced as a
/// whole (with a `checksums.sha256` that [`load_adapter`] checks), so a kill while saving leaves
/// the previous adapter.
pub fn save_adapter<B: FrozenOps>(
    dir: &Path,
    prompt: &SoftPrompt<B>,
    head: Option<&ClassifierHead<B>>,
    dims: &BackboneDims,
    task_type: &str,
    base_model: &str,
) -> Result<()> {
    let spec = &prompt.spec;
    // A prefix on a subset of layers is saved with that subset's width; ptune reads the layer list
    // from ptune_spec.json, PEFT (whose prompt_embeddings always covers every layer) cannot load it.
    let (shape, data) = host(prompt.encoder.forward().detach())?;
    let mut tensors = vec![("prompt_embeddings".to_string(), shape, data)];
    if let Some(head) = head {
        let (shape, data) = host(head.linear.weight.val().transpose())?;
        tensors.push(("base_model.classifier.weight".into(), shape, data));
        if let Some(bias) = &head.linear.bias {
            let (shape, data) = host(bias.val())?;
            tensors.push(("base_model.classifier.bias".into(), shape, data));
        }
    }
    let weights = safetensors_bytes(tensors)?;
    let config = PeftConfig::for_spec(spec, dims, task_type, base_model);
    let config_text = serde_json::to_string_pretty(&config).map_err(|e| adapter_err(dir, e))?;
    let spec_text = serde_json::to_string_pretty(spec).map_err(|e| adapter_err(dir, e))?;
    // The folder is replaced as a whole: a reader sees the previous adapter or this one.
    crate::files::replace_dir(dir, |tmp| {
        write_atomic(&tmp.join("adapter_model.safetensors"), &weights)?;
        write_atomic(&tmp.join("adapter_config.json"), config_text.as_bytes())?;
        write_atomic(&tmp.join("ptune_spec.json"), spec_text.as_bytes())
    })
}

/// Loads a PEFT (or ptune) adapter from `dir` for a backbone of shape `dims`.
pub fn load_adapter<B: FrozenOps>(
    dir: &Path,
    dims: &BackboneDims,
    device: &B::Device,
) -> Result<Adapter<B>> {
    crate::files::recover_dir(dir)?;
    crate::files::verify_dir(dir)?;
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| adapter_err(&config_path, e))?;
    let config: PeftConfig =
        serde_json::from_str(&text).map_err(|e| adapter_err(&config_path, e))?;
    let p = config_path.as_path();
    let task_type = config.task_type.clone();
    let base_model = config.base_model_name_or_path.clone().unwrap_or_default();
    let n = config.num_virtual_tokens;
    let num_layers = config.num_layers;
    let spec_path = dir.join("ptune_spec.json");
    let spec: PromptSpec = if spec_path.is_file() {
        let t = std::fs::read_to_string(&spec_path).map_err(|e| adapter_err(&spec_path, e))?;
        serde_json::from_str(&t).map_err(|e| adapter_err(&spec_path, e))?
    } else {
        let (method, encoder) = config.method_and_encoder().map_err(|m| adapter_err(p, m))?;
        PromptSpec {
            method,
            num_virtual_tokens: n,
            token_dim: dims.hidden_size,
            placement: Placement::Prepend,
            layers: if method.is_input_level() { Vec::new() } else { (0..num_layers).collect() },
            prefix_dropout: 0.0,
            encoder,
        }
    };
    let prefix = !spec.method.is_input_level();
    let (expected_dim, expected_heads) = if prefix {
        (dims.kv_dim(), dims.num_kv_heads)
    } else {
        (dims.hidden_size, dims.num_heads)
    };
    let (token_dim, heads) = (config.token_dim, config.num_attention_heads);
    if token_dim.is_some_and(|t| t != expected_dim) || heads.is_some_and(|h| h != expected_heads) {
        return Err(adapter_err(
            p,
            format!(
                "made for token_dim {token_dim:?} / {heads:?} heads, the model has {expected_dim} / {expected_heads}"
            ),
        ));
    }
    if num_layers != dims.num_layers || spec.token_dim != dims.hidden_size {
        return Err(adapter_err(
            p,
            format!(
                "made for {num_layers} layers / hidden {}, the model has {} / {}",
                spec.token_dim, dims.num_layers, dims.hidden_size
            ),
        ));
    }
    let weights_path = dir.join("adapter_model.safetensors");
    let tensors = read_safetensors(&weights_path)?;
    let (shape, data) = tensors
        .get("prompt_embeddings")
        .ok_or_else(|| adapter_err(&weights_path, "no `prompt_embeddings` tensor"))?;
    let width = if spec.method.is_input_level() {
        dims.hidden_size
    } else {
        crate::wiring::prefix_width(dims, spec.layers.len())
    };
    if shape != &[n, width] {
        return Err(adapter_err(
            &weights_path,
            format!(
                "prompt_embeddings has shape {shape:?}, expected [{n}, {width}] for this model"
            ),
        ));
    }
    let table = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [n, width]), device);
    let prompt = SoftPrompt::new(Reparam::Table(PromptTable::from_tensor(table)), spec)?;
    let head = match tensors.get("base_model.classifier.weight") {
        None => None,
        Some((shape, data)) => {
            let [labels, d] = shape.as_slice() else {
                return Err(adapter_err(
                    &weights_path,
                    format!("classifier weight has shape {shape:?}"),
                ));
            };
            let bias = tensors.get("base_model.classifier.bias").map(|(_, b)| b.clone());
            Some(ClassifierHead {
                linear: linear_from_torch(data, *d, *labels, bias.as_deref(), device)?,
            })
        }
    };
    Ok(Adapter { prompt, head, task_type, base_model })
}

/// A Burn `Linear` from a PyTorch `[out, in]` weight (+ bias).
fn linear_from_torch<B: FrozenOps>(
    weight: &[f32],
    d_in: usize,
    d_out: usize,
    bias: Option<&[f32]>,
    device: &B::Device,
) -> Result<Linear<B>> {
    if weight.len() != d_in * d_out || bias.is_some_and(|b| b.len() != d_out) {
        return Err(PromptError::Config(format!("linear weights do not fit [{d_out}, {d_in}]")));
    }
    let mut linear = LinearConfig::new(d_in, d_out).with_bias(bias.is_some()).init::<B>(device);
    let w = Tensor::<B, 2>::from_data(TensorData::new(weight.to_vec(), [d_out, d_in]), device)
        .transpose();
    linear.weight = Param::from_tensor(w);
    linear.bias = bias.map(|b| {
        Param::from_tensor(Tensor::from_data(TensorData::new(b.to_vec(), [d_out]), device))
    });
    Ok(linear)
}

/// Reads the weights of a PEFT prompt encoder (`prompt_encoder.default.state_dict()` saved as
/// safetensors) into `encoder`, whose shapes must match.
pub fn load_peft_encoder<B: FrozenOps>(encoder: Reparam<B>, path: &Path) -> Result<Reparam<B>> {
    let t = read_safetensors(path)?;
    let device = match &encoder {
        Reparam::Table(m) => m.weight.device(),
        Reparam::Mlp(m) => m.embedding.weight.device(),
        Reparam::Lstm(m) => m.embedding.weight.device(),
        Reparam::PrefixMlp(m) => m.embedding.weight.device(),
    };
    let get = |name: &str| -> Result<&(Vec<usize>, Vec<f32>)> {
        t.get(name).ok_or_else(|| adapter_err(path, format!("missing `{name}`")))
    };
    let tensor2 = |name: &str| -> Result<Tensor<B, 2>> {
        let (shape, data) = get(name)?;
        let [a, b] = shape.as_slice() else {
            return Err(adapter_err(path, format!("`{name}` is not 2-D")));
        };
        Ok(Tensor::from_data(TensorData::new(data.clone(), [*a, *b]), &device))
    };
    let linear = |prefix: &str| -> Result<Linear<B>> {
        let (shape, w) = get(&format!("{prefix}.weight"))?;
        let [out, inp] = shape.as_slice() else {
            return Err(adapter_err(path, format!("`{prefix}` is not 2-D")));
        };
        let bias = get(&format!("{prefix}.bias")).ok().map(|(_, b)| b.as_slice());
        linear_from_torch(w, *inp, *out, bias, &device)
    };
    Ok(match encoder {
        Reparam::Table(_) => Reparam::Table(PromptTable::from_tensor(tensor2("embedding.weight")?)),
        Reparam::Mlp(mut m) => {
            m.embedding.weight = Param::from_tensor(tensor2("embedding.weight")?);
            m.layers = vec![linear("mlp_head.0")?, linear("mlp_head.2")?, linear("mlp_head.4")?];
            Reparam::Mlp(m)
        }
        Reparam::PrefixMlp(mut m) => {
            m.embedding.weight = Param::from_tensor(tensor2("embedding.weight")?);
            m.up = linear("transform.0")?;
            m.down = linear("transform.2")?;
            Reparam::PrefixMlp(m)
        }
        Reparam::Lstm(mut m) => {
            m.embedding.weight = Param::from_tensor(tensor2("embedding.weight")?);
            load_torch_lstm(&mut m, &get, &device, path)?;
            m.head_up = linear("mlp_head.0")?;
            m.head_out = linear("mlp_head.2")?;
            Reparam::Lstm(m)
        }
    })
}

/// PyTorch `nn.LSTM(bidirectional=True)` weights (`weight_ih_l{k}[_reverse]` `[4H, in]`, gate rows
/// in the order input, forget, cell, output) into Burn's per-gate `BiLstm` layers.
fn load_torch_lstm<'a, B: FrozenOps>(
    m: &mut LstmEncoder<B>,
    get: &dyn Fn(&str) -> Result<&'a HostTensor>,
    device: &B::Device,
    path: &Path,
) -> Result<()> {
    for (k, layer) in m.lstm.iter_mut().enumerate() {
        for (suffix, lstm) in [("", &mut layer.forward), ("_reverse", &mut layer.reverse)] {
            let (w_ih_shape, w_ih) = get(&format!("lstm_head.weight_ih_l{k}{suffix}"))?;
            let (_, w_hh) = get(&format!("lstm_head.weight_hh_l{k}{suffix}"))?;
            let (_, b_ih) = get(&format!("lstm_head.bias_ih_l{k}{suffix}"))?;
            let (_, b_hh) = get(&format!("lstm_head.bias_hh_l{k}{suffix}"))?;
            let [four_h, d_in] = w_ih_shape.as_slice() else {
                return Err(adapter_err(path, "LSTM weight is not 2-D"));
            };
            let h = four_h / 4;
            let gates = [
                &mut lstm.input_gate,
                &mut lstm.forget_gate,
                &mut lstm.cell_gate,
                &mut lstm.output_gate,
            ];
            for (g, gate) in gates.into_iter().enumerate() {
                let rows = g * h..(g + 1) * h;
                let part = |v: &'a [f32], range: std::ops::Range<usize>, what: &str| {
                    v.get(range).ok_or_else(|| {
                        adapter_err(path, format!("LSTM {what} of layer {k}{suffix} is too short"))
                    })
                };
                gate.input_transform = linear_from_torch(
                    part(w_ih, rows.start * d_in..rows.end * d_in, "input weight")?,
                    *d_in,
                    h,
                    Some(part(b_ih, rows.clone(), "input bias")?),
                    device,
                )?;
                gate.hidden_transform = linear_from_torch(
                    part(w_hh, rows.start * h..rows.end * h, "hidden weight")?,
                    h,
                    h,
                    Some(part(b_hh, rows, "hidden bias")?),
                    device,
                )?;
            }
        }
    }
    Ok(())
}
