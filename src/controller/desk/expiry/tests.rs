use super::*;
use crate::time::{format, parse};

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
