//! The one exponential backoff: watches, failed reconciles and certificate checks all
//! double from a minimum up to a cap.
//!
//! For watches, kube's default grows to 30 s; after an apiserver restart every
//! watch fails at least twice (connection refused, then 410 Gone for its old
//! resourceVersion), so the operator would stay blind for up to a minute. This one starts
//! at 200 ms and caps at 5 s: one client, so the extra retries cost the apiserver little.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

#[derive(Clone, Debug)]
pub struct ExponentialBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
    /// A reset counts only after this long without a failure: a watch that fails right
    /// after each successful (re)start must still slow down.
    quiet: Duration,
    last_failure: Option<Instant>,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
    }
}

impl ExponentialBackoff {
    pub fn new(min: Duration, max: Duration, quiet: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
            quiet,
            last_failure: None,
        }
    }
}

/// The `attempt`-th delay (1-based) of a backoff doubling from `min` to `max`: for callers
/// that count failures themselves, like the reconciler per desk.
pub fn nth_delay(min: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    min.saturating_mul(1u32 << doublings).min(max)
}

/// Consecutive failures per object, for [`nth_delay`]; a success clears the count.
pub struct Failures<K> {
    counts: std::sync::Mutex<std::collections::HashMap<K, u32>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Self {
            counts: Default::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Failures<K> {
    /// Counts one more failure of `key`; the count so far (1 for the first).
    pub fn record(&self, key: K) -> u32 {
        let Ok(mut counts) = self.counts.lock() else {
            return 1;
        };
        let n = counts.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn clear(&self, key: &K) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }
}

/// The backoff every watch uses.
pub fn watch_backoff() -> ExponentialBackoff {
    ExponentialBackoff::default()
}

impl Iterator for ExponentialBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.last_failure = Some(Instant::now());
        let current = self.next;
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

impl Backoff for ExponentialBackoff {
    fn reset(&mut self) {
        if self.last_failure.is_none_or(|t| t.elapsed() >= self.quiet) {
            self.next = self.min;
        }
    }
}

#[cfg(test)]
mod tests;
