//! Coalescing a starting desk's status writes. While a desk is `Starting`, its VMI steps
//! through `Pending`, `Scheduling` and `Scheduled` (and gets its address), and each step
//! changes only the detail of the status: `vmiPhase`, the message. When those steps come
//! faster than anyone reads them (many desks starting at once), writing each one costs the
//! apiserver a write per step. A detail change that comes within [`HOLD`] of this
//! process's last status write of the desk waits until the hold is over and is then
//! written as whatever is newest; a change of phase (to `Running`, `Failed`, …) is never
//! held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{CyberdeskPhase, CyberdeskStatus};

/// The shortest time between two status writes of one starting desk.
pub const HOLD: Duration = Duration::from_secs(1);

/// How long `desired` must wait before it is written, when at all: only a change of a
/// `Starting` desk that keeps it `Starting`, written by this process less than [`HOLD`]
/// ago (`written_ago`). Nothing to write (no change) waits for nothing.
pub fn wait_for(
    before: Option<&CyberdeskStatus>,
    desired: &CyberdeskStatus,
    written_ago: Option<Duration>,
) -> Option<Duration> {
    let starting =
        |s: Option<&CyberdeskStatus>| s.and_then(|s| s.phase) == Some(CyberdeskPhase::Starting);
    if before == Some(desired) || !starting(before) || !starting(Some(desired)) {
        return None;
    }
    HOLD.checked_sub(written_ago?)
        .filter(|wait| !wait.is_zero())
}

/// When this process last wrote each starting desk's status, by desk uid. Only desks
/// written while `Starting` in the last [`HOLD`] are kept.
#[derive(Default)]
pub struct StatusClock {
    written: Mutex<HashMap<String, Instant>>,
}

impl StatusClock {
    /// How long ago the desk's status was last written while `Starting`, within [`HOLD`].
    pub fn since(&self, uid: &str) -> Option<Duration> {
        let written = self.written.lock().ok()?;
        let ago = written.get(uid)?.elapsed();
        (ago < HOLD).then_some(ago)
    }

    /// Notes a status write of the desk that left it in `phase`.
    pub fn wrote(&self, uid: &str, phase: Option<CyberdeskPhase>) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        // Entries past the hold mean nothing any more (a desk deleted while starting
        // leaves one): drop them, so the map holds only the desks starting right now.
        written.retain(|_, at| at.elapsed() < HOLD);
        if phase == Some(CyberdeskPhase::Starting) {
            written.insert(uid.to_string(), Instant::now());
        } else {
            written.remove(uid);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.written.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
