use super::*;
use serde_json::json;

/// Shaped like `kubectl get vmi -o json` on a real cluster: null times, missing
/// reasons, fields we do not model.
fn real_vmi() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "cyberdesk-a", "namespace": "ns", "labels": {"kubevirt.io/nodeName": "node1"},
                      "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
                      "annotations": {"kubevirt.io/vm-generation": "1"}},
        "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "1Gi"}}}},
        "status": {
            "phase": "Running", "nodeName": "node1", "qosClass": "Burstable",
            "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-01T10:00:00Z"},
                {"type": "LiveMigratable", "status": "False", "lastProbeTime": null, "lastTransitionTime": null,
                 "reason": "InterfaceNotLiveMigratable", "message": "cannot migrate"},
                {"type": "AgentConnected", "status": "True", "lastProbeTime": null, "lastTransitionTime": null}
            ],
            "interfaces": [{"name": "default", "ipAddress": "10.244.0.12", "ipAddresses": ["10.244.0.12"],
                            "mac": "52:54:00:aa:bb:cc", "infoSource": "domain, guest-agent", "queueCount": 1}],
            "phaseTransitionTimestamps": [{"phase": "Pending", "phaseTransitionTimestamp": "2026-11-01T09:59:50Z"}],
            "guestOSInfo": {"id": "ubuntu"}
        }
    })
}

#[test]
fn parses_a_real_vmi() {
    let vmi: VirtualMachineInstance = serde_json::from_value(real_vmi()).expect("parses");
    assert_eq!(vmi.phase(), Some("Running"));
    assert_eq!(vmi.ip_address(), Some("10.244.0.12"));
    assert!(vmi.is_ready());
    let status = vmi.status.as_ref().expect("status");
    assert!(status.extra.contains_key("guestOSInfo"));
    let conds = status.conditions.as_ref().expect("conditions");
    assert_eq!(conds[1].last_transition_time, None);
    assert_eq!(conds[2].reason, None);
}

#[test]
fn unknown_fields_survive_a_roundtrip() {
    let vmi: VirtualMachineInstance = serde_json::from_value(real_vmi()).expect("parses");
    let back = serde_json::to_value(&vmi).expect("serializes");
    assert_eq!(back["status"]["qosClass"], "Burstable");
    assert_eq!(
        back["spec"]["domain"]["resources"]["requests"]["memory"],
        "1Gi"
    );
}

#[test]
fn parses_a_real_vm() {
    let vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "cyberdesk-a", "namespace": "ns", "generation": 2,
                      "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"]},
        "spec": {"runStrategy": "Always", "template": {"metadata": {"labels": {"app": "cyberdesk"}},
                  "spec": {"domain": {"devices": {}}}}, "dataVolumeTemplates": []},
        "status": {"printableStatus": "Running", "ready": true, "created": true, "runStrategy": "Always",
                   "desiredGeneration": 2, "observedGeneration": 2, "volumeSnapshotStatuses": null,
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null,
                                   "lastTransitionTime": null}]}
    }))
    .expect("parses");
    assert_eq!(vm.printable_status(), Some("Running"));
    assert_eq!(vm.run_strategy(), Some("Always"));
    assert!(vm.is_ready());
    assert!(vm.spec.extra.contains_key("dataVolumeTemplates"));
}

#[test]
fn vm_without_status_or_with_nulls_parses() {
    let vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "x"}, "spec": {"running": null, "runStrategy": "Halted"},
        "status": {"conditions": null, "printableStatus": null}
    }))
    .expect("parses");
    assert_eq!(vm.printable_status(), None);
    assert!(!vm.is_ready());
}
