use super::*;
use serde_json::{Value, json};

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

#[tokio::test]
async fn only_a_list_after_the_first_asks_for_a_pass_over_everything() {
    use futures::{FutureExt, StreamExt};
    let (count, lists) = Lists::new();
    let mut relists = Box::pin(lists.relists());
    assert_eq!(relists.next().now_or_never(), None);
    count.send_modify(|n| *n += 1);
    lists.wait_listed().await.expect("listed");
    // The first list fills the cache; the reconciles it queued run after it.
    assert_eq!(relists.next().now_or_never(), None);
    count.send_modify(|n| *n += 1);
    assert_eq!(relists.next().now_or_never(), Some(Some(())));
    assert_eq!(relists.next().now_or_never(), None);
    count.send_modify(|n| *n += 1);
    assert_eq!(relists.next().now_or_never(), Some(Some(())));
    drop(count);
    assert_eq!(relists.next().await, None);
    assert_eq!(lists.wait_listed().await, Ok(()));
}

#[tokio::test]
async fn every_waiting_pass_wakes_when_the_caches_fill() {
    let (desks, _) = reflector::store::<Cyberdesk>();
    let (vms, mut vm_writer) = record_store::<VmRecord>();
    let (vmis, mut vmi_writer) = record_store::<VmiRecord>();
    let (pools, _) = reflector::store::<CyberdeskPool>();
    let (pools_listed, lists) = Lists::new();
    let caches = Caches::new(desks, vms, vmis).with_pools(pools, lists);
    // Many waiters: every one must wake (kube's own store readiness wakes one).
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let caches = caches.clone();
            tokio::spawn(async move { caches.wait_filled().await })
        })
        .collect();
    tokio::task::yield_now().await;
    vm_writer.apply(&watcher::Event::InitDone);
    vmi_writer.apply(&watcher::Event::InitDone);
    // Let every waiter get as far as the pools before they are listed.
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    pools_listed.send_replace(1);
    for waiter in waiters {
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(Ok(())))), "a pass was left waiting");
    }
}

#[test]
fn a_trimmed_pool_drops_labels_and_annotations() {
    let labels: serde_json::Map<String, Value> = (0..1000)
        .map(|i| (format!("l{i}"), Value::String("v".repeat(63))))
        .collect();
    let mut pool: CyberdeskPool = serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
        "metadata": {"name": "p", "namespace": "n", "labels": labels,
            "annotations": {"note": "y".repeat(1000)}},
        "spec": {"size": 2},
    }))
    .expect("pool");
    let spec = pool.spec.clone();
    trim_pool(&mut pool);
    assert!(pool.metadata.labels.is_none() && pool.metadata.annotations.is_none());
    assert_eq!(pool.spec, spec);
}

#[test]
fn a_trimmed_desk_drops_a_tenants_labels_and_annotations() {
    let labels: serde_json::Map<String, Value> = (0..1000)
        .map(|i| (format!("l{i}"), Value::String("v".repeat(63))))
        .collect();
    let mut desk: Cyberdesk = serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "a", "namespace": "n", "finalizers": ["cyberdesk.io/vm-cleanup"],
            "labels": labels,
            "annotations": {"note": "y".repeat(200_000),
                "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"timeoutMs": 60000},
    }))
    .expect("desk");
    let spec = desk.spec.clone();
    trim_desk(&mut desk);
    assert!(desk.metadata.annotations.is_none());
    assert!(desk.metadata.labels.is_none());
    assert!(desk.metadata.managed_fields.is_none());
    assert_eq!(desk.spec, spec);
    assert_eq!(desk.metadata.finalizers.as_ref().map(Vec::len), Some(1));
}
