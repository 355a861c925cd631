//! A bound on how many refusal lines the log gets: a flood of forged
//! webhooks or bad tokens must not become a flood of log. At most a few
//! lines a second are written; the rest are counted, and the next line
//! written says how many were left out. `/metrics` counts every refusal.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Refusal lines written per second, at most.
const PER_SECOND: u32 = 10;

#[derive(Debug, Default)]
pub struct LogLimit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    second: u64,
    written: u32,
    left_out: u64,
}

impl LogLimit {
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                second: 0,
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the number of lines
    /// left out since the last one written, or `None` to leave this one out.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.admit_at(now)
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.second != second {
            s.second = second;
            s.written = 0;
        }
        if s.written >= PER_SECOND {
            s.left_out += 1;
            return None;
        }
        s.written += 1;
        Some(std::mem::take(&mut s.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_few_lines_a_second_and_counts_the_rest() {
        let limit = LogLimit::new();
        let admitted: Vec<Option<u64>> = (0..3000).map(|_| limit.admit_at(100)).collect();
        assert_eq!(
            admitted.iter().filter(|a| a.is_some()).count(),
            PER_SECOND as usize
        );
        assert!(admitted[..PER_SECOND as usize]
            .iter()
            .all(|a| *a == Some(0)));
        // The next second's first line says how many were left out.
        assert_eq!(limit.admit_at(101), Some(3000 - u64::from(PER_SECOND)));
        assert_eq!(limit.admit_at(101), Some(0));
    }
}
