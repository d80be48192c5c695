//! The engine: one thread that owns the frozen backbone and the adapters, and a scheduler in front
//! of it. Requests wait in a bounded queue; the engine takes the first, gathers whatever else
//! arrives within `max_wait` (up to `max_batch` rows), and runs the rows of every adapter together
//! in ONE forward of the backbone (`ptune_prompt::prepare_mixed`: each row gets its own prompt or
//! prefix, positions and mask, so its output is the one it would get alone), then applies each
//! adapter's pooling and head to its own rows and answers each request with its rows only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;
use ptune_prompt::{prepare_mixed, SoftPrompt};
use ptune_train::classify::pool_hidden;
use ptune_train::inference::{load_backbone, Prediction};
use ptune_train::{Pooling, TaskKind};
use ptune_transformer::{index_tensor, AnyBackbone, Backbone, FrozenOps, TextTokenizer};
use tokio::sync::oneshot;

use crate::adapters::{AdapterSet, AdapterSummary, Skipped};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A piece of work for the engine.
pub enum Work {
    /// Label `texts` with `adapter`.
    Classify {
        /// The adapter's name.
        adapter: String,
        /// The texts.
        texts: Vec<String>,
        /// When the request entered the queue.
        queued: Instant,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<Prediction>, ApiError>>,
    },
    /// Rescan the adapters folder.
    Reload {
        /// Where the new listing goes.
        reply: oneshot::Sender<Result<Listing, ApiError>>,
    },
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
    /// Most rows in one forward.
    pub max_batch: usize,
    /// Longest wait for more requests once one has arrived.
    pub max_wait: Duration,
}

/// A classification request as the engine holds it: adapter, texts, when queued, reply.
type Request = (String, Vec<String>, Instant, oneshot::Sender<Result<Vec<Prediction>, ApiError>>);

/// What one round of gathering took from the queue.
#[derive(Default)]
struct Gathered {
    batch: Vec<Request>,
    rows: usize,
    reloads: Vec<oneshot::Sender<Result<Listing, ApiError>>>,
}

impl Gathered {
    fn take(&mut self, work: Work) {
        match work {
            Work::Classify { adapter, texts, queued, reply } => {
                self.rows += texts.len();
                self.batch.push((adapter, texts, queued, reply));
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
        let set = AdapterSet::scan(&dir, &backbone, &device)?;
        let engine = Self { backbone, tokenizer, device, dir, set, policy, listing, metrics };
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

    /// Serves work until every sender is gone.
    pub fn run(mut self, queue: Receiver<Work>) {
        while let Ok(first) = queue.recv() {
            let mut gathered = Gathered::default();
            gathered.take(first);
            let deadline = Instant::now() + self.policy.max_wait;
            // A reload ends the gathering: it runs after the requests queued before it.
            while gathered.rows < self.policy.max_batch && gathered.reloads.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                match queue.recv_timeout(left) {
                    Ok(work) => gathered.take(work),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            if !gathered.batch.is_empty() {
                self.classify_batch(gathered.batch);
            }
            for reply in gathered.reloads {
                let _ = reply.send(self.reload());
            }
        }
    }

    fn reload(&mut self) -> Result<Listing, ApiError> {
        let set = AdapterSet::scan(&self.dir, &self.backbone, &self.device)
            .map_err(ApiError::Internal)?;
        self.set = set;
        self.publish();
        Ok(self.listing.read().map(|l| l.clone()).unwrap_or_default())
    }

    /// Answers classification requests; rows of every adapter run in shared forwards.
    fn classify_batch(&self, batch: Vec<Request>) {
        // Each request's rows, or its error (unknown adapter, wrong task, a text without tokens).
        let mut rows: Vec<(usize, usize, Vec<u32>)> = Vec::new(); // (request, adapter, ids)
        let names: Vec<&String> = self.set.adapters.keys().collect();
        let mut answers: Vec<Option<Result<Vec<Vec<f32>>, ApiError>>> = Vec::new();
        for (r, (adapter, texts, queued, _)) in batch.iter().enumerate() {
            self.metrics.queue_wait(queued.elapsed());
            let prepared = self.rows_of(adapter, texts, &names);
            match prepared {
                Ok((a, ids)) => {
                    answers.push(Some(Ok(vec![Vec::new(); ids.len()])));
                    rows.extend(ids.into_iter().map(|ids| (r, a, ids)));
                }
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        // Row index within its request, in order.
        let mut within = vec![0usize; batch.len()];
        let mut slots = Vec::with_capacity(rows.len());
        for (r, _, _) in &rows {
            if let Some(w) = within.get_mut(*r) {
                slots.push(*w);
                *w += 1;
            }
        }
        for (chunk, chunk_slots) in rows
            .chunks(self.policy.max_batch.max(1))
            .zip(slots.chunks(self.policy.max_batch.max(1)))
        {
            self.metrics.batch(chunk.len());
            let adapters: Vec<&crate::adapters::ServedAdapter<B>> = chunk
                .iter()
                .filter_map(|(_, a, _)| names.get(*a).and_then(|n| self.set.adapters.get(*n)))
                .collect();
            let result = if adapters.len() == chunk.len() {
                classify_rows(&self.backbone, &adapters, chunk)
            } else {
                Err(ApiError::Internal("an adapter vanished mid-batch".into()))
            };
            match result {
                Ok(probs) => {
                    for ((r, _, _), (slot, p)) in chunk.iter().zip(chunk_slots.iter().zip(probs)) {
                        if let Some(Some(Ok(out))) = answers.get_mut(*r) {
                            if let Some(s) = out.get_mut(*slot) {
                                *s = p;
                            }
                        }
                    }
                }
                Err(e) => {
                    for (r, _, _) in chunk {
                        if let Some(answer) = answers.get_mut(*r) {
                            *answer = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
        for ((adapter, _, _, reply), answer) in batch.into_iter().zip(answers) {
            let answer = answer.unwrap_or_else(|| Err(ApiError::Internal("no answer".into())));
            let labels = self.set.adapters.get(&adapter).map(|a| a.info.labels.clone());
            let _ = reply.send(answer.and_then(|probs| {
                let labels = labels.unwrap_or_default();
                probs.into_iter().map(|scores| prediction(&labels, scores)).collect()
            }));
        }
    }

    /// The adapter index and the token rows of one request, cut to the adapter's longest input
    /// as `ptune predict` does.
    fn rows_of(
        &self,
        adapter: &str,
        texts: &[String],
        names: &[&String],
    ) -> Result<(usize, Vec<Vec<u32>>), ApiError> {
        let a = names.iter().position(|n| n.as_str() == adapter).ok_or_else(|| {
            ApiError::UnknownAdapter {
                name: adapter.to_string(),
                known: names.iter().map(|n| n.to_string()).collect(),
            }
        })?;
        let served = self
            .set
            .adapters
            .get(adapter)
            .ok_or_else(|| ApiError::Internal("adapter listing out of date".into()))?;
        if served.info.task != TaskKind::Classify {
            return Err(ApiError::WrongTask {
                adapter: adapter.to_string(),
                task: served.info.task,
                endpoint: "classify",
            });
        }
        let ids = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let ids = self
                    .tokenizer
                    .encode(t)
                    .map_err(|e| ApiError::BadInput(format!("inputs[{i}]: {e}")))?;
                if ids.is_empty() {
                    return Err(ApiError::BadInput(format!("inputs[{i}] has no tokens")));
                }
                Ok(ptune_data::tasks::truncate(ids, served.info.max_len, true))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((a, ids))
    }
}

fn prediction(labels: &[String], scores: Vec<f32>) -> Result<Prediction, ApiError> {
    let index = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let label = labels
        .get(index)
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("label {index} of {}", labels.len())))?;
    Ok(Prediction { label, index, scores })
}

/// Every label's probability for each row, the rows of all adapters in one forward.
///
/// # Shapes
/// - rows: `b` token rows, `adapters[i]` the adapter of row `i` → `b` vectors of that adapter's
///   label count
pub fn classify_rows<B: FrozenOps>(
    backbone: &dyn Backbone<B>,
    adapters: &[&crate::adapters::ServedAdapter<B>],
    rows: &[(usize, usize, Vec<u32>)],
) -> Result<Vec<Vec<f32>>, ApiError> {
    // The distinct adapters, each row mapped to its place among them.
    let mut distinct: Vec<&crate::adapters::ServedAdapter<B>> = Vec::new();
    let mut map = Vec::with_capacity(rows.len());
    for a in adapters {
        let i = match distinct.iter().position(|d| std::ptr::eq(*d, *a)) {
            Some(i) => i,
            None => {
                distinct.push(a);
                distinct.len() - 1
            }
        };
        map.push(i);
    }
    let prompts: Vec<&SoftPrompt<B>> = distinct.iter().map(|a| &a.prompt).collect();
    let ids: Vec<Vec<u32>> = rows.iter().map(|(_, _, ids)| ids.clone()).collect();
    let internal = |e: String| ApiError::Internal(e);
    let batch =
        prepare_mixed(backbone, &prompts, Some(&map), &ids).map_err(|e| internal(e.to_string()))?;
    let hidden = backbone.forward(batch.input.clone()).map_err(|e| internal(e.to_string()))?;
    let device = hidden.device();
    // Each pooling the batch needs, once over all rows.
    let mut pooled: BTreeMap<u8, Tensor<B, 2>> = BTreeMap::new();
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
    for (d, adapter) in distinct.iter().enumerate() {
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
        let mine: Vec<usize> = (0..rows.len()).filter(|&r| map.get(r) == Some(&d)).collect();
        let head = adapter
            .head
            .as_ref()
            .ok_or_else(|| internal(format!("adapter {} has no head", adapter.name)))?;
        let logits = head.forward(all.select(0, index_tensor::<B>(&mine, &device)));
        let [b, n] = logits.dims();
        let probs = softmax(logits, 1)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| internal(format!("reading probabilities: {e:?}")))?;
        for (r, p) in mine.iter().zip(probs.chunks(n.max(1)).take(b)) {
            if let Some(slot) = out.get_mut(*r) {
                *slot = p.to_vec();
            }
        }
    }
    Ok(out)
}
