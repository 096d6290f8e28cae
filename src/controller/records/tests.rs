use super::*;
use crate::controller::cache::{trim_vm, trim_vmi};
use crate::controller::ownership::owned_by;
use crate::model::Cyberdesk;
use serde_json::json;

fn vm(owner: Option<&str>) -> VirtualMachine {
    let mut meta = json!({"name": "cyberdesk-a", "namespace": "n", "uid": "vm-1",
        "creationTimestamp": "2026-11-28T10:00:00Z",
        "labels": {names::LABEL_INSTANCE: "a", names::LABEL_DESK_UID: "d-1"}});
    if let Some(uid) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "cyberdesk.io/v1alpha1",
            "kind": "Cyberdesk", "name": "a", "uid": uid, "controller": true}]);
    }
    serde_json::from_value(
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": meta,
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {}}}},
        "status": {"printableStatus": "Running", "ready": true, "created": true}}),
    )
    .expect("vm")
}

fn desk(uid: &str) -> Cyberdesk {
    serde_json::from_value(
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "a", "namespace": "n", "uid": uid}, "spec": {}}),
    )
    .expect("desk")
}

#[test]
fn a_rebuilt_vm_reads_as_the_trimmed_one() {
    let mut trimmed = vm(Some("d-1"));
    trim_vm(&mut trimmed);
    let rebuilt = VmRecord::of(&trimmed).rebuild("n", "cyberdesk-a");
    assert_eq!(rebuilt.run_strategy(), Some("Always"));
    assert_eq!(rebuilt.printable_status(), Some("Running"));
    assert!(rebuilt.is_ready());
    assert_eq!(rebuilt.status.as_ref().and_then(|s| s.created), Some(true));
    assert_eq!(rebuilt.metadata.uid.as_deref(), Some("vm-1"));
    assert_eq!(
        rebuilt.metadata.creation_timestamp,
        trimmed.metadata.creation_timestamp
    );
    assert_eq!(rebuilt.metadata.namespace.as_deref(), Some("n"));
    assert!(owned_by(&rebuilt, &desk("d-1")));
    assert!(!owned_by(&rebuilt, &desk("d-2")));
    // An owned VM needs no label for its ownership, and keeps none.
    assert!(rebuilt.metadata.labels.is_none());
}

#[test]
fn a_vm_without_owners_keeps_its_desk_uid_as_ownership() {
    let mut elsewhere = vm(None);
    trim_vm(&mut elsewhere);
    let rebuilt = VmRecord::of(&elsewhere).rebuild("kubevirt", "a");
    assert!(rebuilt.metadata.owner_references.is_none());
    assert!(owned_by(&rebuilt, &desk("d-1")));
    assert!(!owned_by(&rebuilt, &desk("d-2")));
}

#[test]
fn a_vm_owned_by_something_else_is_not_taken_for_an_orphan_or_ours() {
    let mut other: VirtualMachine = vm(None);
    other.metadata.owner_references = Some(vec![OwnerReference {
        kind: "VirtualMachinePool".into(),
        uid: "p-1".into(),
        ..Default::default()
    }]);
    let rebuilt = VmRecord::of(&other).rebuild("n", "x");
    assert_eq!(
        rebuilt.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
    assert!(!owned_by(&rebuilt, &desk("d-1")));
}

#[test]
fn a_rebuilt_vmi_reads_as_the_trimmed_one() {
    let mut vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "cyberdesk-a", "namespace": "n", "uid": "vmi-1",
            "deletionTimestamp": "2026-11-28T10:00:00Z"},
        "spec": {},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "Paused", "status": "True"}],
            "interfaces": [{"name": "default", "ipAddresses": ["10.0.0.7"]}]}}))
    .expect("vmi");
    trim_vmi(&mut vmi);
    let rebuilt = VmiRecord::of(&vmi).rebuild("n", "cyberdesk-a");
    assert_eq!(rebuilt.phase(), Some("Running"));
    assert!(rebuilt.is_ready());
    assert_eq!(rebuilt.ip_address(), Some("10.0.0.7"));
    assert!(rebuilt.metadata.deletion_timestamp.is_some());
    let pending = VmiRecord::of(&VirtualMachineInstance::new("b", Default::default()));
    let rebuilt = pending.rebuild("n", "b");
    assert!(rebuilt.status.is_none() && !rebuilt.is_ready());
}

#[test]
fn a_relist_replaces_the_records_when_it_is_done() {
    let (store, mut writer) = record_store::<VmRecord>();
    let named = |name: &str| {
        let mut v = vm(Some("d-1"));
        v.metadata.name = Some(name.into());
        v
    };
    writer.apply(&watcher::Event::Apply(named("gone")));
    writer.apply(&watcher::Event::Init);
    writer.apply(&watcher::Event::InitApply(named("kept")));
    // Until the relist is done, passes still see the old records.
    assert!(store.get("n", "gone").is_some() && store.get("n", "kept").is_none());
    writer.apply(&watcher::Event::InitDone);
    assert!(store.get("n", "gone").is_none());
    assert_eq!(
        store.get("n", "kept").and_then(|v| v.metadata.name),
        Some("kept".into())
    );
    writer.apply(&watcher::Event::Delete(named("kept")));
    assert!(store.is_empty());
    let all = {
        writer.apply(&watcher::Event::Apply(named("x")));
        store.all()
    };
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].metadata.namespace.as_deref(), Some("n"));
}
