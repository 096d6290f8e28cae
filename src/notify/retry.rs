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
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_last_attempt() {
        let p = RetryPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            max_attempts: 5,
        };
        let delays: Vec<_> = (1..=5).map(|n| p.delay_after(n)).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(5)),
                None
            ]
        );
    }

    #[test]
    fn only_2xx_is_delivered() {
        assert!(delivered(200) && delivered(204));
        assert!(!delivered(500) && !delivered(404) && !delivered(301));
    }
}
