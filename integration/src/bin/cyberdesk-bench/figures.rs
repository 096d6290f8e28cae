//! Figures out of what a section measured: percentiles, their printing, and the timeout
//! lags the operator logs.

use std::time::Duration;

use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::until_every;

/// The `p` quantile (0..=1) of `sorted`, nearest rank; zero when empty.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The lags the operator logged for the timeouts it enforced ("timeout reached", `lag_ms`),
/// sorted, once there are `n` of them or `within` has passed.
pub async fn timeout_lags(op: &OperatorProcess, n: usize, within: Duration) -> Vec<Duration> {
    let read = || {
        let mut lags: Vec<Duration> = op
            .log()
            .lines()
            .filter(|l| l.contains("timeout reached"))
            .filter_map(|l| l.split("lag_ms").nth(1))
            .filter_map(|rest| {
                rest.trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .map(Duration::from_millis)
            .collect();
        lags.sort();
        lags
    };
    until_every(within, Duration::from_millis(500), || {
        let lags = read();
        std::future::ready((lags.len() >= n).then_some(lags))
    })
    .await
    .unwrap_or_else(read)
}
