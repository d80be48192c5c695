//! GGUF v3 (llama.cpp) reader for Llama-family models: metadata → [`LlamaConfig`], tensors
//! dequantized to f32 (F32, F16, Q4_0, Q4_1, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K), served under their **HF names** with llama.cpp's
//! Q/K row permutation undone, so the Llama loader reads GGUF and safetensors alike.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Every read is bounds-checked:
//! a truncated or corrupt file gives [`TransformerError::CorruptWeights`], never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{read_file, HostTensor, TensorSource};
use crate::config::LlamaConfig;
use crate::error::{Result, TransformerError};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    fn as_usize(&self) -> Option<usize> {
        match self {
            GgufValue::U64(v) => usize::try_from(*v).ok(),
            GgufValue::I64(v) => usize::try_from(*v).ok(),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match self {
            GgufValue::F64(v) => Some(*v),
            GgufValue::U64(v) => Some(*v as f64),
            GgufValue::I64(v) => Some(*v as f64),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml tensor types this reader dequantizes (named as ggml names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 32 weights in 18 bytes: f16 scale, 16 bytes of 4-bit values offset by 8.
    Q4_0,
    /// 32 weights in 20 bytes: f16 scale, f16 min, 16 bytes of 4-bit values.
    Q4_1,
    /// 32 weights in 34 bytes: f16 scale, 32 signed bytes.
    Q8_0,
    /// 256 weights in 144 bytes: f16 scale and min, 8 sub-blocks with 6-bit scales and mins,
    /// 4-bit values.
    Q4_K,
    /// 256 weights in 176 bytes: as Q4_K plus a fifth bit per value.
    Q5_K,
    /// 256 weights in 210 bytes: 6-bit values (4 low bits + 2 high bits), 16 signed 8-bit
    /// sub-block scales, f16 scale.
    Q6_K,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            _ => return None,
        })
    }
    /// (weights per block, bytes per block).
    fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
        }
    }
}

#[derive(Debug, Clone)]
struct TensorInfo {
    /// ggml order: `ne[0]` is the fastest-varying (the input features of a matrix).
    ne: Vec<usize>,
    type_id: u32,
    offset: usize,
}

/// A parsed GGUF file held in memory.
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: HashMap<String, GgufValue>,
    tensors: HashMap<String, TensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!(
                "truncated: needs {n} bytes at offset {}, file has {}",
                self.pos,
                self.bytes.len()
            )
        })?;
        let s = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|e| e.to_string())
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(format!("length {n} at offset {} exceeds the file", self.pos));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn value(&mut self, type_id: u32, depth: usize) -> std::result::Result<GgufValue, String> {
        Ok(match type_id {
            0 => GgufValue::U64(self.array::<1>()?[0] as u64),
            1 => GgufValue::I64(self.array::<1>()?[0] as i8 as i64),
            2 => GgufValue::U64(u16::from_le_bytes(self.array()?) as u64),
            3 => GgufValue::I64(i16::from_le_bytes(self.array()?) as i64),
            4 => GgufValue::U64(self.u32()? as u64),
            5 => GgufValue::I64(i32::from_le_bytes(self.array()?) as i64),
            6 => GgufValue::F64(f32::from_le_bytes(self.array()?) as f64),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let inner = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF v2/v3 file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF bytes; `path` names the file in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let corrupt = |message: String| TransformerError::CorruptWeights {
            path: path.to_path_buf(),
            message,
        };
        let (metadata, tensors, data_start) = Self::parse_header(&bytes).map_err(corrupt)?;
        let file = Self { path: path.to_path_buf(), bytes, metadata, tensors, data_start };
        // Check every tensor's extent now, so later reads cannot run off the end.
        for (name, info) in &file.tensors {
            let end = file
                .extent(info)
                .map(|(_, end)| end)
                .map_err(|m| corrupt(format!("{name}: {m}")))?;
            if end > file.bytes.len() {
                return Err(corrupt(format!(
                    "truncated: tensor `{name}` ends at byte {end}, file has {}",
                    file.bytes.len()
                )));
            }
        }
        Ok(file)
    }

    #[allow(clippy::type_complexity)]
    fn parse_header(
        bytes: &[u8],
    ) -> std::result::Result<(HashMap<String, GgufValue>, HashMap<String, TensorInfo>, usize), String>
    {
        let mut c = Cursor { bytes, pos: 0 };
        if c.take(4).map_err(|_| "not a GGUF file (too short)".to_string())? != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} unsupported (2 or 3)"));
        }
        let n_tensors = c.len()?;
        let n_kv = c.len()?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let t = c.u32()?;
            let value = c.value(t, 0).map_err(|e| format!("metadata `{key}`: {e}"))?;
            metadata.insert(key, value);
        }
        let mut tensors = HashMap::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(format!("tensor `{name}` has {n_dims} dimensions"));
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(usize::try_from(c.u64()?).map_err(|_| "dimension overflows".to_string())?);
            }
            let type_id = c.u32()?;
            let offset = usize::try_from(c.u64()?).map_err(|_| "offset overflows".to_string())?;
            tensors.insert(name, TensorInfo { ne, type_id, offset });
        }
        let alignment =
            metadata.get("general.alignment").and_then(GgufValue::as_usize).unwrap_or(32);
        if alignment == 0 {
            return Err("general.alignment is 0".into());
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        Ok((metadata, tensors, data_start))
    }

    /// (start, end) byte range of a tensor's data.
    fn extent(&self, info: &TensorInfo) -> std::result::Result<(usize, usize), String> {
        let count = info
            .ne
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .ok_or("element count overflows")?;
        let Some(ty) = GgmlType::from_id(info.type_id) else {
            return Ok((0, 0)); // unsupported types are reported when read, not at open
        };
        let (per_block, block_bytes) = ty.block();
        if count % per_block != 0 {
            return Err(format!(
                "{count} elements is not a multiple of the block size {per_block}"
            ));
        }
        let start = self.data_start.checked_add(info.offset).ok_or("offset overflows")?;
        let bytes = (count / per_block).checked_mul(block_bytes).ok_or("size overflows")?;
        let end = start.checked_add(bytes).ok_or("size overflows")?;
        Ok((start, end))
    }

    /// Metadata of the file.
    pub fn metadata(&self) -> &HashMap<String, GgufValue> {
        &self.metadata
    }

    /// Names of every tensor (GGUF naming).
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    fn meta_err(&self, message: String) -> TransformerError {
        TransformerError::Config { origin: self.path.display().to_string(), message }
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        self.metadata
            .get(key)
            .and_then(GgufValue::as_usize)
            .ok_or_else(|| self.meta_err(format!("metadata `{key}` missing or not an integer")))
    }

    fn meta_str_array(&self, key: &str) -> Result<Vec<String>> {
        match self.metadata.get(key) {
            Some(GgufValue::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    self.meta_err(format!("metadata `{key}` is not an array of strings"))
                }),
            _ => Err(self.meta_err(format!("metadata `{key}` missing"))),
        }
    }

    /// The Llama config described by the metadata (`general.architecture` must be `llama`).
    ///
    /// Every `llama.*` key must be one this reader understands ([`LLAMA_KEYS`]): a key that would
    /// change the computation (expert counts, sliding windows, other RoPE kinds) is an error, never
    /// ignored. Linear RoPE scaling is read; Llama-3 frequency factors (`rope_freqs.weight`) are
    /// refused.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self
            .metadata
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| self.meta_err("metadata `general.architecture` missing".into()))?;
        if arch != "llama" {
            return Err(TransformerError::UnknownArchitecture(arch.into()));
        }
        let mut keys: Vec<&String> = self.metadata.keys().collect();
        keys.sort();
        for key in keys {
            if key.strip_prefix("llama.").is_some_and(|k| !LLAMA_KEYS.contains(&k)) {
                return Err(self.meta_err(format!(
                    "metadata `{key}` is not supported (ptune reads llama.{})",
                    LLAMA_KEYS.join(", llama.")
                )));
            }
        }
        if self.tensors.contains_key("rope_freqs.weight") {
            return Err(self.meta_err(
                "RoPE frequency factors (`rope_freqs.weight`, Llama 3.1 rope scaling) are not \
                 supported in GGUF files: load the HF safetensors folder instead"
                    .into(),
            ));
        }
        let rope_scaling = match self.metadata.get("llama.rope.scaling.type").map(|v| v.as_str()) {
            None | Some(Some("none")) => None,
            Some(Some("linear")) => {
                let factor = self
                    .metadata
                    .get("llama.rope.scaling.factor")
                    .and_then(GgufValue::as_f64)
                    .ok_or_else(|| {
                        self.meta_err(
                            "linear RoPE scaling without `llama.rope.scaling.factor`".into(),
                        )
                    })?;
                Some(serde_json::json!({"rope_type": "linear", "factor": factor}))
            }
            Some(other) => {
                return Err(
                    self.meta_err(format!("RoPE scaling {other:?} is not supported (only linear)"))
                )
            }
        };
        let heads = self.meta_usize("llama.attention.head_count")?;
        let hidden = self.meta_usize("llama.embedding_length")?;
        let vocab = match self.meta_usize("llama.vocab_size") {
            Ok(v) => v,
            Err(_) => self.meta_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let f = |key: &str, default: f64| {
            self.metadata.get(key).and_then(GgufValue::as_f64).unwrap_or(default)
        };
        let head_dim =
            self.meta_usize("llama.rope.dimension_count").unwrap_or(hidden / heads.max(1));
        for key in ["llama.attention.key_length", "llama.attention.value_length"] {
            if let Ok(n) = self.meta_usize(key) {
                if n != head_dim {
                    return Err(self.meta_err(format!(
                        "metadata `{key}` = {n} differs from the head width {head_dim} (unsupported)"
                    )));
                }
            }
        }
        let config = LlamaConfig {
            model_type: "llama".into(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.meta_usize("llama.feed_forward_length")?,
            num_hidden_layers: self.meta_usize("llama.block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: Some(
                self.meta_usize("llama.attention.head_count_kv").unwrap_or(heads),
            ),
            head_dim: Some(head_dim),
            hidden_act: "silu".into(),
            max_position_embeddings: self.meta_usize("llama.context_length")?,
            rms_norm_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: f("llama.rope.freq_base", 10000.0),
            rope_scaling,
            tie_word_embeddings: !self.tensors.contains_key("output.weight"),
            attention_bias: false,
            mlp_bias: false,
            use_sliding_window: false,
            bos_token_id: self.meta_usize("tokenizer.ggml.bos_token_id").ok(),
            eos_token_id: self.meta_usize("tokenizer.ggml.eos_token_id").ok(),
        };
        crate::config::ModelConfig::Llama(config.clone())
            .validate()
            .map_err(|m| self.meta_err(m))?;
        Ok(config)
    }

    /// A boolean metadata value (`false` when absent).
    pub fn meta_bool(&self, key: &str) -> Result<bool> {
        match self.metadata.get(key) {
            None => Ok(false),
            Some(GgufValue::Bool(b)) => Ok(*b),
            Some(other) => Err(self.meta_err(format!("metadata `{key}` is {other:?}, not a bool"))),
        }
    }

    /// A string metadata value, if present.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(GgufValue::as_str)
    }

    /// The embedded BPE vocabulary (`tokenizer.ggml.tokens`) and merges (`tokenizer.ggml.merges`),
    /// after checking the tokenizer metadata: the model must be byte-level BPE (`gpt2`), the
    /// pre-tokenizer one of [`PRE_TOKENIZERS`], `add_space_prefix` off, and every
    /// `tokenizer.ggml.*` key one of [`TOKENIZER_KEYS`].
    pub fn bpe_vocab_and_merges(&self) -> Result<(Vec<String>, Vec<String>)> {
        let tok_err =
            |m: String| TransformerError::Tokenizer(format!("{}: {m}", self.path.display()));
        let model = self.meta_str("tokenizer.ggml.model");
        if model != Some("gpt2") {
            return Err(tok_err(format!(
                "GGUF tokenizer model {model:?} unsupported (only byte-level BPE `gpt2`)"
            )));
        }
        let mut keys: Vec<&String> = self.metadata.keys().collect();
        keys.sort();
        for key in keys {
            if key.strip_prefix("tokenizer.ggml.").is_some_and(|k| !TOKENIZER_KEYS.contains(&k)) {
                return Err(tok_err(format!("metadata `{key}` is not supported")));
            }
        }
        match self.meta_str("tokenizer.ggml.pre") {
            Some(pre) if PRE_TOKENIZERS.contains(&pre) => {}
            other => {
                return Err(tok_err(format!(
                "pre-tokenizer `tokenizer.ggml.pre` = {other:?} is not supported (supported: {}); \
                     load the model's HF folder with its tokenizer.json instead",
                PRE_TOKENIZERS.join(", ")
            )))
            }
        }
        if self.meta_bool("tokenizer.ggml.add_space_prefix")? {
            return Err(tok_err("`tokenizer.ggml.add_space_prefix` is not supported".into()));
        }
        Ok((
            self.meta_str_array("tokenizer.ggml.tokens")?,
            self.meta_str_array("tokenizer.ggml.merges")?,
        ))
    }

    /// Dequantizes a tensor by its GGUF name; shape in PyTorch order (`[out, in]` for matrices).
    pub fn dequantize(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(info) = self.tensors.get(name) else { return Ok(None) };
        let ty =
            GgmlType::from_id(info.type_id).ok_or_else(|| TransformerError::UnsupportedDtype {
                name: name.into(),
                dtype: format!("ggml type {}", info.type_id),
            })?;
        let (start, end) = self.extent(info).map_err(|message| {
            TransformerError::CorruptWeights { path: self.path.clone(), message }
        })?;
        let bytes = self.bytes.get(start..end).ok_or_else(|| TransformerError::CorruptWeights {
            path: self.path.clone(),
            message: format!("tensor `{name}` lies outside the file"),
        })?;
        let data = dequantize(ty, bytes);
        let shape = info.ne.iter().rev().copied().collect();
        Ok(Some(HostTensor { shape, data }))
    }
}

fn f16(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// Dequantizes whole blocks (the caller checked the byte count is a multiple of the block size;
/// a trailing partial block is ignored). Each block is a fixed-size array, so no read can fall
/// outside it.
fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * per_block);
    match ty {
        GgmlType::F32 => {
            out.extend(bytes.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)))
        }
        GgmlType::F16 => out.extend(bytes.as_chunks::<2>().0.iter().map(|b| f16(*b))),
        GgmlType::Q8_0 => {
            for [d0, d1, qs @ ..] in bytes.as_chunks::<34>().0 {
                let d = f16([*d0, *d1]);
                out.extend(qs.iter().map(|&q| d * (q as i8) as f32));
            }
        }
        GgmlType::Q4_0 => {
            for [d0, d1, qs @ ..] in bytes.as_chunks::<18>().0 {
                let d = f16([*d0, *d1]);
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for [d0, d1, m0, m1, qs @ ..] in bytes.as_chunks::<20>().0 {
                let (d, m) = (f16([*d0, *d1]), f16([*m0, *m1]));
                out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        // ggml-quants.c `dequantize_row_q4_K`.
        GgmlType::Q4_K => {
            for [d0, d1, m0, m1, rest @ ..] in bytes.as_chunks::<144>().0 {
                let (d, min) = (f16([*d0, *d1]), f16([*m0, *m1]));
                let (scales, qs) = rest.split_at(12);
                for (j, q) in qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * j, scales);
                    let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                    let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
                    out.extend(q.iter().map(|&v| d1 * (v & 0x0F) as f32 - m1));
                    out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - m2));
                }
            }
        }
        // ggml-quants.c `dequantize_row_q5_K`.
        GgmlType::Q5_K => {
            for [d0, d1, m0, m1, rest @ ..] in bytes.as_chunks::<176>().0 {
                let (d, min) = (f16([*d0, *d1]), f16([*m0, *m1]));
                let (scales, rest) = rest.split_at(12);
                let (qh, qs) = rest.split_at(32);
                for (j, ql) in qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * j, scales);
                    let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                    let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
                    let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
                    let high = |h: u8, u: u8| if h & u != 0 { 16.0 } else { 0.0 };
                    out.extend(
                        ql.iter()
                            .zip(qh)
                            .map(|(&l, &h)| d1 * ((l & 0x0F) as f32 + high(h, u1)) - m1),
                    );
                    out.extend(
                        ql.iter().zip(qh).map(|(&l, &h)| d2 * ((l >> 4) as f32 + high(h, u2)) - m2),
                    );
                }
            }
        }
        // ggml-quants.c `dequantize_row_q6_K`.
        GgmlType::Q6_K => {
            for block in bytes.as_chunks::<210>().0 {
                let (ql, rest) = block.split_at(128);
                let (qh, rest) = rest.split_at(64);
                let (scales, d) = rest.split_at(16);
                let d = f16([d.first().copied().unwrap_or(0), d.get(1).copied().unwrap_or(0)]);
                for half in 0..2 {
                    let ql = ql.get(64 * half..64 * (half + 1)).unwrap_or_default();
                    let qh = qh.get(32 * half..32 * (half + 1)).unwrap_or_default();
                    let sc = scales.get(8 * half..8 * (half + 1)).unwrap_or_default();
                    let (lo, hi) = ql.split_at(32);
                    let mut quarter = [[0.0f32; 32]; 4];
                    for (l, ((&a, &b), &h)) in lo.iter().zip(hi).zip(qh).enumerate() {
                        let q = [
                            (a & 0x0F) | ((h & 3) << 4),
                            (b & 0x0F) | (((h >> 2) & 3) << 4),
                            (a >> 4) | (((h >> 4) & 3) << 4),
                            (b >> 4) | (((h >> 6) & 3) << 4),
                        ];
                        for (k, (row, q)) in quarter.iter_mut().zip(q).enumerate() {
                            let s = sc.get(l / 16 + 2 * k).map_or(0, |&s| s as i8);
                            if let Some(y) = row.get_mut(l) {
                                *y = d * s as f32 * (q as i32 - 32) as f32;
                            }
                        }
                    }
                    out.extend(quarter.iter().flatten());
                }
            }
        }
    }
    out
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block, as f32
/// (ggml-quants.c `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let at = |i: usize| q.get(i).copied().unwrap_or(0);
    let (sc, m) = if j < 4 {
        (at(j) & 63, at(j + 4) & 63)
    } else {
        ((at(j + 4) & 0x0F) | ((at(j - 4) >> 6) << 4), (at(j + 4) >> 4) | ((at(j) >> 6) << 4))
    };
    (sc as f32, m as f32)
}

/// The `llama.*` metadata keys [`GgufFile::llama_config`] reads (any other is an error).
pub const LLAMA_KEYS: &[&str] = &[
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "vocab_size",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "attention.key_length",
    "attention.value_length",
];

/// The `tokenizer.ggml.*` metadata keys [`GgufFile::bpe_vocab_and_merges`] and
/// [`crate::TextTokenizer::from_gguf`] read (any other is an error). `token_type` and `scores`
/// are informational for a byte-level BPE.
pub const TOKENIZER_KEYS: &[&str] = &[
    "model",
    "pre",
    "tokens",
    "merges",
    "token_type",
    "scores",
    "bos_token_id",
    "eos_token_id",
    "unknown_token_id",
    "padding_token_id",
    "add_bos_token",
    "add_eos_token",
    "add_space_prefix",
];

/// The pre-tokenizers (`tokenizer.ggml.pre`) the GGUF tokenizer reproduces.
pub const PRE_TOKENIZERS: &[&str] = &["smollm", "gpt-2"];

/// HF Llama tensor name → (GGUF name, heads to un-permute for q/k projections).
///
/// | HF name                                         | GGUF name                |
/// |-------------------------------------------------|--------------------------|
/// | `model.embed_tokens.weight`                     | `token_embd.weight`      |
/// | `model.layers.{i}.input_layernorm.weight`       | `blk.{i}.attn_norm.weight` |
/// | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | `blk.{i}.attn_{q,k,v,output}.weight` |
/// | `model.layers.{i}.post_attention_layernorm.weight` | `blk.{i}.ffn_norm.weight` |
/// | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` | `blk.{i}.ffn_{gate,up,down}.weight` |
/// | `model.norm.weight`                             | `output_norm.weight`     |
/// | `lm_head.weight`                                | `output.weight`          |
fn gguf_name(hf: &str, heads: usize, kv_heads: usize) -> Option<(String, Option<usize>)> {
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), None)),
        "model.norm.weight" => return Some(("output_norm.weight".into(), None)),
        "lm_head.weight" => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, field) = rest.split_once('.')?;
    let (gguf_field, unpermute) = match field {
        "input_layernorm.weight" => ("attn_norm.weight", None),
        "self_attn.q_proj.weight" => ("attn_q.weight", Some(heads)),
        "self_attn.k_proj.weight" => ("attn_k.weight", Some(kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v.weight", None),
        "self_attn.o_proj.weight" => ("attn_output.weight", None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
        "mlp.up_proj.weight" => ("ffn_up.weight", None),
        "mlp.down_proj.weight" => ("ffn_down.weight", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{gguf_field}"), unpermute))
}

/// Undoes llama.cpp's conversion permutation of q/k rows, back to HF's rotate-half layout:
/// `w.reshape(heads, head_dim/2, 2, in).swap(1, 2).reshape(out, in)`.
pub fn unpermute_rows(t: &HostTensor, heads: usize) -> Option<HostTensor> {
    let (out, cols) = (*t.shape.first()?, *t.shape.get(1)?);
    if heads == 0 || !out.is_multiple_of(heads) || !(out / heads).is_multiple_of(2) {
        return None;
    }
    let head_dim = out / heads;
    let half = head_dim / 2;
    let mut data = vec![0.0; t.data.len()];
    for h in 0..heads {
        for i in 0..half {
            for pair in 0..2 {
                let src = h * head_dim + i * 2 + pair;
                let dst = h * head_dim + pair * half + i;
                data.get_mut(dst * cols..(dst + 1) * cols)?
                    .copy_from_slice(t.data.get(src * cols..(src + 1) * cols)?);
            }
        }
    }
    Some(HostTensor { shape: t.shape.clone(), data })
}

/// A GGUF Llama file seen through HF tensor names.
pub struct GgufLlamaSource {
    file: GgufFile,
    heads: usize,
    kv_heads: usize,
}

impl GgufLlamaSource {
    /// Wraps a parsed file; q/k are un-permuted with the head counts of `config`.
    pub fn new(file: GgufFile, config: &LlamaConfig) -> Self {
        Self { file, heads: config.num_attention_heads, kv_heads: config.kv_heads() }
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufLlamaSource {
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some((gguf, unpermute)) = gguf_name(name, self.heads, self.kv_heads) else {
            return Ok(None);
        };
        let Some(t) = self.file.dequantize(&gguf)? else { return Ok(None) };
        match unpermute {
            None => Ok(Some(t)),
            Some(heads) => {
                unpermute_rows(&t, heads).map(Some).ok_or_else(|| TransformerError::ShapeMismatch {
                    name: gguf,
                    expected: vec![
                        heads * (t.shape.first().copied().unwrap_or(0) / heads.max(1)),
                        t.shape.get(1).copied().unwrap_or(0),
                    ],
                    found: t.shape.clone(),
                })
            }
        }
    }

    fn origin(&self) -> &Path {
        &self.file.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_and_q8_0_blocks_dequantize_as_llama_cpp() {
        // Q4_1: d = 0.5, m = -1, qs[j] = j | (15-j) << 4.
        let mut block = Vec::new();
        block.extend(half::f16::from_f32(0.5).to_le_bytes());
        block.extend(half::f16::from_f32(-1.0).to_le_bytes());
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_1, &block);
        assert_eq!(y.len(), 32);
        assert_eq!(y[3], 3.0 * 0.5 - 1.0);
        assert_eq!(y[16 + 3], 12.0 * 0.5 - 1.0);
        let mut block = Vec::new();
        block.extend(half::f16::from_f32(0.25).to_le_bytes());
        block.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let y = dequantize(GgmlType::Q8_0, &block);
        assert_eq!((y[0], y[31]), (-4.0, 3.75));
    }

    #[test]
    fn k_quants_dequantize_as_the_gguf_package() {
        // Random blocks and the values `gguf.quants.dequantize` gives them
        // (scripts/gen_reference.py gguf_kquants).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_kquants.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (name, ty) in
            [("Q4_K", GgmlType::Q4_K), ("Q5_K", GgmlType::Q5_K), ("Q6_K", GgmlType::Q6_K)]
        {
            let hex = fixture[name]["bytes"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let expected: Vec<f32> = fixture[name]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let (per_block, block_bytes) = ty.block();
            assert_eq!(bytes.len() / block_bytes * per_block, expected.len(), "{name}");
            let got = dequantize(ty, &bytes);
            assert_eq!(got.len(), expected.len(), "{name}");
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!((g - e).abs() <= 1e-6 * e.abs().max(1e-3), "{name}[{i}]: {g} vs {e}");
            }
        }
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // rows of a 2-head, head_dim-4 projection, permuted as llama.cpp does: [0,2,1,3 | 4,6,5,7].
        let permuted = HostTensor { shape: vec![8, 1], data: vec![0., 2., 1., 3., 4., 6., 5., 7.] };
        let hf = unpermute_rows(&permuted, 2).unwrap();
        assert_eq!(hf.data, vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let p = Path::new("x.gguf");
        assert!(matches!(
            GgufFile::parse(p, b"GGU".to_vec()),
            Err(TransformerError::CorruptWeights { .. })
        ));
        assert!(GgufFile::parse(p, b"PK\x03\x04xxxxxxxx".to_vec())
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend(1u64.to_le_bytes()); // one tensor …
        header.extend(0u64.to_le_bytes());
        let e = GgufFile::parse(p, header).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}"); // … whose info is missing
    }
}
