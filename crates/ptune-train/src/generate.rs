//! Generation for decoders with the KV cache and soft prompts: greedy, top-k / top-p sampling and
//! beam search.
//!
//! The first pass runs the prompted source (virtual tokens placed, prefixes attached) and fills the
//! cache; every later step feeds only the new token, with the same prefix (prefixes are not cached,
//! they are passed on every call) and the same position policy. Input-level virtual tokens live in
//! the cache after the first pass. Beam search runs its hypotheses as the rows of one batch and
//! reorders the cache rows as beams are kept.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ptune_prompt::SoftPrompt;
use ptune_transformer::FrozenOps;
use ptune_transformer::{Backbone, BackboneInput, Decoder, KvCache};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::task::{decoder, prompted_batch};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decoding {
    /// The most likely token.
    Greedy,
    /// Sampling from the softmax at `temperature`, restricted to the `top_k` most likely tokens
    /// and/or the smallest set whose probability reaches `top_p` (nucleus); seeded.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Keep the k most likely tokens.
        top_k: Option<usize>,
        /// Keep the smallest most-likely set with total probability ≥ p.
        top_p: Option<f64>,
        /// Seed of the sampler.
        seed: u64,
    },
    /// Beam search over `width` hypotheses; finished hypotheses are ranked by
    /// `log p / length^length_penalty`.
    Beam {
        /// Number of beams.
        width: usize,
        /// Length normalization exponent (HF's `length_penalty`; 1.0 = mean log-prob).
        length_penalty: f64,
    },
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// Stop token (not included in the output).
    pub eos: Option<u32>,
    /// Decoding strategy.
    pub decoding: Decoding,
    /// HF's `repetition_penalty` (CTRL's): the logit of every token already in the source or the
    /// output is divided by it when positive and multiplied by it when negative; 1.0 is off.
    #[serde(default = "no_penalty")]
    pub repetition_penalty: f64,
}

fn no_penalty() -> f64 {
    1.0
}

impl GenerationConfig {
    /// Greedy decoding of at most `max_new_tokens`, stopping at `eos`, no penalty.
    pub fn greedy(max_new_tokens: usize, eos: Option<u32>) -> Self {
        Self { max_new_tokens, eos, decoding: Decoding::Greedy, repetition_penalty: 1.0 }
    }
}

/// What a streaming caller says after each new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on decoding.
    Continue,
    /// Stop now (e.g. a stop string appeared); the tokens so far are the output.
    Stop,
}

/// HF's `RepetitionPenaltyLogitsProcessor` on one row of logits: every token of `seen` (counted
/// once) is divided by `penalty` when its logit is positive and multiplied when negative.
pub fn apply_repetition_penalty(
    row: &mut [f32],
    seen: impl IntoIterator<Item = u32>,
    penalty: f64,
) {
    if penalty == 1.0 {
        return;
    }
    let penalty = penalty as f32;
    let mut done = std::collections::HashSet::new();
    for t in seen {
        if done.insert(t) {
            if let Some(x) = row.get_mut(t as usize) {
                *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
            }
        }
    }
}

/// A decoding session: the prompted first pass, then one token per row per step.
struct Session<'a, B: Backend> {
    llama: &'a dyn Decoder<B>,
    cache: KvCache<B>,
    template: BackboneInput<B>,
}

impl<'a, B: FrozenOps> Session<'a, B> {
    /// Runs `rows` copies of `source` through the prompt and the decoder; returns the session and
    /// the next-token logits `[rows, vocab]`.
    fn start(
        backbone: &'a dyn Backbone<B>,
        prompt: Option<&SoftPrompt<B>>,
        source: &[u32],
        rows: usize,
    ) -> Result<(Self, Tensor<B, 2>)> {
        let llama = decoder(backbone, "generation")?;
        if source.is_empty() {
            return Err(TrainError::Config("empty source".into()));
        }
        let batch_rows = vec![source.to_vec(); rows];
        let batch = prompted_batch(backbone, prompt, &batch_rows)?;
        let mut cache = llama.new_cache();
        let input = batch.input;
        // Later steps: no embeddings yet, the same prefix and position policy, nothing padded.
        let template = BackboneInput {
            embeds: input.embeds.clone().narrow(1, 0, 1),
            padding_mask: None,
            token_types: None,
            prefix: input.prefix.clone(),
            positions: input.positions,
            layers: input.layers.clone(),
        };
        let hidden = llama.forward_cached(input, &mut cache)?;
        let s = hidden.dims()[1];
        let logits = last_logits(llama, hidden.narrow(1, s - 1, 1));
        Ok((Self { llama, cache, template }, logits))
    }

    /// Feeds one token per row; returns the next-token logits `[rows, vocab]`.
    fn step(&mut self, tokens: &[u32]) -> Result<Tensor<B, 2>> {
        let device = self.template.embeds.device();
        let ids = ptune_transformer::ids_tensor::<B>(tokens, &device).reshape([tokens.len(), 1]);
        let mut input = self.template.clone();
        input.embeds = self.llama.embed(ids);
        let hidden = self.llama.forward_cached(input, &mut self.cache)?;
        Ok(last_logits(self.llama, hidden))
    }
}

/// # Shapes
/// - hidden: `[b, 1, d]` → `[b, vocab]`
fn last_logits<B: FrozenOps>(llama: &dyn Decoder<B>, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, _, _] = hidden.dims();
    let logits = llama.logits(hidden);
    let v = logits.dims()[2];
    logits.reshape([b, v])
}

/// The rows of a `[b, vocab]` logits tensor, on the host.
pub fn host_rows<B: FrozenOps>(t: Tensor<B, 2>) -> Result<Vec<Vec<f32>>> {
    let [_, v] = t.dims();
    let flat = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::Config(format!("reading logits: {e:?}")))?;
    Ok(flat.chunks(v.max(1)).map(<[f32]>::to_vec).collect())
}

/// In-place log-softmax of one row (f64 accumulation).
fn host_log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_z = max as f64 + z.ln();
    row.iter_mut().for_each(|x| *x = (*x as f64 - log_z) as f32);
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws a token from `logits` at `temperature`, keeping the `top_k` most likely and the smallest
/// set reaching probability `top_p`; `u` is a uniform draw in `[0, 1)`.
pub fn sample_token(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    u: f64,
) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = top_k {
        order.truncate(k.max(1));
    }
    let t = temperature.max(1e-6);
    let top = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - top) / t).exp()).collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if let Some(p) = top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= p {
                keep = i + 1;
                break;
            }
        }
        order.truncate(keep);
        probs.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= z);
    }
    let mut acc = 0.0;
    for (i, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return order[i] as u32;
        }
    }
    order[order.len() - 1] as u32
}

/// Generates a continuation of `source` (token ids) with the decoder in `backbone`, under
/// `prompt` if any. Returns the new ids (without the stop token).
pub fn generate<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    source: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<u32>> {
    generate_streaming(backbone, prompt, source, cfg, &mut |_| Flow::Continue)
}

/// [`generate`], calling `on_token` with the output so far after every new token of greedy and
/// sampled decoding (beam search calls it once, with the chosen hypothesis); `Flow::Stop` ends
/// decoding with the tokens so far.
pub fn generate_streaming<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    source: &[u32],
    cfg: &GenerationConfig,
    on_token: &mut dyn FnMut(&[u32]) -> Flow,
) -> Result<Vec<u32>> {
    if cfg.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let penalty = cfg.repetition_penalty;
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(TrainError::Config(format!(
            "repetition_penalty must be a positive number, not {penalty}"
        )));
    }
    match &cfg.decoding {
        Decoding::Beam { width, length_penalty } => {
            let out = beam(backbone, prompt, source, cfg, (*width).max(1), *length_penalty)?;
            on_token(&out);
            Ok(out)
        }
        decoding => {
            let chooser = TokenChooser::new(decoding)?;
            sequential(backbone, prompt, source, cfg, on_token, chooser)
        }
    }
}

/// Picks each next token of greedy or sampled decoding from one row of logits: the one rule for
/// `generate` and for a server that decodes many requests in one batch (each request has its own
/// chooser, so a seeded request samples the same tokens alone or batched).
#[derive(Debug, Clone)]
pub struct TokenChooser {
    sample: Option<(f64, Option<usize>, Option<f64>)>,
    rng: ptune_data::split::SplitMix,
}

impl TokenChooser {
    /// A chooser for greedy or sampled decoding; beam search is not token by token (an error),
    /// nor are a temperature ≤ 0 or a `top_p` outside (0, 1].
    pub fn new(decoding: &Decoding) -> Result<Self> {
        match decoding {
            Decoding::Greedy => Ok(Self { sample: None, rng: ptune_data::split::SplitMix::new(0) }),
            Decoding::Sample { temperature, top_k, top_p, seed } => {
                let bad_temperature = temperature.is_nan() || *temperature <= 0.0;
                if bad_temperature || top_p.is_some_and(|p| p.is_nan() || p <= 0.0 || p > 1.0) {
                    return Err(TrainError::Config(
                        "sampling needs temperature > 0 and top_p in (0, 1]".into(),
                    ));
                }
                Ok(Self {
                    sample: Some((*temperature, *top_k, *top_p)),
                    rng: ptune_data::split::SplitMix::new(*seed),
                })
            }
            Decoding::Beam { .. } => Err(TrainError::Config(
                "beam search keeps several hypotheses: it is not decoded token by token".into(),
            )),
        }
    }

    /// The next token from `logits` (one row, the repetition penalty already applied).
    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        match self.sample {
            None => argmax(logits),
            Some((temperature, top_k, top_p)) => {
                let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                sample_token(logits, temperature, top_k, top_p, u)
            }
        }
    }
}

fn sequential<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    source: &[u32],
    cfg: &GenerationConfig,
    on_token: &mut dyn FnMut(&[u32]) -> Flow,
    mut chooser: TokenChooser,
) -> Result<Vec<u32>> {
    let (mut session, mut logits) = Session::start(backbone, prompt, source, 1)?;
    let mut out = Vec::new();
    loop {
        let mut row = host_rows(logits)?.remove(0);
        let seen = source.iter().chain(&out).copied();
        apply_repetition_penalty(&mut row, seen, cfg.repetition_penalty);
        let next = chooser.choose(&row);
        if Some(next) == cfg.eos {
            break;
        }
        out.push(next);
        if on_token(&out) == Flow::Stop || out.len() == cfg.max_new_tokens {
            break;
        }
        logits = session.step(&[next])?;
    }
    Ok(out)
}

fn beam<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    prompt: Option<&SoftPrompt<B>>,
    source: &[u32],
    cfg: &GenerationConfig,
    width: usize,
    length_penalty: f64,
) -> Result<Vec<u32>> {
    let (mut session, mut logits) = Session::start(backbone, prompt, source, width)?;
    let normalized = |score: f64, len: usize| score / (len.max(1) as f64).powf(length_penalty);
    // Alive hypotheses: (tokens, summed log-prob). At the start only one is real: the others are
    // copies and would return the same continuations.
    let mut alive: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    let mut finished: Vec<(Vec<u32>, f64)> = Vec::new();
    for step in 0..cfg.max_new_tokens {
        let logp = if cfg.repetition_penalty == 1.0 {
            host_rows(log_softmax(logits, 1))?
        } else {
            let mut rows = host_rows(logits)?;
            for (row, (tokens, _)) in rows.iter_mut().zip(&alive) {
                let seen = source.iter().chain(tokens).copied();
                apply_repetition_penalty(row, seen, cfg.repetition_penalty);
                host_log_softmax(row);
            }
            rows
        };
        let mut candidates: Vec<(usize, u32, f64)> = Vec::new();
        for (h, (_, score)) in alive.iter().enumerate() {
            let row = &logp[h];
            let mut order: Vec<usize> = (0..row.len()).collect();
            let k = (2 * width).min(row.len());
            if k < row.len() {
                order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            }
            for &t in &order[..k] {
                candidates.push((h, t as u32, score + row[t] as f64));
            }
        }
        candidates.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut next_alive = Vec::new();
        let mut parents = Vec::new();
        for (h, t, score) in candidates {
            let mut tokens = alive[h].0.clone();
            if Some(t) == cfg.eos {
                finished.push((tokens, score));
            } else {
                tokens.push(t);
                next_alive.push((tokens, score));
                parents.push(h);
            }
            if next_alive.len() == width {
                break;
            }
        }
        let best_finished =
            finished.iter().map(|(t, s)| normalized(*s, t.len())).fold(f64::NEG_INFINITY, f64::max);
        let best_alive = next_alive
            .iter()
            .map(|(t, s)| normalized(*s, t.len()))
            .fold(f64::NEG_INFINITY, f64::max);
        alive = next_alive;
        // Log-probs only fall as hypotheses grow: stop once enough are finished and none alive beats
        // the best of them.
        if alive.is_empty()
            || (finished.len() >= width && best_alive < best_finished)
            || step + 1 == cfg.max_new_tokens
        {
            break;
        }
        // Rows of the batch follow the hypotheses; pad to `width` rows by repeating the last.
        let mut rows = parents.clone();
        while rows.len() < width {
            rows.push(*parents.last().unwrap_or(&0));
        }
        session.cache.select_rows(&rows);
        let mut tokens: Vec<u32> = alive.iter().map(|(t, _)| *t.last().unwrap_or(&0)).collect();
        while tokens.len() < width {
            tokens.push(*tokens.last().unwrap_or(&0));
        }
        logits = session.step(&tokens)?;
    }
    finished.extend(alive);
    Ok(finished
        .into_iter()
        .max_by(|a, b| normalized(a.1, a.0.len()).total_cmp(&normalized(b.1, b.0.len())))
        .map(|(t, _)| t)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_follows_hf() {
        let mut row = [2.0f32, -1.0, 0.5, 4.0];
        apply_repetition_penalty(&mut row, [0, 1, 1, 9], 2.0); // 1 counted once, 9 out of range
        assert_eq!(row, [1.0, -2.0, 0.5, 4.0]);
        let mut same = [1.0f32, -1.0];
        apply_repetition_penalty(&mut same, [0, 1], 1.0);
        assert_eq!(same, [1.0, -1.0]);
    }

    #[test]
    fn sampling_respects_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 2.0, -1.0, 2.9];
        // top-k 1 is greedy whatever the draw.
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(sample_token(&logits, 1.0, Some(1), None, u), 1);
        }
        // top-k 2 only ever returns the two best tokens (1 and 4).
        for i in 0..100 {
            let t = sample_token(&logits, 1.0, Some(2), None, i as f64 / 100.0);
            assert!(t == 1 || t == 4, "{t}");
        }
        // A tiny nucleus keeps only the best token.
        assert_eq!(sample_token(&logits, 1.0, None, Some(0.01), 0.99), 1);
        // A very low temperature is greedy.
        assert_eq!(sample_token(&logits, 1e-4, None, None, 0.99), 1);
    }
}
