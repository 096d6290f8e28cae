//! Watch retry backoff. kube's default grows to 30 s; after an apiserver restart every
//! watch fails at least twice (connection refused, then 410 Gone for its old
//! resourceVersion), so the operator would stay blind for up to a minute. This one starts
//! at 200 ms and caps at 5 s: one client, so the extra retries cost the apiserver little.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
    /// A reset counts only after this long without a failure: a watch that fails right
    /// after each successful (re)start must still slow down.
    quiet: Duration,
    last_failure: Option<Instant>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
    }
}

impl WatchBackoff {
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

/// The backoff every watch uses.
pub fn watch_backoff() -> WatchBackoff {
    WatchBackoff::default()
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.last_failure = Some(Instant::now());
        let current = self.next;
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        if self.last_failure.is_none_or(|t| t.elapsed() >= self.quiet) {
            self.next = self.min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let mut b = WatchBackoff::new(
            Duration::from_millis(200),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let seen: Vec<u128> = (0..5)
            .filter_map(|_| b.next())
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(seen, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn a_reset_right_after_a_failure_is_ignored() {
        let mut b = WatchBackoff::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        b.next();
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(400)));
    }
}
