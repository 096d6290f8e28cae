use super::*;

fn kopf_desk() -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "d1", "namespace": "cyberdesk-system", "uid": "u1",
                     "finalizers": [KOPF_FINALIZER]},
        "spec": {"timeoutMs": 3_600_000},
        "status": {"cyberdesk_create": {"virtualMachineRef": "d1",
            "startTime": "2026-01-01T10:00:00Z", "expiryTime": "2026-01-01T11:00:00Z",
            "lastPhase": "Running"}}
    }))
    .expect("desk")
}

fn vm(labels: Value, owners: Value) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "d1", "namespace": "kubevirt", "resourceVersion": "7",
                     "labels": labels, "ownerReferences": owners},
        "spec": {}
    }))
    .expect("vm")
}

#[test]
fn a_kopf_desk_is_legacy_and_names_its_vm() {
    let d = kopf_desk();
    assert!(is_legacy(&d) && has_kopf_finalizer(&d));
    assert_eq!(recorded_vm_name(&d), Some("d1"));
    // The block alone (kopf's finalizer gone) still counts, until the desk has a VM
    // reference of this operator's.
    let mut no_finalizer = d.clone();
    no_finalizer.metadata.finalizers = Some(vec![names::FINALIZER.into()]);
    assert!(is_legacy(&no_finalizer));
    if let Some(s) = no_finalizer.status.as_mut() {
        s.virtual_machine_ref = Some("d1".into());
    }
    assert!(!is_legacy(&no_finalizer));
}

#[test]
fn a_block_this_operator_wrote_is_not_the_previous_operators() {
    // A desk whose VM could not be made: no VM reference, a block without one.
    let mut d = kopf_desk();
    d.metadata.finalizers = Some(vec![names::FINALIZER.into()]);
    if let Some(block) = d.status.as_mut().and_then(|s| s.legacy.as_mut()) {
        block.virtual_machine_ref = None;
        block.written_by = Some(LEGACY_WRITER.into());
    }
    assert!(!is_legacy(&d));
    if let Some(block) = d.status.as_mut().and_then(|s| s.legacy.as_mut()) {
        block.written_by = None;
    }
    assert!(is_legacy(&d));
}

#[test]
fn only_an_unclaimed_vm_labelled_for_this_desk_is_adoptable() {
    let d = kopf_desk();
    let old = json!({"app": "cyberdesk", "cyberdesk-instance": "d1"});
    assert!(adoptable(&vm(old.clone(), json!([])), &d));
    assert!(!adoptable(
        &vm(
            json!({"app": "cyberdesk", "cyberdesk-instance": "other"}),
            json!([])
        ),
        &d
    ));
    // Having the desk's name is not enough: the labels must say it was made for it.
    assert!(!adoptable(&vm(json!(null), json!([])), &d));
    assert!(!adoptable(
        &vm(json!({"cyberdesk-instance": "d1"}), json!([])),
        &d
    ));
    assert!(!adoptable(
        &vm(
            json!({"app": "cyberdesk", "cyberdesk-instance": "d1", names::LABEL_DESK_UID: "u2"}),
            json!([])
        ),
        &d
    ));
    assert!(!adoptable(
        &vm(
            json!({"app": "cyberdesk", "cyberdesk-instance": "d1", names::LABEL_DESK_NAMESPACE: "team-x"}),
            json!([])
        ),
        &d
    ));
    assert!(!adoptable(
        &vm(
            json!({"app": "cyberdesk", "cyberdesk-instance": "d1", names::LABEL_POOL: "p"}),
            json!([])
        ),
        &d
    ));
    let owned = json!([{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "x"}]);
    assert!(!adoptable(&vm(old, owned), &d));
}

#[test]
fn the_claim_keeps_the_old_labels_and_is_guarded() {
    let v = vm(json!({"app": "cyberdesk", "team": "x"}), json!([]));
    let labels = crate::model::placement::vm_labels("cyberdesk-system", "d1", "u1");
    let patch = adopt_patch(&v, &labels, None);
    assert_eq!(
        patch[0],
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
    );
    assert_eq!(patch[1]["value"]["team"], "x");
    assert_eq!(patch[1]["value"][names::LABEL_DESK_UID], "u1");
    assert_eq!(patch.as_array().map(Vec::len), Some(2));
    let owner = json!({"kind": "Cyberdesk", "uid": "u1"});
    assert_eq!(
        adopt_patch(&v, &labels, Some(&owner))[2]["value"],
        json!([owner])
    );
}

#[test]
fn kopfs_finalizer_is_swapped_in_place() {
    let mut d = kopf_desk();
    d.metadata.finalizers = Some(vec!["a/b".into(), KOPF_FINALIZER.into()]);
    assert_eq!(swapped_finalizers(&d), ["a/b", names::FINALIZER]);
    d.metadata.finalizers = Some(vec![KOPF_FINALIZER.into(), names::FINALIZER.into()]);
    assert_eq!(swapped_finalizers(&d), [names::FINALIZER]);
}

#[test]
fn the_recorded_expiry_is_kept() {
    let d = kopf_desk();
    let start = legacy_start(&d, 3_600_000).expect("start");
    assert_eq!(time::format(start), "2026-01-01T10:00:00Z");
    // A different timeout keeps the expiry, not the start.
    let start = legacy_start(&d, 1_800_000).expect("start");
    assert_eq!(
        time::format(crate::controller::desk::expiry::expiry(start, 1_800_000)),
        "2026-01-01T11:00:00Z"
    );
}
