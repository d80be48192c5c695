//! Counters for `GET /metrics`, in Prometheus' text format: requests by endpoint and status,
//! rows per forward, time in the queue, request latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency and queue-time histogram buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Upper bounds of the batch-size histogram buckets (rows per forward or decoding step).
const SIZES: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A cumulative histogram over `bounds` (seconds or rows).
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], count: 0, sum: 0.0 }
    }

    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (c, b) in self.counts.iter().zip(self.bounds) {
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {c}\n"));
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!("{name}_sum {}\n{name}_count {}\n", self.sum, self.count));
    }
}

/// The server's counters (shared by the HTTP handlers and the engine).
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<Histogram>,
    queue: Mutex<Histogram>,
    sizes: Mutex<Histogram>,
    forwards: AtomicU64,
    rows: AtomicU64,
    steps: AtomicU64,
    step_rows: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: Mutex::new(Histogram::new(&BUCKETS)),
            queue: Mutex::new(Histogram::new(&BUCKETS)),
            sizes: Mutex::new(Histogram::new(&SIZES)),
            forwards: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_rows: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One answered request.
    pub fn request(&self, endpoint: &str, status: u16, latency: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((endpoint.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            h.observe(latency.as_secs_f64());
        }
    }

    /// Time a request waited before the engine took it.
    pub fn queue_wait(&self, wait: Duration) {
        if let Ok(mut h) = self.queue.lock() {
            h.observe(wait.as_secs_f64());
        }
    }

    /// One forward of `rows` rows (classification, tagging, or the prefill of joining
    /// generations).
    pub fn batch(&self, rows: usize) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.sizes.lock() {
            h.observe(rows as f64);
        }
    }

    /// One decoding step of `rows` running generations.
    pub fn decode_step(&self, rows: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_rows.fetch_add(rows as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.sizes.lock() {
            h.observe(rows as f64);
        }
    }

    /// Decoding steps run and rows in them so far (mean running generations = rows / steps).
    pub fn decode_steps(&self) -> (u64, u64) {
        (self.steps.load(Ordering::Relaxed), self.step_rows.load(Ordering::Relaxed))
    }

    /// Forwards run and rows in them so far.
    pub fn forwards(&self) -> (u64, u64) {
        (self.forwards.load(Ordering::Relaxed), self.rows.load(Ordering::Relaxed))
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP ptune_requests_total Requests answered, by endpoint and status.\n");
        out.push_str("# TYPE ptune_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((endpoint, status), n) in r.iter() {
                out.push_str(&format!(
                    "ptune_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        let (forwards, rows) = self.forwards();
        let (steps, step_rows) = self.decode_steps();
        for (name, help, value) in [
            ("ptune_forwards_total", "Forwards of the backbone.", forwards),
            (
                "ptune_batch_rows_total",
                "Rows over all forwards (mean batch size = rows / forwards).",
                rows,
            ),
            ("ptune_decode_steps_total", "Decoding steps of running generations.", steps),
            ("ptune_decode_rows_total", "Generations over all decoding steps.", step_rows),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        if let Ok(h) = self.sizes.lock() {
            h.render("ptune_batch_size", "Rows per forward and per decoding step.", &mut out);
        }
        if let Ok(h) = self.queue.lock() {
            h.render("ptune_queue_seconds", "Time requests waited for the engine.", &mut out);
        }
        if let Ok(h) = self.latency.lock() {
            h.render("ptune_request_seconds", "Request latency, end to end.", &mut out);
        }
        out
    }
}
