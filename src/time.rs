//! Timestamps as the operator writes and reads them: RFC 3339 strings in status, labels,
//! annotations and platform records, so they survive restarts and leader changes.

use jiff::Timestamp;

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

#[cfg(test)]
mod tests;
