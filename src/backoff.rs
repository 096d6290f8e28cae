//! Watch retry backoff. kube's default grows to 30 s; after an apiserver restart every
//! watch fails at least twice (connection refused, then 410 Gone for its old
//! resourceVersion), so the operator would stay blind for up to a minute. This one starts
//! at 200 ms and caps at 5 s: one client, so the extra retries cost the apiserver nothing.

use std::time::Duration;

use kube::runtime::utils::Backoff;

#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}

impl WatchBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = WatchBackoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let seen: Vec<u128> = (0..5)
            .filter_map(|_| b.next())
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(seen, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(200)));
    }
}
