//! At most `max` requests per `window` for each key (an organization).
//!
//! Each key has a FIFO semaphore of `max` permits. A request holds a permit
//! from before it is sent until `window` after its answer came back. Clerk
//! counts a request when it arrives, which is somewhere between those two
//! points, so however long requests take on the wire, no `window` at Clerk
//! ever sees more than `max` of them: of any `max + 1` requests, the one that
//! got its permit last did so while the other `max` still held theirs.
//! Callers over the limit wait in call order; other keys are not held up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Beyond this many keys, an acquire sweeps out keys nobody is using.
const SWEEP_ABOVE: usize = 1024;

pub(crate) struct KeyedRateLimiter<K> {
    max: usize,
    window: Duration,
    keys: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// Permission to send one request. Dropping it (once the answer is in, or
/// the request abandoned) gives the permit back `window` later.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    window: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let window = self.window;
        // Outside a runtime (only at shutdown) the permit goes back at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(window).await;
                drop(permit);
            });
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedRateLimiter<K> {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a request for `key` may be sent.
    pub(crate) async fn acquire(&self, key: &K) -> Slot {
        let semaphore = self.semaphore(key);
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            permit: Some(permit),
            window: self.window,
        }
    }

    fn semaphore(&self, key: &K) -> Arc<Semaphore> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() > SWEEP_ABOVE {
            // Idle: every permit back and nobody else holding the semaphore.
            let max = self.max;
            keys.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
        }
        keys.entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
            .clone()
    }

    #[cfg(test)]
    fn key_count(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn eleventh_call_waits_a_window_after_the_first_answer() {
        let window = Duration::from_secs(10);
        let limiter = KeyedRateLimiter::new(10, window);
        let start = Instant::now();
        for _ in 0..10 {
            let slot = limiter.acquire(&"org_a").await;
            // The request takes a while; the window starts when it ends.
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(slot);
        }
        let first_answer = start + Duration::from_millis(100);
        drop(limiter.acquire(&"org_b").await);
        assert_eq!(
            Instant::now(),
            start + Duration::from_secs(1),
            "another key is not held up"
        );
        drop(limiter.acquire(&"org_a").await);
        assert_eq!(Instant::now(), first_answer + window);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_call_order() {
        let window = Duration::from_secs(10);
        let limiter = Arc::new(KeyedRateLimiter::new(2, window));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..5u32 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                drop(limiter.acquire(&1).await);
                (i, Instant::now() - start)
            }));
            tokio::task::yield_now().await;
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        let secs: Vec<u64> = times.iter().map(|(_, d)| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 0, 10, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn spaced_calls_are_never_delayed() {
        let limiter = KeyedRateLimiter::new(2, Duration::from_secs(10));
        for _ in 0..20 {
            let before = Instant::now();
            drop(limiter.acquire(&"k").await);
            assert_eq!(Instant::now(), before);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_swept() {
        let limiter = KeyedRateLimiter::new(1, Duration::from_secs(1));
        for k in 0..=SWEEP_ABOVE {
            drop(limiter.acquire(&k).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(limiter.acquire(&usize::MAX).await);
        assert_eq!(limiter.key_count(), 1);
    }
}
