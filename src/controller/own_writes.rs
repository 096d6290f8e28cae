//! Read-your-own-writes for desk status. A pass that writes a status is often followed by
//! another pass (a VMI event) before the desk cache has the write; planning on the cached,
//! older status would write the same status again and announce `Ready` twice. The status
//! the operator wrote is remembered with the resourceVersions that are older than it (the
//! one it was planned from, and those of its own earlier writes since), and used instead of
//! the cached one while the cache shows one of them. Any other resourceVersion (the cache
//! caught up, or someone else changed the desk) drops it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::model::{Cyberdesk, CyberdeskStatus};

#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<ObjectRef<Cyberdesk>, Written>>,
}

struct Written {
    /// resourceVersions of the desk older than the last write.
    older: HashSet<String>,
    /// The resourceVersion the last write produced.
    latest: String,
    status: CyberdeskStatus,
}

impl OwnWrites {
    /// The desk as the pass should see it: with the status this operator wrote over the
    /// cached resourceVersion, if the cache has not caught up with that write yet.
    pub fn view(&self, cached: &Cyberdesk) -> Option<Cyberdesk> {
        let key = ObjectRef::from(cached);
        let mut written = self.written.lock().ok()?;
        let entry = written.get(&key)?;
        let rv = cached
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        if !entry.older.contains(rv) {
            written.remove(&key);
            return None;
        }
        let mut seen = cached.clone();
        seen.status = Some(entry.status.clone());
        Some(seen)
    }

    /// Remembers that `status` was written over `planned_from`'s resourceVersion and left
    /// the desk at `written_rv`.
    pub fn record(
        &self,
        planned_from: &Cyberdesk,
        written_rv: Option<&str>,
        status: &CyberdeskStatus,
    ) {
        let (Some(over), Some(latest)) =
            (planned_from.metadata.resource_version.clone(), written_rv)
        else {
            return;
        };
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        let key = ObjectRef::from(planned_from);
        let mut older = HashSet::from([over.clone()]);
        if let Some(previous) = written.remove(&key)
            && previous.older.contains(&over)
        {
            // Planned from a view of our own earlier write: that write is older now too.
            older.extend(previous.older);
            older.insert(previous.latest);
        }
        older.remove(latest);
        written.insert(
            key,
            Written {
                older,
                latest: latest.to_string(),
                status: status.clone(),
            },
        );
    }

    /// Forgets a desk (deleted).
    pub fn forget(&self, desk: &Cyberdesk) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(&ObjectRef::from(desk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CyberdeskPhase;

    fn desk(rv: &str, phase: CyberdeskPhase) -> Cyberdesk {
        let mut d: Cyberdesk = serde_json::from_value(serde_json::json!({
            "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": rv}, "spec": {},
        }))
        .expect("desk");
        d.status = Some(CyberdeskStatus {
            phase: Some(phase),
            ..Default::default()
        });
        d
    }

    fn running() -> CyberdeskStatus {
        CyberdeskStatus {
            phase: Some(CyberdeskPhase::Running),
            ..Default::default()
        }
    }

    #[test]
    fn a_cache_behind_the_write_sees_the_written_status() {
        let own = OwnWrites::default();
        let before = desk("5", CyberdeskPhase::Starting);
        own.record(&before, Some("6"), &running());
        let seen = own.view(&before).expect("own write");
        assert_eq!(seen.status, Some(running()));
        assert_eq!(seen.metadata.resource_version.as_deref(), Some("5"));
    }

    #[test]
    fn a_newer_resource_version_drops_the_memory() {
        let own = OwnWrites::default();
        own.record(&desk("5", CyberdeskPhase::Starting), Some("6"), &running());
        // Caught up, or changed by someone else: the cache is the truth again.
        assert!(own.view(&desk("7", CyberdeskPhase::Failed)).is_none());
        assert!(own.view(&desk("5", CyberdeskPhase::Starting)).is_none());
    }

    #[test]
    fn a_cache_that_shows_an_earlier_own_write_sees_the_latest() {
        let own = OwnWrites::default();
        let starting = CyberdeskStatus {
            phase: Some(CyberdeskPhase::Starting),
            ..Default::default()
        };
        // Written Starting over 5 (giving 6), then Running over the view of 5 (giving 7).
        own.record(
            &desk("5", CyberdeskPhase::Provisioning),
            Some("6"),
            &starting,
        );
        let view = own
            .view(&desk("5", CyberdeskPhase::Provisioning))
            .expect("view");
        own.record(&view, Some("7"), &running());
        // The cache now shows the first write: still behind the second.
        let seen = own
            .view(&desk("6", CyberdeskPhase::Starting))
            .expect("own write");
        assert_eq!(seen.status, Some(running()));
        // Caught up with the second.
        assert!(own.view(&desk("7", CyberdeskPhase::Running)).is_none());
    }

    #[test]
    fn forgetting_a_desk() {
        let own = OwnWrites::default();
        let d = desk("5", CyberdeskPhase::Starting);
        own.record(&d, Some("6"), &running());
        own.forget(&d);
        assert!(own.view(&d).is_none());
    }
}
