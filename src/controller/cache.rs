//! The controller's caches: one watch per kind, each object trimmed to what a reconcile
//! reads before it is stored, so memory grows with the number of desks and not with the
//! size of their templates, user data or a tenant's annotations.
//!
//! Trimmed: `managedFields` and annotations everywhere (the reconciler reads neither). From
//! VMs and VMIs also every label but `cyberdesk-instance`, which maps an event to its desk
//! and is then dropped from the cached copy, and every spec field but a VM's `runStrategy`
//! and `running`. Of a VM's status only `printableStatus`, `ready` and `created` stay; of a
//! VMI's, the phase, the `Ready` condition's type and status, and each interface's name
//! and addresses. A VMI's owner references go too (its desk is found by label).

use futures::{Stream, TryStreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::backoff::watch_backoff;
use crate::model::kubevirt::KubevirtCondition;
use crate::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance, names};

/// Drops what no reconcile reads from any object's metadata.
fn trim_metadata(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

/// Labels that tie a VM or VMI to its desk; every other label is dropped.
const DESK_LABELS: [&str; 3] = [
    names::LABEL_INSTANCE,
    names::LABEL_DESK_NAMESPACE,
    names::LABEL_DESK_UID,
];

/// Keeps of a VM's or VMI's metadata what maps it to its desk.
fn trim_kubevirt_metadata(meta: &mut kube::api::ObjectMeta) {
    trim_metadata(meta);
    meta.labels = meta.labels.take().and_then(|mut labels| {
        let kept: std::collections::BTreeMap<_, _> = DESK_LABELS
            .iter()
            .filter_map(|key| labels.remove_entry(*key))
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
}

/// A desk as the reconciler reads it: spec, status and metadata without annotations.
pub fn trim_desk(desk: &mut Cyberdesk) {
    trim_metadata(&mut desk.metadata);
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

/// Drops a VM's or VMI's labels from the copy kept in the cache: the desk labels map an
/// event to its desk on the way through; a pass finds the VM by name. A label map costs
/// a B-tree node (about 540 bytes) even for one label.
pub fn unlabel<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().labels = None;
}

/// As [`unlabel`], but a VM without owner references (one in another namespace than its
/// desk, `--vm-namespace`) keeps its desk-uid label: that label is its ownership.
pub fn unlabel_vm(vm: &mut VirtualMachine) {
    let owned_by_reference = vm
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    let uid = vm
        .metadata
        .labels
        .take()
        .and_then(|mut l| l.remove_entry(names::LABEL_DESK_UID))
        .filter(|_| !owned_by_reference);
    vm.metadata.labels = uid.map(|entry| [entry].into());
}

/// A watch of `api` (with `config`) that trims each object with `trim`, keeps the trimmed
/// copies (after `for_store`, when given) in the returned store, and yields each object it
/// touched, trimmed (the controller's trigger). Watch errors back off like every other
/// watch of the operator.
pub fn trimmed_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    for_store: Option<fn(&mut K)>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(watch_backoff())
        .modify(trim)
        .map_ok(move |event| {
            match for_store {
                Some(f) => writer.apply_watcher_event(&event.clone().modify(f)),
                None => writer.apply_watcher_event(&event),
            }
            event
        })
        .touched_objects();
    (store, stream)
}

/// What a reconcile reads from the caches instead of the apiserver.
#[derive(Clone)]
pub struct Caches {
    pub desks: Store<Cyberdesk>,
    pub vms: Store<VirtualMachine>,
    pub vmis: Store<VirtualMachineInstance>,
    /// True once the VM and VMI watches have listed once.
    filled: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Starts the task that marks the caches filled once the VM and VMI watches have
    /// listed once.
    pub fn new(
        desks: Store<Cyberdesk>,
        vms: Store<VirtualMachine>,
        vmis: Store<VirtualMachineInstance>,
    ) -> Self {
        let (tx, filled) = tokio::sync::watch::channel(false);
        let (vm_store, vmi_store) = (vms.clone(), vmis.clone());
        // A store's own readiness wakes only one waiter (it wraps a oneshot channel); this
        // task is that one waiter and passes it on to every pass through a watch channel.
        tokio::spawn(async move {
            if vm_store.wait_until_ready().await.is_ok()
                && vmi_store.wait_until_ready().await.is_ok()
            {
                let _ = tx.send(true);
            }
        });
        Self {
            desks,
            vms,
            vmis,
            filled,
        }
    }

    /// Waits until the VM and VMI watches have listed once. A pass before that would take
    /// every VM for missing (a 409 saves the VM, but the status would be written from
    /// nothing): after a restart, the desks arrive before their VMs. `Err` when the
    /// watches stopped first.
    pub async fn wait_filled(&self) -> Result<(), tokio::sync::watch::error::RecvError> {
        let mut filled = self.filled.clone();
        filled.wait_for(|f| *f).await.map(drop)
    }

    /// The cached VM `name` in `ns`, owned copy.
    pub fn vm(&self, ns: &str, name: &str) -> Option<VirtualMachine> {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.vms.get(&key).map(|vm| (*vm).clone())
    }

    /// The cached VMI `name` in `ns`, owned copy.
    pub fn vmi(&self, ns: &str, name: &str) -> Option<VirtualMachineInstance> {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.vmis.get(&key).map(|vmi| (*vmi).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trimmed_vm_keeps_what_the_reconciler_reads() {
        let mut vm: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "cyberdesk-a", "namespace": "n", "uid": "u",
                "labels": {"cyberdesk-instance": "a", "app.kubernetes.io/managed-by": "x"},
                "annotations": {"big": "x".repeat(200_000)},
                "ownerReferences": [{"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                    "name": "a", "uid": "d", "controller": true}],
                "managedFields": [{"manager": "m", "operation": "Apply"}]},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {}}},
                "dataVolumeTemplates": []},
            "status": {"printableStatus": "Running", "ready": true, "volumeSnapshotStatuses": [],
                "conditions": [{"type": "Ready", "status": "True", "message": "m"}]},
        }))
        .expect("vm");
        trim_vm(&mut vm);
        assert_eq!(vm.run_strategy(), Some("Always"));
        assert_eq!(vm.printable_status(), Some("Running"));
        assert!(vm.is_ready());
        assert_eq!(vm.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            vm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("cyberdesk-instance")),
            Some(&"a".to_string())
        );
        assert_eq!(vm.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(vm.status.as_ref().is_some_and(|s| s.conditions.is_none()));
        assert!(vm.metadata.annotations.is_none());
        assert!(vm.metadata.managed_fields.is_none());
        assert!(vm.spec.template.is_none() && vm.spec.extra.is_empty());
        assert!(serde_json::to_string(&vm).expect("json").len() < 1000);
    }

    #[test]
    fn a_trimmed_vmi_keeps_phase_readiness_addresses_and_its_desk() {
        let mut vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "cyberdesk-a", "namespace": "n",
                "labels": {"cyberdesk-instance": "a", "kubevirt.io/nodeName": "node-1"},
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "name": "cyberdesk-a", "uid": "v", "controller": true}]},
            "spec": {"domain": {"devices": {}}},
            "status": {"phase": "Running", "nodeName": "node-1",
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "ok",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "LiveMigratable", "status": "False", "reason": "NotMigratable"}],
                "interfaces": [{"name": "default", "ipAddress": "10.0.0.5",
                    "ipAddresses": ["10.0.0.5"], "mac": "52:54:00:00:00:01",
                    "infoSource": "domain, guest-agent"}],
                "guestOSInfo": {"name": "Ubuntu"}, "volumeStatus": []},
        }))
        .expect("vmi");
        let before = vmi.clone();
        trim_vmi(&mut vmi);
        assert_eq!(vmi.phase(), before.phase());
        assert!(vmi.is_ready());
        assert_eq!(vmi.ip_address(), Some("10.0.0.5"));
        assert_eq!(
            owner_label(&vmi),
            Some("a"),
            "the label that maps the VMI to its desk"
        );
        let s = vmi.status.as_ref().expect("status");
        let conditions = s.conditions.as_ref().expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].message.is_none() && conditions[0].last_transition_time.is_none());
        let iface = &s.interfaces.as_ref().expect("interfaces")[0];
        assert_eq!(iface.name.as_deref(), Some("default"));
        assert_eq!(iface.ip_addresses, Some(vec!["10.0.0.5".to_string()]));
        assert!(iface.mac.is_none() && iface.extra.is_empty());
        assert!(s.extra.is_empty() && s.node_name.is_none() && vmi.spec.extra.is_empty());
        assert_eq!(vmi.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(vmi.metadata.owner_references.is_none());
    }

    fn owner_label(vmi: &VirtualMachineInstance) -> Option<&str> {
        vmi.metadata
            .labels
            .as_ref()?
            .get(names::LABEL_INSTANCE)
            .map(String::as_str)
    }

    #[test]
    fn a_vm_elsewhere_keeps_its_ownership_label_in_the_store() {
        let labelled = |owned: bool| -> VirtualMachine {
            let mut meta = json!({"name": "a", "namespace": "kubevirt", "labels": {
                names::LABEL_INSTANCE: "a", names::LABEL_DESK_NAMESPACE: "team-a",
                names::LABEL_DESK_UID: "u-1", "app": "cyberdesk"}});
            if owned {
                meta["ownerReferences"] = json!([{"apiVersion": "cyberdesk.io/v1alpha1",
                    "kind": "Cyberdesk", "name": "a", "uid": "u-1"}]);
            }
            serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachine", "metadata": meta, "spec": {}}))
            .expect("vm")
        };
        // The trigger copy keeps the three desk labels, so the event maps to its desk.
        let mut trigger = labelled(false);
        trim_vm(&mut trigger);
        let keys: Vec<&str> = trigger
            .metadata
            .labels
            .as_ref()
            .expect("labels")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                names::LABEL_INSTANCE,
                names::LABEL_DESK_NAMESPACE,
                names::LABEL_DESK_UID
            ]
        );
        // The stored copy keeps only the uid, and only without an ownerReference.
        unlabel_vm(&mut trigger);
        let stored = trigger.metadata.labels.expect("labels");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[names::LABEL_DESK_UID], "u-1");
        let mut owned = labelled(true);
        trim_vm(&mut owned);
        unlabel_vm(&mut owned);
        assert!(owned.metadata.labels.is_none());
    }

    #[tokio::test]
    async fn every_waiting_pass_wakes_when_the_caches_fill() {
        let (desks, _) = reflector::store::<Cyberdesk>();
        let (vms, mut vm_writer) = reflector::store::<VirtualMachine>();
        let (vmis, mut vmi_writer) = reflector::store::<VirtualMachineInstance>();
        let caches = Caches::new(desks, vms, vmis);
        // More waiters than a store's own readiness would wake (it wakes one).
        let waiters: Vec<_> = (0..40)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.wait_filled().await })
            })
            .collect();
        tokio::task::yield_now().await;
        vm_writer.apply_watcher_event(&watcher::Event::InitDone);
        vmi_writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(Ok(())))), "a pass was left waiting");
        }
    }

    #[test]
    fn a_trimmed_desk_drops_a_tenants_annotations() {
        let mut desk: Cyberdesk = serde_json::from_value(json!({
            "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
            "metadata": {"name": "a", "namespace": "n", "finalizers": ["cyberdesk.io/vm-cleanup"],
                "annotations": {"note": "y".repeat(200_000),
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"timeoutMs": 60000},
        }))
        .expect("desk");
        let spec = desk.spec.clone();
        trim_desk(&mut desk);
        assert!(desk.metadata.annotations.is_none());
        assert!(desk.metadata.managed_fields.is_none());
        assert_eq!(desk.spec, spec);
        assert_eq!(desk.metadata.finalizers.as_ref().map(Vec::len), Some(1));
    }
}
