//! The controller's caches: one watch per kind, each object trimmed to what a reconcile
//! reads before it is stored, so memory grows with the number of desks and not with the
//! size of their templates, user data or a tenant's annotations.
//!
//! Trimmed: `managedFields` and annotations everywhere (the reconciler reads neither). From
//! desks and pools every label: nothing the controllers do depends on them, and Kubernetes
//! does not limit how many a tenant adds (the validating webhook does,
//! `--max-metadata-bytes`, but desks stored before it or with it raised are listed too).
//! From VMs and VMIs every label but the desk labels, which map an event to its desk, and
//! every spec field but a VM's `runStrategy` and `running`. Of a VM's status only
//! `printableStatus`, `ready` and `created` stay; of a VMI's, the phase, the `Ready`
//! condition's type and status, and each interface's name and addresses. A VMI's owner
//! references go too (its desk is found by label). Desks are cached as trimmed objects
//! (kube's controller takes their store); VMs and VMIs as compact records
//! ([`super::records`]), from the same trimmed objects.

use futures::{Stream, TryStreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use super::records::{Record, RecordStore, VmRecord, VmiRecord, record_store};
use crate::backoff::watch_backoff;
use crate::model::kubevirt::KubevirtCondition;
use crate::model::{Cyberdesk, CyberdeskPool, VirtualMachine, VirtualMachineInstance, names};

/// Drops what no reconcile reads from any object's metadata.
fn trim_metadata(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

/// Labels that tie a VM or VMI to its desk or its warm pool; every other label is dropped.
const DESK_LABELS: [&str; 5] = [
    names::LABEL_INSTANCE,
    names::LABEL_DESK_NAMESPACE,
    names::LABEL_DESK_UID,
    names::LABEL_POOL,
    names::LABEL_POOL_STATE,
];

/// Keeps of a VM's or VMI's metadata what maps it to its desk or pool, and when a pool VM
/// was claimed.
fn trim_kubevirt_metadata(meta: &mut kube::api::ObjectMeta) {
    let claimed_at = meta
        .annotations
        .as_mut()
        .and_then(|a| a.remove_entry(names::ANNOTATION_CLAIMED_AT));
    trim_metadata(meta);
    meta.annotations = claimed_at.map(|entry| [entry].into());
    meta.labels = meta.labels.take().and_then(|mut labels| {
        let kept: std::collections::BTreeMap<_, _> = DESK_LABELS
            .iter()
            .filter_map(|key| labels.remove_entry(*key))
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
}

/// A desk as the reconciler reads it: spec, status and metadata without annotations or
/// labels.
pub fn trim_desk(desk: &mut Cyberdesk) {
    trim_metadata(&mut desk.metadata);
    desk.metadata.labels = None;
}

/// A pool as the pool controller and a claiming desk read it: without labels either.
pub fn trim_pool(pool: &mut CyberdeskPool) {
    trim_metadata(&mut pool.metadata);
    pool.metadata.labels = None;
}

/// A VM as the reconciler reads it: name, times, owners, desk label, run strategy, status.
pub fn trim_vm(vm: &mut VirtualMachine) {
    trim_kubevirt_metadata(&mut vm.metadata);
    vm.spec.template = None;
    vm.spec.extra.clear();
    if let Some(status) = vm.status.as_mut() {
        status.conditions = None;
        status.extra.clear();
    }
}

/// A VMI as the reconciler reads it: name, times, desk label, phase, readiness, addresses.
pub fn trim_vmi(vmi: &mut VirtualMachineInstance) {
    trim_kubevirt_metadata(&mut vmi.metadata);
    vmi.metadata.owner_references = None;
    vmi.spec.extra.clear();
    if let Some(status) = vmi.status.as_mut() {
        status.extra.clear();
        status.node_name = None;
        status.conditions = status.conditions.take().map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| KubevirtCondition {
                    type_: c.type_,
                    status: c.status,
                    ..Default::default()
                })
                .collect()
        });
        for iface in status.interfaces.iter_mut().flatten() {
            iface.mac = None;
            iface.extra.clear();
        }
    }
}

/// How many initial lists a watch has completed. The first fills its cache; each later one
/// (a relist, after the watch fell too far behind: across an apiserver restart, say) swaps
/// a fresh cache in. kube's controller reads a desk from the cache when its reconcile runs,
/// and the objects a relist touches are queued before the fresh cache is swapped in: a desk
/// created during the gap finds no cached object, its reconcile is dropped and nothing
/// queues it again. So a relist is followed by a reconcile of everything ([`Lists::relists`]).
#[derive(Clone)]
pub struct Lists(tokio::sync::watch::Receiver<u64>);

impl Lists {
    /// A count at zero, and what counts.
    pub fn new() -> (tokio::sync::watch::Sender<u64>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (tx, Self(rx))
    }

    /// Waits for the first list. Any number of passes may wait; kube's
    /// `Store::wait_until_ready` wakes only the last of several tasks waiting at once.
    pub async fn wait_listed(&self) -> Result<(), CachesGone> {
        let mut lists = self.0.clone();
        lists
            .wait_for(|n| *n > 0)
            .await
            .map(drop)
            .map_err(|_| CachesGone)
    }

    /// Yields after each relist; relists close together may yield once.
    pub fn relists(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.0.clone(), |mut lists| async move {
            loop {
                lists.changed().await.ok()?;
                if *lists.borrow_and_update() > 1 {
                    return Some(((), lists));
                }
            }
        })
    }
}

/// A watch of `api` (with `config`) that trims each object with `trim`, keeps the trimmed
/// copies in the returned store, and yields each object it touched, trimmed (the
/// controller's trigger), and the count of its initial lists. Watch errors back off like
/// every other watch of the operator.
pub fn trimmed_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Lists,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store();
    let (stream, lists) = cached_watch(api, config, trim, move |event| {
        writer.apply_watcher_event(event)
    });
    (store, stream, lists)
}

/// As [`trimmed_watch`], keeping a compact record of each object instead of the object.
pub fn recorded_watch<R>(
    api: Api<R::Kind>,
    config: watcher::Config,
    trim: fn(&mut R::Kind),
) -> (
    RecordStore<R>,
    impl Stream<Item = Result<R::Kind, watcher::Error>> + Send + 'static,
    Lists,
)
where
    R: Record,
    R::Kind: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    R::Kind: Send + Sync + 'static,
{
    let (store, mut writer) = record_store::<R>();
    let (stream, lists) = cached_watch(api, config, trim, move |event| writer.apply(event));
    (store, stream, lists)
}

/// The watch behind both: each trimmed event goes to `cache` and is counted when it ends
/// an initial list; the objects it touched are yielded.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut cache: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Lists,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (listed, lists) = Lists::new();
    let stream = watcher(api, config)
        .backoff(watch_backoff())
        .modify(trim)
        .map_ok(move |event| {
            cache(&event);
            if matches!(event, watcher::Event::InitDone) {
                listed.send_modify(|n| *n += 1);
            }
            event
        })
        .touched_objects();
    (stream, lists)
}

/// A watch behind the caches stopped before it had listed once (at shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachesGone;

/// What a reconcile reads from the caches instead of the apiserver.
#[derive(Clone)]
pub struct Caches {
    pub desks: Store<Cyberdesk>,
    pub vms: RecordStore<VmRecord>,
    pub vmis: RecordStore<VmiRecord>,
    /// Warm pools (`None` only where no pool watch runs: tests and benches), and whether
    /// their watch has listed.
    pub pools: Option<(Store<CyberdeskPool>, Lists)>,
}

impl Caches {
    pub fn new(
        desks: Store<Cyberdesk>,
        vms: RecordStore<VmRecord>,
        vmis: RecordStore<VmiRecord>,
    ) -> Self {
        Self {
            desks,
            vms,
            vmis,
            pools: None,
        }
    }

    /// These caches, with the warm pools' store and the count of its lists.
    pub fn with_pools(mut self, pools: Store<CyberdeskPool>, lists: Lists) -> Self {
        self.pools = Some((pools, lists));
        self
    }

    /// The cached pool `name` in `ns`.
    pub fn pool(&self, ns: &str, name: &str) -> Option<std::sync::Arc<CyberdeskPool>> {
        let (pools, _) = self.pools.as_ref()?;
        pools.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
    }

    /// The VMs in `ns` booted for pool `pool` (claimed or not).
    pub fn pool_vms(&self, ns: &str, pool: &str) -> Vec<VirtualMachine> {
        self.vms.select(ns, |r| r.pool() == Some(pool))
    }

    /// The pool VMs in `ns` claimed by a desk called `desk` (by label: an earlier desk of
    /// that name may have one still; ownership is for the caller to check).
    pub fn claimed_by(&self, ns: &str, desk: &str) -> Vec<VirtualMachine> {
        self.vms.select(ns, |r| r.claimed_by() == Some(desk))
    }

    /// Waits until the VM, VMI and pool watches have listed once. A pass before that would
    /// take every VM for missing (a 409 saves the VM, but the status would be written from
    /// nothing), or a pooled desk's pool: after a restart, the desks arrive before their
    /// VMs. `Err` when the watches stopped first.
    pub async fn wait_filled(&self) -> Result<(), CachesGone> {
        self.vms.wait_until_ready().await.map_err(|_| CachesGone)?;
        self.vmis.wait_until_ready().await.map_err(|_| CachesGone)?;
        if let Some((_, lists)) = &self.pools {
            lists.wait_listed().await?;
        }
        Ok(())
    }

    /// The cached VM `name` in `ns`, rebuilt from its record.
    pub fn vm(&self, ns: &str, name: &str) -> Option<VirtualMachine> {
        self.vms.get(ns, name)
    }

    /// The cached VMI `name` in `ns`, rebuilt from its record.
    pub fn vmi(&self, ns: &str, name: &str) -> Option<VirtualMachineInstance> {
        self.vmis.get(ns, name)
    }
}

#[cfg(test)]
mod tests;
