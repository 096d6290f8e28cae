//! When to try a delivery again (pure).

use std::time::Duration;

use crate::backoff::nth_delay;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The wait before the next attempt after `made` attempts failed; `None` when that was
    /// the last one allowed.
    pub fn delay_after(&self, made: u32) -> Option<Duration> {
        (made < self.max_attempts).then(|| nth_delay(self.first_delay, self.max_delay, made))
    }
}

/// A 2xx answer is a delivery; anything else is retried.
pub fn delivered(code: u16) -> bool {
    (200..300).contains(&code)
}

#[cfg(test)]
mod tests;
