//! How the CLI shows a run: a progress bar per epoch and log lines (through `tracing`, filtered by
//! `-v` / `-q`), rendered from the training loop's events.

use indicatif::{ProgressBar, ProgressStyle};
use ptune_train::progress::PhaseEvent;
use ptune_train::{TrainEvent, TrainObserver};

/// Sets up logging to stderr: warnings only with `quiet`, info by default, debug with `-v` (every
/// optimizer step), trace with `-vv`.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (false, 0) => tracing::Level::INFO,
        (false, 1) => tracing::Level::DEBUG,
        (false, _) => tracing::Level::TRACE,
    };
    // A second initialization (never done here) would be the only error: ignore it.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Bars with ETA for the library's long phases besides training batches (linear probe features,
/// evaluation, generation; `ptune_train::progress`), unless `quiet`.
pub fn install_phase_bars(quiet: bool) {
    if quiet {
        return;
    }
    let current: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);
    ptune_train::progress::set_phase_hook(Box::new(move |event| {
        let Ok(mut slot) = current.lock() else { return };
        match event {
            PhaseEvent::Start { name, total } => {
                let bar = ProgressBar::new(total as u64);
                bar.set_style(
                    ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed}<{eta}]")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(name.to_string());
                if let Some(old) = slot.replace(bar) {
                    old.finish_and_clear();
                }
            }
            PhaseEvent::Advance(n) => {
                if let Some(bar) = slot.as_ref() {
                    bar.inc(n as u64);
                }
            }
            PhaseEvent::End => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }));
}

/// Renders [`TrainEvent`]s: a bar while an epoch trains (none when `quiet`), a log line per
/// evaluation and per notable event.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// `epoch/epochs` of the bar.
    epoch: String,
}

impl Progress {
    /// A renderer; with `-q` (info lines off) it shows no bar either.
    pub fn new() -> Self {
        Self { bar: None, quiet: !tracing::enabled!(tracing::Level::INFO), epoch: String::new() }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

impl TrainObserver for Progress {
    fn on(&mut self, event: TrainEvent<'_>) {
        match event {
            TrainEvent::Resumed { state_dir, epoch, batch, step } => tracing::info!(
                "resuming from {} at epoch {epoch}, batch {batch}, step {step}",
                state_dir.display()
            ),
            TrainEvent::EpochStarted { epoch, epochs, batches, done } => {
                if self.quiet {
                    return;
                }
                let bar = ProgressBar::new(batches as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "epoch {msg} {bar:30} {pos}/{len} [{elapsed}<{eta}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                self.epoch = format!("{epoch}/{epochs}");
                bar.set_message(self.epoch.clone());
                bar.set_position(done as u64);
                self.bar = Some(bar);
            }
            TrainEvent::BatchDone => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            TrainEvent::Step { epoch, step, loss, lr } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{} loss {loss:.4} lr {lr:.2e}", self.epoch));
                }
                tracing::debug!("epoch {epoch} step {step}: loss {loss:.4}, lr {lr:.3e}")
            }
            TrainEvent::EpochTrained => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            TrainEvent::Evaluated(record) => {
                let shown: Vec<String> =
                    record.dev.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                tracing::info!(
                    "epoch {}: train loss {:.4}, dev {} ({:.0} s)",
                    record.epoch,
                    record.train_loss,
                    shown.join(", "),
                    record.seconds
                );
            }
            TrainEvent::EarlyStop { epochs } => {
                tracing::info!("early stop: no better dev score for {epochs} epochs")
            }
            TrainEvent::Message(text) => tracing::info!("{text}"),
            TrainEvent::Stopped { step } => {
                if let Some(bar) = self.bar.take() {
                    bar.abandon();
                }
                tracing::info!("stopping after step {step} (resume to continue)");
            }
        }
    }
}
