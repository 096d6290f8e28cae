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

use std::time::Instant;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::controller::announcement::{Announcement, Reason};
use crate::controller::cache::trim_vm;
use crate::controller::context::Shared;
use crate::controller::error::Error;
use crate::controller::ownership::{owned_by, owner_reference};
use crate::controller::patch;
use crate::controller::pool::plan::claim_order;
use crate::controller::render::load_template;
use crate::model::{Cyberdesk, CyberdeskPool, VirtualMachine, VmSource, names};
use crate::time;

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
        // Nor one someone is deleting (a missing member tests equal to null).
        {"op": "test", "path": "/metadata/deletionTimestamp", "value": null},
        {"op": "replace", "path": label(names::LABEL_POOL_STATE), "value": names::POOL_STATE_CLAIMED},
        {"op": "add", "path": label(names::LABEL_INSTANCE), "value": desk.name_any()},
        {"op": "add", "path": label(names::LABEL_DESK_NAMESPACE), "value": ns},
        {"op": "add", "path": label(names::LABEL_DESK_UID), "value": uid},
        {"op": "add", "path": format!("/metadata/annotations/{}", segment(names::ANNOTATION_CLAIMED_AT)), "value": time::format(now)},
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
    let order = claim_order(
        members,
        pool,
        |vm| memory.is_taken(vm),
        seed(desk),
        Timestamp::now(),
    );
    let mut conflicts = 0;
    for name in order.into_iter().take(MAX_TRIES) {
        if !memory.reserve(&name) {
            continue;
        }
        let ops = claim_patch(desk, owner_reference, Timestamp::now());
        match patch::json(vms, &name, ops, "claim patch").await {
            Ok(vm) => {
                memory.record(&desk.uid().unwrap_or_default(), &name);
                return Ok(Claimed::Hit(Box::new(vm)));
            }
            // Another desk's claim went first (the test failed), or the VM is gone.
            Err(Error::Kube(kube::Error::Api(e))) if matches!(e.code, 404 | 409 | 422) => {
                memory.release(&name);
                conflicts += 1;
            }
            // Nothing was sent.
            Err(e @ Error::Serialization { .. }) => {
                memory.release(&name);
                return Err(e);
            }
            // The claim may have landed without its answer reaching us: remember the VM
            // for the desk, so that the next pass reads it live before claiming again.
            Err(e) => {
                memory.record(&desk.uid().unwrap_or_default(), &name);
                return Err(e);
            }
        }
    }
    Ok(Claimed::Miss { conflicts })
}

/// The desk's VM name and its VM, if any: `cyberdesk-<desk>` (or the platform's name),
/// from the cache. A desk from a pool may instead have the pool VM it claimed: the one
/// this process remembers or its status records (read live when the cache does not show
/// the claim yet), else the one the cache shows claimed by it (a claim whose status write
/// never happened: the operator was stopped in between).
pub async fn desk_vm(
    cd: &Cyberdesk,
    ctx: &Shared,
    pool_vms: &PoolVms,
    vm_ns: &str,
    vms: &Api<VirtualMachine>,
) -> Result<(String, Option<VirtualMachine>), Error> {
    let name = cd.name_any();
    let default = ctx.placement.vm_name(&name);
    let cached = ctx.caches.vm(vm_ns, &default);
    if cd.spec.pool.is_none() || cached.is_some() {
        return Ok((default, cached));
    }
    let uid = cd.uid().unwrap_or_default();
    let recorded = cd
        .status
        .as_ref()
        .filter(|s| s.source == Some(VmSource::Pool))
        .and_then(|s| s.virtual_machine_ref.as_deref().map(String::from));
    if let Some(known) = pool_vms.of_desk(&uid).or(recorded) {
        if let Some(vm) = ctx.caches.vm(vm_ns, &known).filter(|vm| owned_by(vm, cd)) {
            return Ok((known, Some(vm)));
        }
        match vms.get_opt(&known).await? {
            Some(mut vm) if owned_by(&vm, cd) => {
                trim_vm(&mut vm);
                return Ok((known, Some(vm)));
            }
            _ => pool_vms.forget(&uid),
        }
    }
    if let Some(vm) = ctx
        .caches
        .claimed_by(vm_ns, &name)
        .into_iter()
        .find(|vm| owned_by(vm, cd))
    {
        return Ok((vm.name_any(), Some(vm)));
    }
    Ok((default, None))
}

/// Claims a ready VM of the desk's pool, if one is left; the VM's name and the VM.
pub async fn claim_from_pool(
    cd: &Cyberdesk,
    ctx: &Shared,
    pool_vms: &PoolVms,
    ns: &str,
    vms: &Api<VirtualMachine>,
) -> Result<Option<(String, VirtualMachine)>, Error> {
    let Some(pool_name) = cd.spec.pool.as_deref() else {
        return Ok(None);
    };
    let count = |result: &str, n: u64| {
        ctx.metrics
            .pool_claims
            .with_label_values(&[result])
            .inc_by(n);
    };
    // A pool being deleted hands out nothing; pools are not served where VMs live in
    // another namespace (`--vm-namespace`).
    let pool = ctx
        .caches
        .pool(ns, pool_name)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|_| ctx.placement.namespace.is_none());
    let (Some(pool), Some(owner)) = (pool, owner_reference(cd, &ctx.placement, ns)?) else {
        count("miss", 1);
        return Ok(None);
    };
    // The pool's template must still be usable here (its allowed namespaces may have
    // changed since the VMs booted); if not, the cold render reports why.
    if load_template(pool.spec.template.as_deref(), ctx, ns).is_err() {
        count("miss", 1);
        return Ok(None);
    }
    // A claim of an earlier pass (or leader) the cache does not show yet: read live, once
    // per desk, so that a desk never claims a second VM.
    let selector = format!("{}={}", names::LABEL_DESK_UID, cd.uid().unwrap_or_default());
    let mine = vms.list(&ListParams::default().labels(&selector)).await?;
    if let Some(mut vm) = mine.items.into_iter().find(|vm| owned_by(vm, cd)) {
        trim_vm(&mut vm);
        let vm_name = vm.name_any();
        pool_vms.record(&cd.uid().unwrap_or_default(), &vm_name);
        return Ok(Some((vm_name, vm)));
    }
    let vm_ns = ctx.placement.vm_namespace(ns);
    let members = ctx.caches.pool_vms(vm_ns, pool_name);
    let t = Instant::now();
    let claimed = claim(vms, cd, &pool, &members, &owner, pool_vms).await;
    match ctx.time("claim_vm", t, claimed)? {
        Claimed::Hit(mut vm) => {
            count("hit", 1);
            let vm_name = vm.name_any();
            tracing::info!(vm = %vm_name, pool = %pool_name, "claimed a VirtualMachine from the pool");
            ctx.announce(
                cd,
                Announcement::new(
                    Reason::VirtualMachineClaimed,
                    format!("claimed VirtualMachine {vm_name} from pool {pool_name}"),
                ),
            );
            trim_vm(&mut vm);
            Ok(Some((vm_name, *vm)))
        }
        Claimed::Miss { conflicts } => {
            count("conflict", conflicts as u64);
            count("miss", 1);
            tracing::info!(pool = %pool_name, conflicts, "no ready VM in the pool; booting one for the desk");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests;
