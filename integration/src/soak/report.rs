//! The soak's report: what ran, what was injected, what broke, and the figures.

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;

use super::Config;
use super::history::{History, Ms, Violation, quantile};
use super::logs::Finding;
use super::replicas::Replicas;
use super::workload::Tally;

pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub started_ms: Ms,
    pub history: &'a History,
    pub tally: &'a Tally,
    pub replicas: &'a Replicas,
    pub violations: Vec<Violation>,
    pub log_findings: Vec<Finding>,
    pub not_injected: Vec<String>,
    pub now: Ms,
}

/// The outcome: `passed()` is false on any violation, unexplained log line, or fault
/// that could not be injected (a soak that skipped a fault proved less than it says).
pub struct Report {
    pub violations: Vec<Violation>,
    pub log_findings: Vec<Finding>,
    pub not_injected: Vec<String>,
    pub faults_by_kind: Vec<(&'static str, usize)>,
    text: String,
}

fn secs(ms: Option<Ms>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |v| format!("{:.1} s", v as f64 / 1000.0),
    )
}

fn lag_line(name: &str, lags: &[Ms]) -> String {
    format!(
        "{name}: {} desks, min {}, p50 {}, p99 {}, max {}",
        lags.len(),
        secs(lags.first().copied()),
        secs(quantile(lags, 0.5)),
        secs(quantile(lags, 0.99)),
        secs(lags.last().copied())
    )
}

impl Report {
    pub fn new(i: Inputs<'_>) -> Self {
        let h = i.history;
        let mut t = String::new();
        let minutes = (i.now - i.started_ms) as f64 / 60_000.0;
        let created = i.tally.created.load(Ordering::Relaxed);
        let _ = writeln!(
            t,
            "soak report (seed {}, {} desks live at a time)",
            i.cfg.seed, i.cfg.desks
        );
        let _ = writeln!(t, "- minutes: {minutes:.1}");
        let _ = writeln!(
            t,
            "- desks: {} created, {} refused creates (retried), {} deleted by the workload, {} retimed, {} VMs deleted by hand, {} template breaks",
            created,
            i.tally.refused.load(Ordering::Relaxed),
            i.tally.deleted.load(Ordering::Relaxed),
            i.tally.retimed.load(Ordering::Relaxed),
            i.tally.vms_deleted_by_hand.load(Ordering::Relaxed),
            i.tally.template_breaks.load(Ordering::Relaxed),
        );
        let faults_by_kind: Vec<(&'static str, usize)> = h.faults_by_kind().into_iter().collect();
        let shown: Vec<String> = faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(t, "- faults injected: {}", shown.join(", "));
        let (stop, delete) = h.halt_lags();
        let _ = writeln!(
            t,
            "- {}",
            lag_line("timeout lag, Stop (expiry → VM halted)", &stop)
        );
        let _ = writeln!(
            t,
            "- {}",
            lag_line("timeout lag, Delete (expiry → VM gone)", &delete)
        );
        let _ = writeln!(
            t,
            "- {}",
            lag_line(
                "deletion latency (deletion → desk gone)",
                &h.deletion_lags()
            )
        );
        let rss: Vec<String> = i
            .replicas
            .peak_rss_kib()
            .iter()
            .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
            .collect();
        let _ = writeln!(t, "- peak RSS per replica: {}", rss.join(", "));
        let exits = i.replicas.exits();
        let injected = exits.iter().filter(|e| e.injected).count();
        let _ = writeln!(
            t,
            "- replica restarts: {:?} ({} exits injected, {} on their own)",
            i.replicas.restarts(),
            injected,
            exits.len() - injected
        );
        for e in exits.iter().filter(|e| !e.injected) {
            let _ = writeln!(
                t,
                "  - replica {} exited on its own ({}): {}",
                e.replica, e.status, e.last_words
            );
        }
        let vms = h.vms.len();
        let _ = writeln!(
            t,
            "- VMs seen: {vms} ({:.2} per desk created)",
            vms as f64 / created.max(1) as f64
        );
        let missing = h.ready_missing(i.now);
        let _ = writeln!(
            t,
            "- ready calls: {} desks notified, {} not notified though they ran a minute away from notifier faults",
            h.ready_delivered.len(),
            missing.len()
        );
        let _ = writeln!(t, "- invariant violations: {}", i.violations.len());
        for v in &i.violations {
            let _ = writeln!(t, "  - {}: {}", v.invariant, v.what);
        }
        let _ = writeln!(t, "- log lines no fault explains: {}", i.log_findings.len());
        for f in i.log_findings.iter().take(20) {
            let _ = writeln!(t, "  - replica {}: {}", f.replica, f.line);
        }
        if !i.not_injected.is_empty() {
            let _ = writeln!(t, "- faults not carried out: {}", i.not_injected.join("; "));
        }
        Self {
            violations: i.violations,
            log_findings: i.log_findings,
            not_injected: i.not_injected,
            faults_by_kind,
            text: t,
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.log_findings.is_empty() && self.not_injected.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str(if self.passed() {
            "PASSED\n"
        } else {
            "FAILED\n"
        })
    }
}
