//! Progress of the long phases outside the training batches — the linear probe's feature pass,
//! dev and test evaluation, generation — reported to one process-wide hook that a front end
//! installs (the CLI draws a bar with ETA). Without a hook, reporting costs nothing.
//!
//! ```
//! use ptune_train::progress::{set_phase_hook, Phase, PhaseEvent};
//!
//! set_phase_hook(Box::new(|event| {
//!     if let PhaseEvent::Start { name, total } = event {
//!         eprintln!("{name}: {total} items");
//!     }
//! }));
//! let phase = Phase::start("scoring", 3);
//! phase.advance(3);
//! ```

use std::sync::OnceLock;

/// What a phase reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseEvent<'a> {
    /// A phase begins: `total` items (examples, sources) to go.
    Start {
        /// What runs (`dev evaluation`, `generation`, …).
        name: &'a str,
        /// Items in all.
        total: usize,
    },
    /// `n` more items are done.
    Advance(usize),
    /// The phase ended (also on an error).
    End,
}

type Hook = Box<dyn Fn(PhaseEvent<'_>) + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the process's phase hook; `false` when one was installed already (it stays).
pub fn set_phase_hook(hook: Hook) -> bool {
    HOOK.set(hook).is_ok()
}

fn emit(event: PhaseEvent<'_>) {
    if let Some(hook) = HOOK.get() {
        hook(event);
    }
}

/// A running phase; it ends when dropped.
#[derive(Debug)]
pub struct Phase(());

impl Phase {
    /// Starts the phase `name` over `total` items.
    pub fn start(name: &str, total: usize) -> Self {
        emit(PhaseEvent::Start { name, total });
        Phase(())
    }

    /// `n` more items are done.
    pub fn advance(&self, n: usize) {
        emit(PhaseEvent::Advance(n));
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        emit(PhaseEvent::End);
    }
}
