//! The engine: one thread that owns the frozen backbone and the adapters, and a scheduler in front
//! of it. Requests wait in a bounded queue; the engine takes the first, gathers whatever else
//! arrives within `max_wait` (up to `max_batch` rows), and runs the rows of every adapter together
//! in ONE forward of the backbone (`ptune_prompt::prepare_rows`: each row gets its own prompt or
//! prefix, positions and mask, so its output is the one it would get alone): classification and
//! tagging rows share their forwards, then each adapter's pooling and head read its own rows.
//! Generation runs as continuous batching ([`crate::decode`]): between two decoding steps of the
//! running rows, new requests are read from the queue, encoder work is answered and new
//! generations join the batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;
use ptune_data::tagging::{tokenize_tagging, words_of, TaggedSentence};
use ptune_prompt::{prepare_rows, SoftPrompt};
use ptune_train::classify::pool_hidden;
use ptune_train::inference::{load_backbone, Prediction, TaggedWord};
use ptune_train::run::templated;
use ptune_train::{Pooling, TaskKind};
use ptune_transformer::{index_tensor, rows_at, AnyBackbone, Backbone, FrozenOps, TextTokenizer};
use tokio::sync::oneshot;

use crate::adapters::{AdapterSet, AdapterSummary, ServedAdapter, Skipped};
use crate::decode::{Batcher, GenerateWork};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A piece of work for the engine.
pub enum Work {
    /// Label `texts` with a classification adapter.
    Classify(EncodeWork<Vec<Prediction>>),
    /// Tag the words of `texts` with a token-classification adapter.
    Tag(EncodeWork<Vec<Vec<TaggedWord>>>),
    /// Continue a text (continuous batching).
    Generate(GenerateWork),
    /// Rescan the adapters folder.
    Reload {
        /// Where the new listing goes.
        reply: oneshot::Sender<Result<Listing, ApiError>>,
    },
}

/// A classification or tagging request.
pub struct EncodeWork<T> {
    /// The adapter's name.
    pub adapter: String,
    /// The texts.
    pub texts: Vec<String>,
    /// Cut texts longer than the adapter's longest input instead of refusing them.
    pub truncate: bool,
    /// When the request entered the queue.
    pub queued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<T, ApiError>>,
}

/// The adapters loaded, and the folders skipped.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Listing {
    /// Loaded adapters.
    pub adapters: Vec<AdapterSummary>,
    /// Folders that did not load, with the reason.
    pub skipped: Vec<Skipped>,
}

/// How the engine batches.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// Most rows in one forward (and most generations decoding together).
    pub max_batch: usize,
    /// Longest wait for more requests once one has arrived.
    pub max_wait: Duration,
    /// Most new tokens one generation request may ask for.
    pub max_new_tokens: usize,
    /// Rows of different adapters share forwards (the default). `false` runs one adapter at a
    /// time, as a server that switches its active adapter must: the baseline of
    /// `cargo xtask bench-serve`.
    pub mixed: bool,
}

/// What one round of reading the queue took from it.
#[derive(Default)]
struct Gathered {
    classify: Vec<EncodeWork<Vec<Prediction>>>,
    tag: Vec<EncodeWork<Vec<Vec<TaggedWord>>>>,
    generate: Vec<GenerateWork>,
    rows: usize,
    reloads: Vec<oneshot::Sender<Result<Listing, ApiError>>>,
}

impl Gathered {
    fn take(&mut self, work: Work) {
        match work {
            Work::Classify(w) => {
                self.rows += w.texts.len();
                self.classify.push(w);
            }
            Work::Tag(w) => {
                self.rows += w.texts.len();
                self.tag.push(w);
            }
            Work::Generate(w) => {
                self.rows += 1;
                self.generate.push(w);
            }
            Work::Reload { reply } => self.reloads.push(reply),
        }
    }
}

/// The engine's state, owned by its thread.
pub struct Engine<B: FrozenOps> {
    backbone: AnyBackbone<B>,
    tokenizer: TextTokenizer,
    device: B::Device,
    dir: PathBuf,
    set: AdapterSet<B>,
    policy: BatchPolicy,
    listing: Arc<RwLock<Listing>>,
    metrics: Arc<Metrics>,
    batcher: Batcher<B>,
}

/// One text row of an encoder batch: whose it is and what to read from the output.
struct EncodeRow {
    /// Request index (classify requests first, then tag requests).
    request: usize,
    /// Row within the request.
    slot: usize,
    /// Adapter name.
    adapter: String,
    ids: Vec<u32>,
    /// Tag rows: each kept word's first piece among the text tokens.
    word_starts: Option<Vec<usize>>,
}

/// What an encoder row produced: label probabilities, or per word the tag probabilities.
enum RowOut {
    Scores(Vec<f32>),
    Words(Vec<Vec<f32>>),
}

impl<B: FrozenOps> Engine<B> {
    /// Loads `model` and every adapter under `dir`; publishes the listing.
    pub fn load(
        model: &str,
        dir: PathBuf,
        policy: BatchPolicy,
        listing: Arc<RwLock<Listing>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let device = B::Device::default();
        let (backbone, tokenizer) =
            load_backbone::<B>(model, &device).map_err(|e| e.to_string())?;
        let set = AdapterSet::scan(&dir, &backbone, &tokenizer, &device)?;
        let batcher = Batcher::new(policy.max_batch, metrics.clone());
        let engine =
            Self { backbone, tokenizer, device, dir, set, policy, listing, metrics, batcher };
        engine.publish();
        Ok(engine)
    }

    fn publish(&self) {
        let listing = Listing {
            adapters: self.set.adapters.values().map(|a| a.summary()).collect(),
            skipped: self.set.skipped.clone(),
        };
        if let Ok(mut l) = self.listing.write() {
            *l = listing;
        }
    }

    /// Serves work until every sender is gone and the running generations have finished.
    pub fn run(mut self, queue: Receiver<Work>) {
        let mut open = true;
        loop {
            let mut gathered = Gathered::default();
            if self.batcher.is_idle() {
                if !open {
                    break;
                }
                match queue.recv() {
                    Ok(first) => gathered.take(first),
                    Err(_) => break,
                }
                let deadline = Instant::now() + self.policy.max_wait;
                // A reload ends the gathering: it runs after the requests queued before it.
                while gathered.rows < self.policy.max_batch && gathered.reloads.is_empty() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match queue.recv_timeout(left) {
                        Ok(work) => gathered.take(work),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            } else {
                // Generations are running: take what is waiting, without waiting for more.
                while open && gathered.reloads.is_empty() {
                    match queue.try_recv() {
                        Ok(work) => gathered.take(work),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => open = false,
                    }
                }
            }
            // A fault in this round (a panic in a tensor op) fails the requests it holds, with a
            // 500 each, and the server goes on.
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.round(gathered);
            }));
            if round.is_err() {
                tracing::error!("the engine failed on a batch; its requests were answered 500");
                self.batcher = Batcher::new(self.policy.max_batch, self.metrics.clone());
            }
        }
    }

    /// Serves what one round of reading the queue took, then one decoding step.
    fn round(&mut self, gathered: Gathered) {
        let Gathered { classify, tag, generate, reloads, .. } = gathered;
        if !classify.is_empty() || !tag.is_empty() {
            self.encode_batch(classify, tag);
        }
        for work in generate {
            self.batcher.submit(work);
        }
        for reply in reloads {
            let _ = reply.send(self.reload());
        }
        self.batcher.admit(&self.backbone, &self.tokenizer, &self.set, &self.policy);
        self.batcher.step(&self.backbone, &self.tokenizer);
    }

    fn reload(&mut self) -> Result<Listing, ApiError> {
        let set = AdapterSet::scan(&self.dir, &self.backbone, &self.tokenizer, &self.device)
            .map_err(ApiError::Internal)?;
        self.set = set;
        self.publish();
        Ok(self.listing.read().map(|l| l.clone()).unwrap_or_default())
    }

    /// Answers classification and tagging requests; the rows of every adapter run in shared
    /// forwards of at most `max_batch` rows.
    fn encode_batch(
        &self,
        classify: Vec<EncodeWork<Vec<Prediction>>>,
        tag: Vec<EncodeWork<Vec<Vec<TaggedWord>>>>,
    ) {
        // Each request's rows, or its error (unknown adapter, wrong task, a text too long).
        let mut rows: Vec<EncodeRow> = Vec::new();
        let mut failed: Vec<Option<ApiError>> = Vec::new();
        let mut words: Vec<Vec<Vec<String>>> = Vec::new(); // per tag request, per text
        for w in &classify {
            self.metrics.queue_wait(w.queued.elapsed());
            let r = failed.len();
            match self.classify_rows_of(&w.adapter, &w.texts, w.truncate) {
                Ok(ids) => {
                    failed.push(None);
                    rows.extend(ids.into_iter().enumerate().map(|(slot, ids)| EncodeRow {
                        request: r,
                        slot,
                        adapter: w.adapter.clone(),
                        ids,
                        word_starts: None,
                    }));
                }
                Err(e) => failed.push(Some(e)),
            }
            words.push(Vec::new());
        }
        for w in &tag {
            self.metrics.queue_wait(w.queued.elapsed());
            let r = failed.len();
            match self.tag_rows_of(&w.adapter, &w.texts, w.truncate) {
                Ok((examples, text_words)) => {
                    failed.push(None);
                    rows.extend(examples.into_iter().enumerate().map(|(slot, (ids, starts))| {
                        EncodeRow {
                            request: r,
                            slot,
                            adapter: w.adapter.clone(),
                            ids,
                            word_starts: Some(starts),
                        }
                    }));
                    words.push(text_words);
                }
                Err(e) => {
                    failed.push(Some(e));
                    words.push(Vec::new());
                }
            }
        }
        let n_requests = failed.len();
        let mut outs: Vec<Vec<Option<RowOut>>> = (0..n_requests)
            .map(|r| {
                let n = classify
                    .get(r)
                    .map(|w| w.texts.len())
                    .or_else(|| tag.get(r - classify.len()).map(|w| w.texts.len()))
                    .unwrap_or(0);
                (0..n).map(|_| None).collect()
            })
            .collect();
        // Rows are grouped, in order of first arrival, and a forward never crosses groups. Mixed
        // batching groups by the kind of prompt (input-level virtual tokens, or prefixes), so
        // rows of any adapters share forwards without padding prefix rows to the length of
        // prompted ones; one adapter at a time groups by adapter.
        let key = |row: &EncodeRow| -> String {
            if self.policy.mixed {
                let input_level = self
                    .set
                    .adapters
                    .get(&row.adapter)
                    .is_some_and(|a| a.prompt.spec.method.is_input_level());
                (if input_level { "input" } else { "prefix" }).to_string()
            } else {
                row.adapter.clone()
            }
        };
        let keys: Vec<String> = rows.iter().map(key).collect();
        let mut order: Vec<&str> = Vec::new();
        for k in &keys {
            if !order.contains(&k.as_str()) {
                order.push(k);
            }
        }
        let rank: Vec<usize> =
            keys.iter().map(|k| order.iter().position(|o| o == k).unwrap_or(0)).collect();
        let mut ranked: Vec<(usize, EncodeRow)> = rank.into_iter().zip(rows).collect();
        ranked.sort_by_key(|(r, _)| *r); // stable: arrival order within a group
        let max = self.policy.max_batch.max(1);
        let mut chunks: Vec<Vec<EncodeRow>> = Vec::new();
        let mut last_rank = usize::MAX;
        for (r, row) in ranked {
            match chunks.last_mut() {
                Some(chunk) if r == last_rank && chunk.len() < max => chunk.push(row),
                _ => chunks.push(vec![row]),
            }
            last_rank = r;
        }
        for chunk in &chunks {
            self.metrics.batch(chunk.len());
            match self.encode_rows(chunk) {
                Ok(results) => {
                    for (row, out) in chunk.iter().zip(results) {
                        if let Some(slot) =
                            outs.get_mut(row.request).and_then(|o| o.get_mut(row.slot))
                        {
                            *slot = Some(out);
                        }
                    }
                }
                Err(e) => {
                    for row in chunk {
                        if let Some(f) = failed.get_mut(row.request) {
                            f.get_or_insert_with(|| e.clone());
                        }
                    }
                }
            }
        }
        let mut outs = outs.into_iter();
        let mut failed = failed.into_iter();
        let mut words = words.into_iter();
        for w in classify {
            let (out, fail) = (outs.next().unwrap_or_default(), failed.next().flatten());
            let _ = words.next();
            let labels = self.labels_of(&w.adapter);
            let answer = match fail {
                Some(e) => Err(e),
                None => out
                    .into_iter()
                    .map(|o| match o {
                        Some(RowOut::Scores(scores)) => Prediction::from_scores(&labels, scores)
                            .map_err(|e| ApiError::Internal(e.to_string())),
                        _ => Err(ApiError::Internal("a row without an answer".into())),
                    })
                    .collect(),
            };
            let _ = w.reply.send(answer);
        }
        for w in tag {
            let (out, fail) = (outs.next().unwrap_or_default(), failed.next().flatten());
            let text_words = words.next().unwrap_or_default();
            let labels = self.labels_of(&w.adapter);
            let answer = match fail {
                Some(e) => Err(e),
                None => out
                    .into_iter()
                    .zip(text_words)
                    .map(|(o, ws)| match o {
                        Some(RowOut::Words(probs)) => Ok(ws
                            .into_iter()
                            .zip(probs)
                            .map(|(word, p)| {
                                let i = argmax(&p);
                                TaggedWord {
                                    word,
                                    tag: labels.get(i).cloned().unwrap_or_else(|| "O".into()),
                                }
                            })
                            .collect()),
                        _ => Err(ApiError::Internal("a row without an answer".into())),
                    })
                    .collect(),
            };
            let _ = w.reply.send(answer);
        }
    }

    fn labels_of(&self, adapter: &str) -> Vec<String> {
        self.set.adapters.get(adapter).map(|a| a.info.labels.clone()).unwrap_or_default()
    }

    /// The adapter of a request, checked against the endpoint's task.
    fn adapter_for(
        &self,
        adapter: &str,
        task: TaskKind,
        endpoint: &'static str,
    ) -> Result<&ServedAdapter<B>, ApiError> {
        let served = self.set.adapters.get(adapter).ok_or_else(|| ApiError::UnknownAdapter {
            name: adapter.to_string(),
            known: self.set.adapters.keys().cloned().collect(),
        })?;
        if served.info.task != task {
            return Err(ApiError::WrongTask {
                adapter: adapter.to_string(),
                task: served.info.task,
                endpoint,
            });
        }
        Ok(served)
    }

    /// The longest input an adapter reads: its run's longest input, within what the model's
    /// position table leaves after the adapter's virtual tokens.
    fn longest_input(&self, served: &ServedAdapter<B>) -> usize {
        let positions = self.backbone.dims().max_positions;
        served.info.longest_input(served.prompt.spec.num_virtual_tokens, positions)
    }

    /// The token rows of a classification request; a text longer than the adapter's longest
    /// input is refused, or cut as `ptune predict` cuts it when the request says `truncate`.
    fn classify_rows_of(
        &self,
        adapter: &str,
        texts: &[String],
        truncate: bool,
    ) -> Result<Vec<Vec<u32>>, ApiError> {
        let served = match self.adapter_for(adapter, TaskKind::Classify, "classify") {
            Err(ApiError::WrongTask { task: TaskKind::Cloze, .. }) => {
                self.adapter_for(adapter, TaskKind::Cloze, "classify")?
            }
            other => other?,
        };
        let max_len = self.longest_input(served);
        let template = match (served.info.task, &served.info.cloze_template) {
            (TaskKind::Cloze, Some(t)) => Some(t.as_str()),
            _ => None,
        };
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // Cloze adapters read the text inside their template, as `ptune predict` does.
                let text = template.map_or_else(|| t.clone(), |tpl| templated(tpl, t));
                let ids = self
                    .tokenizer
                    .encode(&text)
                    .map_err(|e| ApiError::BadInput(format!("inputs[{i}]: {e}")))?;
                if ids.is_empty() {
                    return Err(ApiError::BadInput(format!("inputs[{i}] has no tokens")));
                }
                if ids.len() > max_len && !truncate {
                    return Err(ApiError::TooLong {
                        input: i,
                        tokens: ids.len(),
                        adapter: adapter.to_string(),
                        max: max_len,
                    });
                }
                Ok(ptune_data::tasks::truncate(ids, max_len, true))
            })
            .collect()
    }

    /// The token rows of a tagging request and each text's words (those that fit), tokenized
    /// as `ptune predict` tokenizes them.
    #[allow(clippy::type_complexity)]
    fn tag_rows_of(
        &self,
        adapter: &str,
        texts: &[String],
        truncate: bool,
    ) -> Result<(Vec<(Vec<u32>, Vec<usize>)>, Vec<Vec<String>>), ApiError> {
        let served = self.adapter_for(adapter, TaskKind::Tag, "tag")?;
        let info = &served.info;
        let max_len = self.longest_input(served);
        let sentences: Vec<TaggedSentence> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let words = words_of(t);
                let tags = vec!["O".to_string(); words.len()];
                TaggedSentence { words, tags, line: i + 1 }
            })
            .collect();
        if let Some(i) = sentences.iter().position(|s| s.words.is_empty()) {
            return Err(ApiError::BadInput(format!("inputs[{i}] has no words")));
        }
        let examples = tokenize_tagging(
            &sentences,
            &info.labels,
            &self.tokenizer,
            max_len,
            std::path::Path::new("<request>"),
        )
        .map_err(|e| ApiError::BadInput(e.to_string()))?;
        let mut rows = Vec::with_capacity(examples.len());
        let mut words = Vec::with_capacity(examples.len());
        for (i, (e, s)) in examples.into_iter().zip(sentences).enumerate() {
            if e.word_starts.len() < s.words.len() && !truncate {
                return Err(ApiError::TooLong {
                    input: i,
                    tokens: self.tokenizer.encode(&s.words.join(" ")).map_or(0, |t| t.len()),
                    adapter: adapter.to_string(),
                    max: max_len,
                });
            }
            let kept = e.word_starts.len();
            words.push(s.words.into_iter().take(kept).collect());
            rows.push((e.ids, e.word_starts));
        }
        Ok((rows, words))
    }

    /// One forward for rows of any adapters: label probabilities for classification rows, tag
    /// probabilities per word for tagging rows.
    ///
    /// # Shapes
    /// - rows: `b` token rows → `b` outputs
    fn encode_rows(&self, rows: &[EncodeRow]) -> Result<Vec<RowOut>, ApiError> {
        let internal = |e: String| ApiError::Internal(e);
        // The distinct adapters, each row mapped to its place among them.
        let mut distinct: Vec<&ServedAdapter<B>> = Vec::new();
        let mut map = Vec::with_capacity(rows.len());
        for row in rows {
            let a = self
                .set
                .adapters
                .get(&row.adapter)
                .ok_or_else(|| internal(format!("adapter {} vanished", row.adapter)))?;
            let i = match distinct.iter().position(|d| std::ptr::eq(*d, a)) {
                Some(i) => i,
                None => {
                    distinct.push(a);
                    distinct.len() - 1
                }
            };
            map.push(Some(i));
        }
        let prompts: Vec<&SoftPrompt<B>> = distinct.iter().map(|a| &a.prompt).collect();
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
        let backbone: &dyn Backbone<B> = &self.backbone;
        let batch = prepare_rows(backbone, &prompts, &map, &ids)
            .map_err(|e| ApiError::BadInput(e.to_string()))?;
        let hidden = backbone.forward(batch.input.clone()).map_err(|e| internal(e.to_string()))?;
        let mut out: Vec<Option<RowOut>> = rows.iter().map(|_| None).collect();
        let mut pooled: BTreeMap<u8, Tensor<B, 2>> = BTreeMap::new();
        let mut stripped: Option<Tensor<B, 3>> = None;
        let mut lengths: Option<Vec<usize>> = None;
        for (d, adapter) in distinct.iter().enumerate() {
            let mine: Vec<usize> =
                (0..rows.len()).filter(|&r| map.get(r) == Some(&Some(d))).collect();
            if adapter.info.task == TaskKind::Cloze {
                // The decoder's next-token logits after each row's last slot (the end of the
                // template), restricted to the verbalizer's words, as `cloze_logits` computes.
                let decoder = backbone
                    .as_decoder()
                    .ok_or_else(|| internal("a cloze adapter on an encoder".into()))?;
                if lengths.is_none() {
                    lengths = Some(batch.row_lengths().map_err(|e| internal(e.to_string()))?);
                }
                let s = hidden.dims()[1];
                let index: Vec<usize> = mine
                    .iter()
                    .map(|&r| {
                        let n = lengths.as_ref().and_then(|l| l.get(r)).copied().unwrap_or(1);
                        r * s + n.max(1) - 1
                    })
                    .collect();
                let logits = decoder.logits_at(hidden.clone(), &index);
                let words = &adapter.verbalizer;
                let cols = ptune_transformer::ids_tensor::<B>(words, &logits.device())
                    .reshape([words.len()]);
                for (&r, p) in mine.iter().zip(probabilities(logits.select(1, cols))?) {
                    if let Some(slot) = out.get_mut(r) {
                        *slot = Some(RowOut::Scores(p));
                    }
                }
                continue;
            }
            let head = adapter
                .head
                .as_ref()
                .ok_or_else(|| internal(format!("adapter {} has no head", adapter.name)))?;
            if adapter.info.task == TaskKind::Tag {
                let text = match &stripped {
                    Some(t) => t.clone(),
                    None => {
                        let t = batch.strip_virtual(hidden.clone());
                        stripped = Some(t.clone());
                        t
                    }
                };
                let l = text.dims()[1];
                let mut index = Vec::new();
                let mut counts = Vec::new();
                for &r in &mine {
                    let starts = rows.get(r).and_then(|row| row.word_starts.as_ref());
                    let starts = starts.map(Vec::as_slice).unwrap_or_default();
                    index.extend(starts.iter().map(|&s| r * l + s));
                    counts.push(starts.len());
                }
                let probs = probabilities(head.forward(rows_at(text, &index)))?;
                let mut at = probs.into_iter();
                for (&r, n) in mine.iter().zip(counts) {
                    if let Some(slot) = out.get_mut(r) {
                        *slot = Some(RowOut::Words(at.by_ref().take(n).collect()));
                    }
                }
            } else {
                let key = match adapter.pooling() {
                    Pooling::Pooler => 0,
                    Pooling::Cls => 1,
                    Pooling::Mean => 2,
                };
                let all = match pooled.get(&key) {
                    Some(t) => t.clone(),
                    None => {
                        let t = pool_hidden(backbone, &batch, hidden.clone(), adapter.pooling())
                            .map_err(|e| ApiError::BadInput(e.to_string()))?;
                        pooled.insert(key, t.clone());
                        t
                    }
                };
                let device = all.device();
                let logits = head.forward(all.select(0, index_tensor::<B>(&mine, &device)));
                for (&r, p) in mine.iter().zip(probabilities(logits)?) {
                    if let Some(slot) = out.get_mut(r) {
                        *slot = Some(RowOut::Scores(p));
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| internal("a row was not computed".into())))
            .collect()
    }
}

/// Row-wise softmax, on the host.
///
/// # Shapes
/// - logits: `[n, k]` → `n` vectors of `k`
fn probabilities<B: FrozenOps>(logits: Tensor<B, 2>) -> Result<Vec<Vec<f32>>, ApiError> {
    let [n, k] = logits.dims();
    let flat = softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| ApiError::Internal(format!("reading probabilities: {e:?}")))?;
    Ok(flat.chunks(k.max(1)).take(n).map(<[f32]>::to_vec).collect())
}

fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}
