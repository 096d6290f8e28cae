//! What the pool controller created or deleted, until the cache shows it: without this a
//! pass triggered by the first new VM's event would see the others missing and boot them
//! again, or count a VM it just deleted as still there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::controller::pool::plan::{Member, MemberState};

/// How long a VM this process created or deleted is counted as such while the cache does
/// not show it yet.
const OWN_WRITE_MEMORY: Duration = Duration::from_secs(60);

/// Per pool (by uid): the VMs created and deleted lately.
#[derive(Default)]
pub struct PoolWrites {
    inner: Mutex<HashMap<String, PendingWrites>>,
}

#[derive(Default)]
struct PendingWrites {
    created: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
}

impl PoolWrites {
    pub fn created(&self, pool_uid: &str, vm: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let entry = inner.entry(pool_uid.into()).or_default();
            entry.created.insert(vm.into(), Instant::now());
        }
    }

    pub fn deleted(&self, pool_uid: &str, vm: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let entry = inner.entry(pool_uid.into()).or_default();
            entry.deleted.insert(vm.into(), Instant::now());
        }
    }

    pub fn forget(&self, pool_uid: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(pool_uid);
        }
    }

    /// `members` as the cache shows them, corrected by this process's own recent writes.
    pub fn correct(&self, pool_uid: &str, members: &mut Vec<Member>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(pending) = inner.get_mut(pool_uid) else {
            return;
        };
        let fresh = |at: &Instant| at.elapsed() < OWN_WRITE_MEMORY;
        pending
            .created
            .retain(|name, at| fresh(at) && !members.iter().any(|m| &m.name == name));
        pending.deleted.retain(|name, at| {
            fresh(at)
                && members
                    .iter()
                    .any(|m| &m.name == name && m.state != MemberState::Deleting)
        });
        for name in pending.created.keys() {
            members.push(Member {
                name: name.clone(),
                state: MemberState::Booting,
                created: Some(Timestamp::now()),
            });
        }
        for member in members.iter_mut() {
            if pending.deleted.contains_key(&member.name) {
                member.state = MemberState::Deleting;
            }
        }
    }
}

#[cfg(test)]
mod tests;
