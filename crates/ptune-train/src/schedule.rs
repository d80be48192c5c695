//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay to zero.

use serde::{Deserialize, Serialize};

/// Decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant after warmup.
    Constant,
    /// Linear decay to 0 at the last step.
    Linear,
    /// Cosine decay to 0 at the last step.
    Cosine,
}

/// Learning rate at optimizer step `step` (0-based) of `total`, with `warmup` warmup steps.
pub fn lr_at(base: f64, step: usize, total: usize, warmup: usize, schedule: Schedule) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        assert_eq!(lr_at(1.0, 0, 100, 10, Schedule::Linear), 0.1);
        assert_eq!(lr_at(1.0, 9, 100, 10, Schedule::Linear), 1.0);
        assert_eq!(lr_at(1.0, 10, 100, 10, Schedule::Linear), 1.0);
        assert!((lr_at(1.0, 55, 100, 10, Schedule::Linear) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 100, 10, Schedule::Cosine) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(2.0, 70, 100, 0, Schedule::Constant), 2.0);
    }
}
