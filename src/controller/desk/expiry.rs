//! Timeout math (pure): when a desk expires and how long until then. Times are
//! written with `crate::time`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `start + timeout_ms`, clamped to the largest representable time instead of overflowing.
pub fn expiry(start: Timestamp, timeout_ms: i64) -> Timestamp {
    start
        .checked_add(SignedDuration::from_millis(timeout_ms.max(0)))
        .unwrap_or(Timestamp::MAX)
}

/// Where a desk stands relative to its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Requeue after this long: the controller wakes up exactly at expiry.
    In(Duration),
    /// Past expiry by this much (the timeout lag when acted on now).
    Passed(Duration),
}

pub fn deadline(now: Timestamp, expiry: Timestamp) -> Deadline {
    let diff = expiry.duration_since(now);
    if diff.is_positive() {
        Deadline::In(diff.unsigned_abs())
    } else {
        Deadline::Passed(diff.unsigned_abs())
    }
}

#[cfg(test)]
mod tests;
