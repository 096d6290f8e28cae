//! Readiness as a set of named gates: `/readyz` is true only when every gate is open and
//! shutdown has not begun (controller-runtime's healthz/readyz split).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Readiness {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    gates: BTreeMap<&'static str, bool>,
    shutting_down: bool,
}

impl Readiness {
    /// Declares a gate, closed until `open` is called.
    pub fn register(&self, gate: &'static str) {
        if let Ok(mut s) = self.inner.lock() {
            s.gates.entry(gate).or_insert(false);
        }
    }

    pub fn open(&self, gate: &'static str) {
        if let Ok(mut s) = self.inner.lock() {
            s.gates.insert(gate, true);
        }
    }

    /// From now on the replica reports not ready, so it leaves Service endpoints first.
    pub fn begin_shutdown(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.shutting_down = true;
        }
    }

    /// `Ok` when ready, otherwise the reasons, one per line.
    pub fn check(&self) -> Result<(), String> {
        let Ok(s) = self.inner.lock() else {
            return Err("readiness state poisoned".into());
        };
        let mut reasons: Vec<String> = s
            .gates
            .iter()
            .filter(|(_, open)| !**open)
            .map(|(gate, _)| format!("{gate}: not ready"))
            .collect();
        if s.shutting_down {
            reasons.push("shutting down".into());
        }
        if s.gates.is_empty() && !s.shutting_down {
            reasons.push("starting".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests;
