//! How long to wait before retrying.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Whether an answer with this status is worth another attempt.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// `Retry-After` in seconds (decimal fractions accepted). The HTTP-date form
/// is not used by Clerk and falls back to backoff.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = value.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // Anything past a day is nonsense; the caller caps it anyway.
    Some(Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The wait before retry number `retry` (0 for the first retry).
///
/// With `Retry-After`, that long plus up to 10% jitter, so that clients told
/// the same do not all come back at once. Without, exponential backoff from
/// `min` (doubling) with equal jitter: between half and all of the step.
/// Either way at most `max`.
pub(crate) fn wait_before_retry(
    retry: u32,
    retry_after: Option<Duration>,
    min: Duration,
    max: Duration,
) -> Duration {
    let mut rng = rand::thread_rng();
    let wait = match retry_after {
        Some(after) => after + after.mul_f64(rng.gen_range(0.0..=0.1)),
        None => {
            let step = min
                .saturating_mul(2u32.saturating_pow(retry.min(20)))
                .min(max);
            step / 2 + step.mul_f64(rng.gen_range(0.0..=0.5))
        }
    };
    wait.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn parses_retry_after_seconds() {
        assert_eq!(retry_after(&headers("1")), Some(Duration::from_secs(1)));
        assert_eq!(
            retry_after(&headers(" 2.5 ")),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(retry_after(&headers("0")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn honours_retry_after_within_the_cap() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        for _ in 0..100 {
            let w = wait_before_retry(0, Some(Duration::from_secs(1)), min, max);
            assert!(
                w >= Duration::from_secs(1) && w <= Duration::from_millis(1100),
                "{w:?}"
            );
        }
        let w = wait_before_retry(0, Some(Duration::from_secs(120)), min, max);
        assert_eq!(w, max);
    }

    #[test]
    fn backs_off_exponentially_with_jitter() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        for retry in 0..10 {
            let step = (min * 2u32.pow(retry)).min(max);
            for _ in 0..50 {
                let w = wait_before_retry(retry, None, min, max);
                assert!(
                    w >= step / 2 && w <= step,
                    "retry {retry}: {w:?} vs {step:?}"
                );
            }
        }
        // Huge retry numbers do not overflow.
        assert!(wait_before_retry(u32::MAX, None, min, max) <= max);
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
