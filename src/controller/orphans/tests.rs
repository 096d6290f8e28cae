use super::*;
use serde_json::json;

fn vm(name: &str, desk_uid: Option<&str>, owned: bool, deleting: bool) -> VirtualMachine {
    let mut meta = json!({"name": name, "namespace": "kubevirt", "uid": format!("vm-{name}")});
    if let Some(uid) = desk_uid {
        meta["labels"] = json!({names::LABEL_DESK_UID: uid});
    }
    if owned {
        meta["ownerReferences"] = json!([{"apiVersion": "cyberdesk.io/v1alpha1",
            "kind": "Cyberdesk", "name": name, "uid": "d"}]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": meta, "spec": {}}),
    )
    .expect("vm")
}

#[test]
fn only_labelled_unowned_vms_of_missing_desks_are_suspects() {
    let vms = [
        vm("alive", Some("d-alive"), false, false),
        vm("orphan", Some("d-gone"), false, false),
        vm("unlabelled", None, false, false),
        vm("owned", Some("d-gone"), true, false),
        vm("going", Some("d-gone"), false, true),
    ];
    let desks: HashSet<String> = ["d-alive".to_string()].into();
    let found = suspects(&vms, &desks);
    assert_eq!(
        found,
        [Suspect {
            namespace: "kubevirt".into(),
            name: "orphan".into(),
            vm_uid: "vm-orphan".into(),
            desk_uid: "d-gone".into(),
        }]
    );
}

#[test]
fn a_suspect_is_due_after_the_grace_period_and_forgotten_when_cleared() {
    let grace = Duration::from_secs(10);
    let t0 = Instant::now();
    let s = Suspect {
        namespace: "kubevirt".into(),
        name: "a".into(),
        vm_uid: "vm-a".into(),
        desk_uid: "d".into(),
    };
    let mut suspicion = Suspicion::default();
    assert!(suspicion.due(vec![s.clone()], t0, grace).is_empty());
    assert!(
        suspicion
            .due(vec![s.clone()], t0 + Duration::from_secs(9), grace)
            .is_empty()
    );
    let due = suspicion.due(vec![s.clone()], t0 + grace, grace);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0], s);
    // Cleared in between (its desk showed up): the clock starts again.
    assert!(suspicion.due(vec![], t0 + grace, grace).is_empty());
    assert!(
        suspicion
            .due(vec![s.clone()], t0 + grace + Duration::from_secs(1), grace)
            .is_empty()
    );
}

#[test]
fn the_period_follows_the_grace_within_bounds() {
    assert_eq!(period(Duration::from_secs(300)), Duration::from_secs(60));
    assert_eq!(period(Duration::from_secs(10)), Duration::from_secs(5));
    assert_eq!(period(Duration::ZERO), Duration::from_secs(1));
}
