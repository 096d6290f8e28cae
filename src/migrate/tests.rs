use super::*;
use serde_json::json;

fn cfg() -> MigrateConfig {
    MigrateConfig {
        dry_run: true,
        vm_namespace: Some("kubevirt".into()),
        vm_name_prefix: String::new(),
        default_timeout_ms: 3_600_000,
        desk_namespaces: vec!["cyberdesk-system".into()],
    }
}

fn desk(name: &str, kopf: bool, legacy: bool) -> Cyberdesk {
    let mut d = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": name, "namespace": "cyberdesk-system", "uid": format!("u-{name}"),
                     "finalizers": [if kopf { adoption::KOPF_FINALIZER } else { names::FINALIZER }]},
        "spec": {"timeoutMs": 3_600_000}});
    if legacy {
        d["status"] = json!({"cyberdesk_create": {"virtualMachineRef": name,
            "expiryTime": "2026-01-01T11:00:00Z"}});
    }
    serde_json::from_value(d).expect("desk")
}

fn vm(name: &str, labels: serde_json::Value) -> VirtualMachine {
    serde_json::from_value(
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "kubevirt", "uid": format!("vm-{name}"),
                     "labels": labels}, "spec": {}}),
    )
    .expect("vm")
}

#[test]
fn the_plan_names_each_desk_and_each_vm_without_one() {
    let desks = [
        desk("old", true, true),
        desk("gone", true, true),
        desk("taken", true, true),
    ];
    let vms = [
        vm(
            "old",
            json!({"app": "cyberdesk", "cyberdesk-instance": "old"}),
        ),
        vm("taken", json!({names::LABEL_DESK_UID: "u-other"})),
        vm("stray", json!({"cyberdesk-instance": "stray"})),
    ];
    let mut outside = desk("old", true, true);
    outside.metadata.namespace = Some("team-x".into());
    let desks = [
        desks[0].clone(),
        desks[1].clone(),
        desks[2].clone(),
        outside,
    ];
    let text = render(&desks, &vms, &cfg());
    assert!(
        text.contains("ignore    team-x/old: outside --desk-namespaces (cyberdesk-system)"),
        "{text}"
    );
    assert!(text.contains("adopt     cyberdesk-system/old: VirtualMachine kubevirt/old taken over, expiry 2026-01-01T11:00:00Z kept; finalizer kopf.zalando.org/KopfFinalizerMarker -> cyberdesk.io/vm-cleanup"), "{text}");
    assert!(text.contains("create    cyberdesk-system/gone: no VirtualMachine found; kubevirt/gone will be created"), "{text}");
    assert!(text.contains("conflict  cyberdesk-system/taken"), "{text}");
    assert!(
        text.contains("no desk   VirtualMachine kubevirt/stray"),
        "{text}"
    );
    assert!(text.contains("1 to adopt, 1 to create, 0 to keep, 1 in conflict, 1 outside the desk namespaces, 1 VirtualMachines without a desk; dry run: nothing was changed"), "{text}");
}

#[test]
fn a_desk_of_this_operator_is_kept() {
    let mut d = desk("mine", false, false);
    d.status = Some(crate::model::CyberdeskStatus {
        virtual_machine_ref: Some("mine".into()),
        ..Default::default()
    });
    let v = vm("mine", json!({names::LABEL_DESK_UID: "u-mine"}));
    let served = Serving::Served { adopts: true };
    assert_eq!(
        assess(&d, Some(&v), &cfg().placement(), &served, 3_600_000),
        Verdict::Keep
    );
}
