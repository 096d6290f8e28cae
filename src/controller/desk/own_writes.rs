//! Read-your-own-writes for desks. A pass that writes a desk (its finalizer, its status) is
//! often followed by another pass (a VM or VMI event, whose watch runs ahead of the desk
//! watch) before the desk cache has the write. Planning on the cached, older desk would
//! add the finalizer again (refused: the patch tests the resourceVersion) or write the same
//! status again and announce `Ready` twice. The desk as the operator's write left it is
//! remembered with the resourceVersions that are older than it (the one it was planned
//! from, and those of its own earlier writes since), and used instead of the cached one
//! while the cache shows one of them. Any other resourceVersion (the cache caught up, or
//! someone else changed the desk) drops it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::model::Cyberdesk;

#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<ObjectRef<Cyberdesk>, Written>>,
}

struct Written {
    /// resourceVersions of the desk older than the last write.
    older: HashSet<String>,
    /// The desk as the last write left it (trimmed like the cache).
    desk: Cyberdesk,
}

fn rv(desk: &Cyberdesk) -> Option<&str> {
    desk.metadata.resource_version.as_deref()
}

impl OwnWrites {
    /// The desk as the pass should see it: the one this operator's last write left, if the
    /// cache has not caught up with that write yet.
    pub fn view(&self, cached: &Cyberdesk) -> Option<Cyberdesk> {
        let key = ObjectRef::from(cached);
        let mut written = self.written.lock().ok()?;
        let entry = written.get(&key)?;
        if !entry.older.contains(rv(cached).unwrap_or_default()) {
            written.remove(&key);
            return None;
        }
        Some(entry.desk.clone())
    }

    /// Remembers that a write planned from `planned_from` left the desk as `stored`.
    pub fn record(&self, planned_from: &Cyberdesk, stored: Cyberdesk) {
        let (Some(over), Some(latest)) = (rv(planned_from), rv(&stored)) else {
            return;
        };
        let (over, latest) = (over.to_string(), latest.to_string());
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        let key = ObjectRef::from(planned_from);
        let mut older = HashSet::from([over.clone()]);
        if let Some(previous) = written.remove(&key) {
            let previous_rv = rv(&previous.desk).unwrap_or_default().to_string();
            if previous.older.contains(&over) || previous_rv == over {
                // Planned from our own earlier write (or a view of it): older now too.
                older.extend(previous.older);
                older.insert(previous_rv);
            }
        }
        older.remove(&latest);
        written.insert(
            key,
            Written {
                older,
                desk: stored,
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
mod tests;
