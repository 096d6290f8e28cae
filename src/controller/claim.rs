//! A desk with `spec.pool` takes a booted VM from its pool: one JSON patch per try, whose
//! first operation tests that the VM is still `available`. The apiserver applies a patch
//! to the object as stored, so of two desks patching the same VM only one can pass that
//! test; the other moves on to the next ready VM. The patch moves the VM from the pool to
//! the desk (labels, ownerReference, claim time) in the same write, so there is no moment
//! at which the VM belongs to both or to neither.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::{Value, json};

use crate::controller::error::Error;
use crate::controller::expiry;
use crate::controller::pool_plan::claim_order;
use crate::controller::reconcile::plain_pp;
use crate::model::{Cyberdesk, CyberdeskPool, VirtualMachine, names};

/// Most VMs one pass tries before it gives up on the pool and boots a VM of its own.
const MAX_TRIES: usize = 5;

/// The VMs this process gave pooled desks (claimed, or booted cold), by desk uid, and the
/// pool VMs being claimed right now. The caches may not show a claim for a moment; without
/// this memory a pass in that moment would claim a second VM for the same desk, and two
/// desks would race for the same VM more often than needed.
#[derive(Default)]
pub struct PoolVms {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_desk: HashMap<String, String>,
    taken: HashSet<String>,
}

impl PoolVms {
    /// The VM this process gave the desk with `uid`, if any.
    pub fn of_desk(&self, uid: &str) -> Option<String> {
        self.inner.lock().ok()?.by_desk.get(uid).cloned()
    }

    /// Remembers that the desk `uid` has the VM `vm`.
    pub fn record(&self, uid: &str, vm: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.by_desk.insert(uid.into(), vm.into());
            inner.taken.insert(vm.into());
        }
    }

    /// The desk is gone (or its VM is): forget what it had.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(vm) = inner.by_desk.remove(uid)
        {
            inner.taken.remove(&vm);
        }
    }

    fn is_taken(&self, vm: &str) -> bool {
        self.inner
            .lock()
            .is_ok_and(|inner| inner.taken.contains(vm))
    }

    /// Marks `vm` as being claimed; `false` when another pass already has it.
    fn reserve(&self, vm: &str) -> bool {
        self.inner
            .lock()
            .is_ok_and(|mut inner| inner.taken.insert(vm.into()))
    }

    fn release(&self, vm: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.taken.remove(vm);
        }
    }
}

/// JSON pointer escaping of one path segment (`/` in label keys).
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The claim: test that the VM is still available, then hand it to the desk.
pub fn claim_patch(desk: &Cyberdesk, owner_reference: &Value, now: Timestamp) -> Value {
    let label = |key: &str| format!("/metadata/labels/{}", segment(key));
    let ns = desk.namespace().unwrap_or_default();
    let uid = desk.uid().unwrap_or_default();
    json!([
        {"op": "test", "path": label(names::LABEL_POOL_STATE), "value": names::POOL_STATE_AVAILABLE},
        {"op": "replace", "path": label(names::LABEL_POOL_STATE), "value": names::POOL_STATE_CLAIMED},
        {"op": "add", "path": label(names::LABEL_INSTANCE), "value": desk.name_any()},
        {"op": "add", "path": label(names::LABEL_DESK_NAMESPACE), "value": ns},
        {"op": "add", "path": label(names::LABEL_DESK_UID), "value": uid},
        {"op": "add", "path": format!("/metadata/annotations/{}", segment(names::ANNOTATION_CLAIMED_AT)), "value": expiry::format(now)},
        {"op": "add", "path": "/metadata/ownerReferences", "value": [owner_reference]},
    ])
}

/// How one claim attempt ended.
pub enum Claimed {
    /// The desk has this VM now.
    Hit(Box<VirtualMachine>),
    /// No ready VM was left to claim (`conflicts`: VMs another desk took first).
    Miss { conflicts: usize },
}

fn seed(desk: &Cyberdesk) -> u64 {
    let mut h = DefaultHasher::new();
    desk.uid().unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Tries the pool's ready VMs (`members`, from the cache) one after another until one
/// claim passes its test.
pub async fn claim(
    vms: &Api<VirtualMachine>,
    desk: &Cyberdesk,
    pool: &CyberdeskPool,
    members: &[VirtualMachine],
    owner_reference: &Value,
    memory: &PoolVms,
) -> Result<Claimed, Error> {
    let pool_uid = pool.uid().unwrap_or_default();
    let order = claim_order(members, &pool_uid, |vm| memory.is_taken(vm), seed(desk));
    let mut conflicts = 0;
    for name in order.into_iter().take(MAX_TRIES) {
        if !memory.reserve(&name) {
            continue;
        }
        let patch: json_patch::Patch =
            serde_json::from_value(claim_patch(desk, owner_reference, Timestamp::now())).map_err(
                |source| Error::Serialization {
                    what: "claim patch",
                    source,
                },
            )?;
        match vms
            .patch(&name, &plain_pp(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(vm) => {
                memory.record(&desk.uid().unwrap_or_default(), &name);
                return Ok(Claimed::Hit(Box::new(vm)));
            }
            // Another desk's claim went first (the test failed), or the VM is gone.
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {
                memory.release(&name);
                conflicts += 1;
            }
            Err(e) => {
                memory.release(&name);
                return Err(e.into());
            }
        }
    }
    Ok(Claimed::Miss { conflicts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_tests_availability_first_and_hands_the_vm_over_in_one_patch() {
        let mut desk = Cyberdesk::new("alice", Default::default());
        desk.metadata.namespace = Some("team".into());
        desk.metadata.uid = Some("u-1".into());
        let owner = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "name": "alice", "uid": "u-1", "controller": true});
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let patch = claim_patch(&desk, &owner, now);
        let ops = patch.as_array().expect("ops");
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["path"], "/metadata/labels/cyberdesk.io~1pool-state");
        assert_eq!(ops[0]["value"], "available");
        assert_eq!(ops[1]["value"], "claimed");
        let added: Vec<(&str, &Value)> = ops[2..]
            .iter()
            .filter_map(|op| Some((op["path"].as_str()?, &op["value"])))
            .collect();
        assert!(added.contains(&("/metadata/labels/cyberdesk-instance", &json!("alice"))));
        assert!(added.contains(&("/metadata/labels/cyberdesk.io~1desk-uid", &json!("u-1"))));
        assert!(added.contains(&(
            "/metadata/annotations/cyberdesk.io~1claimed-at",
            &json!(expiry::format(now))
        )));
        assert!(added.contains(&("/metadata/ownerReferences", &json!([owner]))));
        // It parses as the JSON patch the client sends.
        let _: json_patch::Patch = serde_json::from_value(patch).expect("a JSON patch");
    }

    #[test]
    fn a_vm_is_reserved_by_one_pass_at_a_time_and_remembered_per_desk() {
        let memory = PoolVms::default();
        assert!(memory.reserve("vm-1"));
        assert!(
            !memory.reserve("vm-1"),
            "a second pass must not try the same VM"
        );
        memory.release("vm-1");
        assert!(memory.reserve("vm-1"));
        memory.record("desk-1", "vm-1");
        assert_eq!(memory.of_desk("desk-1").as_deref(), Some("vm-1"));
        assert!(memory.is_taken("vm-1"));
        memory.forget("desk-1");
        assert!(!memory.is_taken("vm-1"));
        assert_eq!(memory.of_desk("desk-1"), None);
    }
}
