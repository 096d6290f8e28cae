//! Timeout math (pure): when a desk expires and how long until then. Times are RFC 3339
//! strings in the status, so they survive restarts and leader changes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Parses an RFC 3339 timestamp as written in status or metadata.
pub fn parse(ts: &str) -> Option<Timestamp> {
    ts.parse().ok()
}

/// RFC 3339 with millisecond precision, UTC (`2026-11-22T10:00:00.123Z`).
pub fn format(ts: Timestamp) -> String {
    ts.round(jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

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
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        parse(s).expect("valid timestamp")
    }

    #[test]
    fn expiry_adds_milliseconds() {
        let e = expiry(ts("2026-01-01T00:00:00Z"), 90_500);
        assert_eq!(format(e), "2026-01-01T00:01:30.5Z");
    }

    #[test]
    fn huge_timeouts_clamp_instead_of_overflowing() {
        assert_eq!(expiry(ts("2026-01-01T00:00:00Z"), i64::MAX), Timestamp::MAX);
        assert_eq!(
            expiry(ts("2026-01-01T00:00:00Z"), -5),
            ts("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn deadline_before_and_after() {
        let exp = ts("2026-01-01T00:01:00Z");
        assert_eq!(
            deadline(ts("2026-01-01T00:00:00Z"), exp),
            Deadline::In(Duration::from_secs(60))
        );
        assert_eq!(
            deadline(ts("2026-01-01T00:01:02Z"), exp),
            Deadline::Passed(Duration::from_secs(2))
        );
        assert_eq!(deadline(exp, exp), Deadline::Passed(Duration::ZERO));
    }

    #[test]
    fn format_parse_roundtrip() {
        let t = ts("2026-11-22T10:00:00.123Z");
        assert_eq!(parse(&format(t)), Some(t));
        assert_eq!(parse("not a time"), None);
    }
}
