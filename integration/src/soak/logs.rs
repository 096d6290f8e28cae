//! The replicas' logs after a soak: a panic is always a finding; an ERROR line is one
//! unless it falls inside an injected fault (or the recovery after it).

use std::path::PathBuf;

use serde_json::Value;

use super::history::{FaultWindow, RECOVERY, parse_ms};

/// A log line no injected fault explains.
#[derive(Clone, Debug)]
pub struct Finding {
    pub replica: usize,
    pub line: String,
}

pub fn scan(logs: &[(usize, PathBuf)], faults: &[FaultWindow]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (replica, path) in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            if let Some(reason) = unexplained(line, faults) {
                out.push(Finding {
                    replica: *replica,
                    line: format!("{reason}: {}", line.chars().take(400).collect::<String>()),
                });
            }
        }
    }
    out
}

/// Why `line` is a finding, if it is one. Lines are JSON (`--log-format=json`); a
/// non-JSON line is what a panic or the runtime printed.
fn unexplained(line: &str, faults: &[FaultWindow]) -> Option<&'static str> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.contains("panicked").then_some("panic");
    };
    if v.get("level").and_then(Value::as_str) != Some("ERROR") {
        return None;
    }
    let at = v
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_ms)?;
    let explained = faults
        .iter()
        .any(|f| at >= f.from - 2_000 && at <= f.to.saturating_add(RECOVERY * 3));
    (!explained).then_some("ERROR outside any fault")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_inside_a_fault_are_explained_and_panics_never_are() {
        let faults = [FaultWindow {
            kind: "apiserver-down",
            from: 1_700_000_000_000,
            to: 1_700_000_010_000,
        }];
        let inside = r#"{"timestamp":"2023-11-14T22:13:25Z","level":"ERROR","message":"x"}"#;
        let outside = r#"{"timestamp":"2023-11-14T23:13:25Z","level":"ERROR","message":"x"}"#;
        let info = r#"{"timestamp":"2023-11-14T23:13:25Z","level":"INFO","message":"x"}"#;
        assert_eq!(unexplained(inside, &faults), None);
        assert_eq!(
            unexplained(outside, &faults),
            Some("ERROR outside any fault")
        );
        assert_eq!(unexplained(info, &faults), None);
        assert_eq!(
            unexplained("thread 'main' panicked at src/x.rs:1:1", &faults),
            Some("panic")
        );
    }
}
