//! Tokenizers: HF `tokenizer.json` through the `tokenizers` crate (padding and truncation switched
//! off: ptune pads and truncates itself), or a byte-level BPE built from a GGUF file's vocabulary
//! and merges (what llama.cpp calls the `gpt2` model with the `smollm` pre-tokenizer: digits split
//! one by one, then GPT-2 byte-level splitting).

#![warn(clippy::indexing_slicing)] // user files reach this code: no index may panic

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

use crate::error::{Result, TransformerError};
use crate::loader::gguf::GgufFile;

/// A loaded tokenizer plus the special tokens ptune needs.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    add_special_tokens: bool,
    vocab_size: usize,
}

fn tok_err(e: impl std::fmt::Display) -> TransformerError {
    TransformerError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Loads an HF `tokenizer.json`, with its padding and truncation removed.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| TransformerError::Tokenizer(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self { inner, add_special_tokens: true, vocab_size })
    }

    /// Builds the byte-level BPE tokenizer embedded in a GGUF file: the `smollm` pre-tokenizer
    /// (digits one by one, then GPT-2 byte-level splitting) or plain `gpt-2`; BOS / EOS added when
    /// `tokenizer.ggml.add_bos_token` / `add_eos_token` say so (SmolLM2 adds neither). Other
    /// tokenizer metadata is refused ([`GgufFile::bpe_vocab_and_merges`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let (tokens, merges) = file.bpe_vocab_and_merges()?;
        let vocab_size = tokens.len();
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| TransformerError::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre = match file.meta_str("tokenizer.ggml.pre") {
            Some("gpt-2") => Sequence::new(vec![byte_level]),
            _ => Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), byte_level]),
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // BOS / EOS around each sequence, as HF's Llama tokenizers do with add_bos/eos_token.
        let mut specials = Vec::new();
        for (flag, id_key) in [
            ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id"),
            ("tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id"),
        ] {
            if !file.meta_bool(flag)? {
                specials.push(None);
                continue;
            }
            let id = file.metadata().get(id_key).and_then(|v| match v {
                crate::loader::gguf::GgufValue::U64(id) => u32::try_from(*id).ok(),
                crate::loader::gguf::GgufValue::I64(id) => u32::try_from(*id).ok(),
                _ => None,
            });
            let token =
                id.and_then(|id| inner.id_to_token(id).map(|t| (t, id))).ok_or_else(|| {
                    TransformerError::Tokenizer(format!(
                        "`{flag}` is set but `{id_key}` is not a token"
                    ))
                })?;
            specials.push(Some(token));
        }
        let add_special_tokens = specials.iter().any(Option::is_some);
        if add_special_tokens {
            let (bos, eos) = match specials.as_slice() {
                [bos, eos] => (bos.clone(), eos.clone()),
                _ => (None, None),
            };
            let wrap = |seq: &str, type_id: u32| {
                let mut parts = Vec::new();
                if let Some((t, _)) = &bos {
                    parts.push(format!("{t}:{type_id}"));
                }
                parts.push(format!("{seq}:{type_id}"));
                if let Some((t, _)) = &eos {
                    parts.push(format!("{t}:{type_id}"));
                }
                parts.join(" ")
            };
            let tokens: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
            let template = TemplateProcessing::builder()
                .try_single(wrap("$A", 0))
                .and_then(|b| b.try_pair(format!("{} {}", wrap("$A", 0), wrap("$B", 1))))
                .map_err(tok_err)?
                .special_tokens(tokens)
                .build()
                .map_err(tok_err)?;
            inner.with_post_processor(Some(template));
        }
        Ok(Self { inner, add_special_tokens, vocab_size })
    }

    /// Token ids of `text` (with the tokenizer's special tokens, e.g. BERT's `[CLS]`/`[SEP]`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, self.add_special_tokens).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a text pair (the tokenizer's pair template, e.g. `[CLS] a [SEP] b [SEP]`).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode((a, b), self.add_special_tokens).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` without special tokens (for template literals and init texts).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
