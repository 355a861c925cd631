//! What the bench binaries share: argument parsing and latency figures.
// Each bench is its own crate and uses a subset of this module.
#![allow(dead_code)]

use std::time::Duration;

/// A clap value parser for counts that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
