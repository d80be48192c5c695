//! Continuous batching of generation requests. The running requests are the rows of ONE batch
//! with one KV cache: every step feeds each row its last token (with its own adapter's prefix, if
//! any) and picks each row's next token by its own rule (greedy or seeded sampling, its
//! repetition penalty). Between two steps a finished row leaves (its cache row is dropped) and new
//! requests join: their prompts run through one prefill forward (each row with its own soft
//! prompt, or none) and their cache rows are appended, padded to a common length. Padded cache
//! slots are masked and hold no position, so each row decodes exactly as it would alone.
//!
//! Beam search keeps several hypotheses per request; a beam request runs on its own, between two
//! steps of the batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ptune_prompt::{prepare_rows, rows_prefix, SoftPrompt};
use ptune_train::generate::{apply_repetition_penalty, host_rows, Decoding, TokenChooser};
use ptune_train::inference::{generate_text, GenerateOptions, StopText};
use ptune_train::TaskKind;
use ptune_transformer::{AnyBackbone, Backbone, BackboneInput, Decoder, FrozenOps, KvCache};
use ptune_transformer::{PositionPolicy, PrefixKv, TextTokenizer};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::adapters::AdapterSet;
use crate::engine::BatchPolicy;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A generation request.
pub struct GenerateWork {
    /// The adapter's name; `None` runs the frozen model alone.
    pub adapter: Option<String>,
    /// The text to continue (the adapter's separator is appended, as `ptune generate` does).
    pub prompt: String,
    /// Decoding, most new tokens, stop strings, repetition penalty.
    pub options: GenerateOptions,
    /// When the request entered the queue.
    pub queued: Instant,
    /// Where the pieces of text and the end go; a closed receiver cancels the request.
    pub events: UnboundedSender<GenEvent>,
}

/// What a generation request receives, in order: pieces of text, then one `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum GenEvent {
    /// New text (streamed token by token; stop strings never appear in it).
    Text(String),
    /// The end, with the whole text.
    Done(Generated),
    /// The request failed (before any text was sent, except for internal faults).
    Failed(ApiError),
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model's end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_tokens` new tokens.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// The text (cut before the first stop string, trimmed), as `ptune generate` prints it.
    pub text: String,
    /// New tokens decoded (the eos token not counted).
    pub tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// One running generation: a row of the batch.
struct Live<B: FrozenOps> {
    /// The loaded adapter's id (rows of one adapter share its prefix entry; a reload gives a
    /// re-read adapter a new id, so rows begun before it keep their own prompt).
    adapter: Option<u64>,
    /// The adapter's name as the request gave it.
    adapter_name: Option<String>,
    prompt: Option<SoftPrompt<B>>,
    source: Vec<u32>,
    out: Vec<u32>,
    chooser: TokenChooser,
    penalty: f64,
    max_new: usize,
    eos: Option<u32>,
    text: StopText,
    events: UnboundedSender<GenEvent>,
    /// Set when the row is done (it leaves the batch before the next step).
    done: bool,
    /// Its prefix (if any) sits in the KV cache, so decoding steps pass none for it.
    prefix_cached: bool,
}

impl<B: FrozenOps> Live<B> {
    /// Takes the next token: the end at eos, else the token is kept, its text sent, and the end
    /// at a stop string or the length limit. Mirrors `ptune_train::inference::generate_text`.
    fn accept(&mut self, next: u32, tokenizer: &TextTokenizer) {
        if Some(next) == self.eos {
            self.finish(FinishReason::Eos);
            return;
        }
        self.out.push(next);
        match tokenizer.decode(&self.out) {
            Ok(decoded) => {
                let (delta, stopped) = self.text.update(&decoded);
                if !delta.is_empty() && self.events.send(GenEvent::Text(delta)).is_err() {
                    self.done = true; // the client left
                    return;
                }
                if stopped {
                    self.finish(FinishReason::Stop);
                } else if self.out.len() >= self.max_new {
                    self.finish(FinishReason::Length);
                }
            }
            Err(e) => self.fail(ApiError::Internal(format!("decoding tokens: {e}"))),
        }
    }

    fn finish(&mut self, reason: FinishReason) {
        let rest = self.text.flush();
        if !rest.is_empty() {
            let _ = self.events.send(GenEvent::Text(rest));
        }
        let done =
            Generated { text: self.text.finish(), tokens: self.out.len(), finish_reason: reason };
        let _ = self.events.send(GenEvent::Done(done));
        self.done = true;
    }

    fn fail(&mut self, e: ApiError) {
        let _ = self.events.send(GenEvent::Failed(e));
        self.done = true;
    }
}

/// The running batch, its cache, and the requests waiting to join.
pub struct Batcher<B: FrozenOps> {
    max_batch: usize,
    waiting: VecDeque<GenerateWork>,
    live: Vec<Live<B>>,
    cache: Option<KvCache<B>>,
    /// The running rows' prefixes (`Some(None)`: no row has one), kept while the rows stay the
    /// same: rebuilding them costs a copy of every prefix per step.
    prefix: Option<Option<PrefixKv<B>>>,
    metrics: Arc<Metrics>,
}

impl<B: FrozenOps> Batcher<B> {
    /// An empty batcher running at most `max_batch` rows together.
    pub fn new(max_batch: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max_batch: max_batch.max(1),
            waiting: VecDeque::new(),
            live: Vec::new(),
            cache: None,
            prefix: None,
            metrics,
        }
    }

    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.live.is_empty() && self.waiting.is_empty()
    }

    /// Queues a request to join at the next [`Batcher::admit`].
    pub fn submit(&mut self, work: GenerateWork) {
        self.waiting.push_back(work);
    }

    /// Lets waiting requests join the running batch, up to `max_batch` rows: one prefill forward
    /// for all of them, their first tokens chosen, their cache rows appended.
    pub fn admit(
        &mut self,
        backbone: &AnyBackbone<B>,
        tokenizer: &TextTokenizer,
        set: &AdapterSet<B>,
        policy: &BatchPolicy,
    ) {
        let mut joining: Vec<Live<B>> = Vec::new();
        let mut sources: Vec<Vec<u32>> = Vec::new();
        // One adapter at a time: only requests for the running rows' adapter join (when nothing
        // runs, the oldest request's adapter is next).
        let only = (!policy.mixed).then(|| match self.live.first() {
            Some(live) => live.adapter_name.clone(),
            None => self.waiting.front().and_then(|w| w.adapter.clone()),
        });
        while self.live.len() + joining.len() < self.max_batch {
            let next = match &only {
                None => self.waiting.pop_front(),
                Some(name) => self
                    .waiting
                    .iter()
                    .position(|w| &w.adapter == name)
                    .and_then(|i| self.waiting.remove(i)),
            };
            let Some(work) = next else { break };
            self.metrics.queue_wait(work.queued.elapsed());
            match prepare_live(backbone, tokenizer, set, policy, work) {
                Ok(Admitted::Row(live)) => {
                    sources.push(live.source.clone());
                    joining.push(*live);
                }
                Ok(Admitted::Alone(alone)) => {
                    let (work, prompt, separator) = *alone;
                    run_alone(backbone, tokenizer, prompt.as_ref(), &separator, work);
                }
                Ok(Admitted::Finished) => {}
                Err((events, e)) => {
                    let _ = events.send(GenEvent::Failed(e));
                }
            }
        }
        // One prefill per kind of prompt: rows with input-level virtual tokens, and the others
        // (prefixes, or no adapter), so no row is padded to the other kind's length.
        let (mut input, mut other): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for pair in joining.into_iter().zip(sources) {
            let input_level =
                pair.0.prompt.as_ref().is_some_and(|p| p.spec.method.is_input_level());
            if input_level {
                input.push(pair);
            } else {
                other.push(pair);
            }
        }
        for group in [input, other] {
            if group.is_empty() {
                continue;
            }
            let (rows, sources): (Vec<Live<B>>, Vec<Vec<u32>>) = group.into_iter().unzip();
            if let Err(e) = self.prefill(backbone, tokenizer, rows, &sources) {
                tracing::error!("prefill: {e}");
            }
        }
        self.drop_finished();
    }

    /// The first forward of joining rows; their caches join the batch's.
    fn prefill(
        &mut self,
        backbone: &AnyBackbone<B>,
        tokenizer: &TextTokenizer,
        mut joining: Vec<Live<B>>,
        sources: &[Vec<u32>],
    ) -> Result<(), ApiError> {
        let result = (|| -> Result<Prefilled<B>, ApiError> {
            let decoder = decoder_of(backbone)?;
            let (prompts, map) = adapters_of(joining.iter(), false);
            let batch = prepare_rows(backbone as &dyn Backbone<B>, &prompts, &map, sources)
                .map_err(|e| ApiError::BadInput(e.to_string()))?;
            let lengths = batch.row_lengths().map_err(|e| ApiError::Internal(e.to_string()))?;
            let s = batch.input.embeds.dims()[1];
            let prefix = batch.input.prefix.clone();
            let mut cache = decoder.new_cache();
            let hidden = decoder
                .forward_cached(batch.input, &mut cache)
                .map_err(|e| ApiError::BadInput(e.to_string()))?;
            // The prefixes go in front of the cached keys and values once, rather than being
            // attached again at every step (where the prefix covers every layer).
            let cached = match &prefix {
                Some(p) => {
                    cache.prepend_prefix(p).map_err(|e| ApiError::Internal(e.to_string()))?
                }
                None => true,
            };

            let last: Vec<usize> =
                lengths.iter().enumerate().map(|(r, &n)| r * s + n.saturating_sub(1)).collect();
            self.metrics.batch(joining.len());
            let logits = host_rows(decoder.logits_at(hidden, &last))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok((cache, logits, cached))
        })();
        let (cache, logits, cached) = match result {
            Ok(r) => r,
            Err(e) => {
                for live in &mut joining {
                    live.fail(e.clone());
                }
                return Err(e);
            }
        };
        for (live, mut row) in joining.iter_mut().zip(logits) {
            live.prefix_cached = cached;
            let seen = live.source.iter().chain(&live.out).copied();
            apply_repetition_penalty(&mut row, seen, live.penalty);
            let next = live.chooser.choose(&row);
            live.accept(next, tokenizer);
        }
        match &mut self.cache {
            Some(c) => {
                if let Err(e) = c.append_rows(cache) {
                    let e = ApiError::Internal(e.to_string());
                    for live in &mut joining {
                        live.fail(e.clone());
                    }
                    return Err(e);
                }
            }
            None => self.cache = Some(cache),
        }
        self.live.extend(joining);
        self.prefix = None;
        Ok(())
    }

    /// One decoding step of every running row.
    pub fn step(&mut self, backbone: &AnyBackbone<B>, tokenizer: &TextTokenizer) {
        if self.live.is_empty() {
            return;
        }
        if let Err(e) = self.try_step(backbone, tokenizer) {
            for live in &mut self.live {
                live.fail(e.clone());
            }
        }
        self.drop_finished();
    }

    fn try_step(
        &mut self,
        backbone: &AnyBackbone<B>,
        tokenizer: &TextTokenizer,
    ) -> Result<(), ApiError> {
        let decoder = decoder_of(backbone)?;
        let cache = self.cache.as_mut().ok_or_else(|| ApiError::Internal("no cache".into()))?;
        let tokens: Vec<u32> =
            self.live.iter().map(|l| l.out.last().copied().unwrap_or_default()).collect();
        let device = backbone.embedding_matrix().device();
        let ids = ptune_transformer::ids_tensor::<B>(&tokens, &device).reshape([tokens.len(), 1]);
        let mut input = BackboneInput::new(decoder.embed(ids));
        if self.prefix.is_none() {
            let (prompts, map) = adapters_of(self.live.iter(), true);
            let prefix = rows_prefix(backbone as &dyn Backbone<B>, &prompts, &map)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            self.prefix = Some(prefix);
        }
        if let Some(Some(prefix)) = &self.prefix {
            input = input.with_prefix(prefix.clone()).with_positions(PositionPolicy::Shift);
        }
        self.metrics.decode_step(tokens.len());
        let hidden =
            decoder.forward_cached(input, cache).map_err(|e| ApiError::BadInput(e.to_string()))?;
        let [b, _, d] = hidden.dims();
        let logits = decoder.logits(hidden.reshape([b, 1, d]));
        let v = logits.dims()[2];
        let rows =
            host_rows(logits.reshape([b, v])).map_err(|e| ApiError::Internal(e.to_string()))?;
        for (live, mut row) in self.live.iter_mut().zip(rows) {
            let seen = live.source.iter().chain(&live.out).copied();
            apply_repetition_penalty(&mut row, seen, live.penalty);
            let next = live.chooser.choose(&row);
            live.accept(next, tokenizer);
        }
        Ok(())
    }

    /// Rows that are done leave the batch and the cache.
    fn drop_finished(&mut self) {
        if self.live.iter().all(|l| !l.done) {
            return;
        }
        let keep: Vec<usize> =
            (0..self.live.len()).filter(|&i| self.live.get(i).is_some_and(|l| !l.done)).collect();
        self.live.retain(|l| !l.done);
        self.prefix = None;
        if keep.is_empty() {
            self.cache = None;
            return;
        }
        if let Some(cache) = &mut self.cache {
            cache.select_rows(&keep);
            cache.drop_padded_columns();
        }
    }
}

/// What a prefill leaves: the joining rows' cache, their next-token logits, and whether their
/// prefixes went into the cache.
type Prefilled<B> = (KvCache<B>, Vec<Vec<f32>>, bool);

/// A request made ready: a row to join, a beam request to run alone, or already answered.
enum Admitted<B: FrozenOps> {
    Row(Box<Live<B>>),
    Alone(Box<(GenerateWork, Option<SoftPrompt<B>>, String)>),
    Finished,
}

type Refused = (UnboundedSender<GenEvent>, ApiError);

fn prepare_live<B: FrozenOps>(
    backbone: &AnyBackbone<B>,
    tokenizer: &TextTokenizer,
    set: &AdapterSet<B>,
    policy: &BatchPolicy,
    work: GenerateWork,
) -> Result<Admitted<B>, Refused> {
    let fail = |e: ApiError| (work.events.clone(), e);
    let decoder = decoder_of(backbone).map_err(fail)?;
    let (adapter_id, prompt, separator) = match &work.adapter {
        None => (None, None, String::new()),
        Some(name) => {
            let served = set.adapters.get(name).ok_or_else(|| {
                fail(ApiError::UnknownAdapter {
                    name: name.clone(),
                    known: set.adapters.keys().cloned().collect(),
                })
            })?;
            if served.info.task != TaskKind::Generate {
                return Err(fail(ApiError::WrongTask {
                    adapter: name.clone(),
                    task: served.info.task,
                    endpoint: "generate",
                }));
            }
            (
                Some(served.id),
                Some(served.prompt.clone()),
                served.info.separator.clone().unwrap_or_default(),
            )
        }
    };
    let options = &work.options;
    if options.max_new_tokens > policy.max_new_tokens {
        return Err(fail(ApiError::BadInput(format!(
            "max_tokens {} is over this server's limit of {}",
            options.max_new_tokens, policy.max_new_tokens
        ))));
    }
    let source = tokenizer
        .encode_plain(&format!("{}{separator}", work.prompt))
        .map_err(|e| fail(ApiError::BadInput(format!("prompt: {e}"))))?;
    if source.is_empty() {
        return Err(fail(ApiError::BadInput("the prompt has no tokens".into())));
    }
    // Every position the request will use must be in the model's position table (the last new
    // token is chosen, never fed back).
    let virtual_tokens = prompt.as_ref().map_or(0, |p| p.spec.num_virtual_tokens);
    let max_positions = decoder.dims().max_positions;
    let needed = virtual_tokens + source.len() + options.max_new_tokens.saturating_sub(1);
    if needed > max_positions {
        return Err(fail(ApiError::TooLongPrompt {
            tokens: source.len(),
            virtual_tokens,
            max_tokens: options.max_new_tokens,
            max: max_positions,
        }));
    }
    if options.max_new_tokens == 0 {
        let _ = work.events.send(GenEvent::Done(Generated {
            text: String::new(),
            tokens: 0,
            finish_reason: FinishReason::Length,
        }));
        return Ok(Admitted::Finished);
    }
    if matches!(options.decoding, Decoding::Beam { .. }) {
        return Ok(Admitted::Alone(Box::new((work, prompt, separator))));
    }
    let chooser = TokenChooser::new(&options.decoding)
        .map_err(|e| fail(ApiError::BadInput(e.to_string())))?;
    let penalty = options.repetition_penalty;
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(fail(ApiError::BadInput(format!(
            "repetition_penalty must be a positive number, not {penalty}"
        ))));
    }
    Ok(Admitted::Row(Box::new(Live {
        adapter: adapter_id,
        adapter_name: work.adapter.clone(),
        prompt,
        source,
        out: Vec::new(),
        chooser,
        penalty,
        max_new: options.max_new_tokens,
        eos: decoder.eos_token_id(),
        text: StopText::new(&options.stop),
        events: work.events,
        done: false,
        prefix_cached: false,
    })))
}

/// A beam-search request, decoded on its own.
fn run_alone<B: FrozenOps>(
    backbone: &AnyBackbone<B>,
    tokenizer: &TextTokenizer,
    prompt: Option<&SoftPrompt<B>>,
    separator: &str,
    work: GenerateWork,
) {
    let events = work.events.clone();
    let result = generate_text(
        backbone,
        tokenizer,
        prompt,
        separator,
        &work.prompt,
        &work.options,
        &mut |piece| {
            let _ = events.send(GenEvent::Text(piece.to_string()));
        },
    );
    let event = match result {
        Ok(text) => {
            // Beam search returns its best hypothesis: its length says whether it ran to the limit.
            let tokens = tokenizer.encode_plain(&text).map_or(0, |t| t.len());
            let finish_reason = if tokens >= work.options.max_new_tokens {
                FinishReason::Length
            } else {
                FinishReason::Eos
            };
            GenEvent::Done(Generated { text, tokens, finish_reason })
        }
        Err(e) => GenEvent::Failed(ApiError::BadInput(e.to_string())),
    };
    let _ = work.events.send(event);
}

fn decoder_of<B: FrozenOps>(backbone: &AnyBackbone<B>) -> Result<&dyn Decoder<B>, ApiError> {
    backbone.as_decoder().ok_or_else(|| ApiError::NotADecoder(backbone.family().to_string()))
}

/// The distinct soft prompts of some rows (by adapter id) and each row's place among them; with
/// `steps`, what a decoding step must pass: rows whose prefix is in the cache count as none.
fn adapters_of<'a, B: FrozenOps + 'a>(
    rows: impl Iterator<Item = &'a Live<B>>,
    steps: bool,
) -> (Vec<&'a SoftPrompt<B>>, Vec<Option<usize>>) {
    let mut ids: Vec<u64> = Vec::new();
    let mut prompts: Vec<&SoftPrompt<B>> = Vec::new();
    let mut map = Vec::new();
    for live in rows {
        if steps && live.prefix_cached {
            map.push(None);
            continue;
        }
        match (&live.adapter, &live.prompt) {
            (Some(id), Some(prompt)) => {
                let i = match ids.iter().position(|n| n == id) {
                    Some(i) => i,
                    None => {
                        ids.push(*id);
                        prompts.push(prompt);
                        prompts.len() - 1
                    }
                };
                map.push(Some(i));
            }
            _ => map.push(None),
        }
    }
    (prompts, map)
}
