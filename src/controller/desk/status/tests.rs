use super::*;
use serde_json::json;

fn desk(status: serde_json::Value) -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "ns", "generation": 3, "uid": "u1"},
        "spec": {"timeoutMs": 60000}, "status": status
    }))
    .expect("desk")
}

fn vm() -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"runStrategy": "Always"}, "status": {"printableStatus": "Starting"}
    }))
    .expect("vm")
}

fn vmi(phase: &str, ready: bool) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns"}, "spec": {},
        "status": {"phase": phase, "interfaces": [{"ipAddress": "10.0.0.5"}],
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": null}]}
    }))
    .expect("vmi")
}

fn obs<'a>(
    cd: &'a Cyberdesk,
    vm: Option<&'a VirtualMachine>,
    vmi: Option<&'a VirtualMachineInstance>,
) -> StatusInputs<'a> {
    StatusInputs {
        cyberdesk: cd,
        vm,
        vmi,
        render_error: None,
        timed_out: false,
        default_timeout_ms: 3_600_000,
        legacy: false,
        now: "2026-01-01T00:00:10Z".parse().expect("now"),
    }
}

#[test]
fn phases_follow_the_vm_and_vmi() {
    let cd = desk(json!(null));
    let (v, running, booting) = (vm(), vmi("Running", true), vmi("Scheduling", false));
    assert_eq!(
        desired_status(&obs(&cd, None, None)).phase,
        Some(CyberdeskPhase::Pending)
    );
    assert_eq!(
        desired_status(&obs(&cd, Some(&v), None)).phase,
        Some(CyberdeskPhase::Provisioning)
    );
    assert_eq!(
        desired_status(&obs(&cd, Some(&v), Some(&booting))).phase,
        Some(CyberdeskPhase::Starting)
    );
    let s = desired_status(&obs(&cd, Some(&v), Some(&running)));
    assert_eq!(s.phase, Some(CyberdeskPhase::Running));
    assert_eq!(s.ip_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(s.vmi_phase.as_deref(), Some("Running"));
    assert_eq!(s.virtual_machine_ref.as_deref(), Some("cyberdesk-alice"));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        conditions::find(&s.conditions, conditions::READY).map(|c| c.status),
        Some(ConditionStatus::True)
    );
}

#[test]
fn expiry_counts_from_vm_creation_and_follows_timeout_changes() {
    let mut cd = desk(json!(null));
    let v = vm();
    let s = desired_status(&obs(&cd, Some(&v), None));
    assert_eq!(s.start_time.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(s.expiry_time.as_deref(), Some("2026-01-01T00:01:00Z"));
    cd.spec.timeout_ms = Some(120_000);
    cd.status = Some(s);
    let s2 = desired_status(&obs(&cd, Some(&v), None));
    assert_eq!(s2.expiry_time.as_deref(), Some("2026-01-01T00:02:00Z"));
}

#[test]
fn same_world_same_status() {
    let cd0 = desk(json!(null));
    let (v, r) = (vm(), vmi("Running", true));
    let first = desired_status(&obs(&cd0, Some(&v), Some(&r)));
    let mut cd1 = cd0.clone();
    cd1.status = Some(first.clone());
    let mut later = obs(&cd1, Some(&v), Some(&r));
    later.now = "2026-01-01T00:00:50Z".parse().expect("now");
    assert_eq!(desired_status(&later), first);
}

#[test]
fn a_refused_vm_is_failed_with_reason_create_rejected() {
    let cd = desk(json!(null));
    let problem = RenderProblem::Rejected("the apiserver rejected VirtualMachine x".into());
    let mut o = obs(&cd, None, None);
    o.render_error = Some(&problem);
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(CyberdeskPhase::Failed));
    let created = conditions::find(&s.conditions, conditions::VM_CREATED).expect("condition");
    assert_eq!(created.status, ConditionStatus::False);
    assert_eq!(created.reason, "CreateRejected");
    assert_eq!(created.message, "the apiserver rejected VirtualMachine x");
    // The template itself rendered.
    let template = conditions::find(&s.conditions, conditions::TEMPLATE_VALID).expect("condition");
    assert_eq!(template.status, ConditionStatus::True);
}

#[test]
fn problems_timeouts_and_deletion() {
    let cd = desk(json!(null));
    let problem = RenderProblem::Template("unknown variable".into());
    let mut o = obs(&cd, None, None);
    o.render_error = Some(&problem);
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(CyberdeskPhase::Failed));
    assert_eq!(
        conditions::find(&s.conditions, conditions::TEMPLATE_VALID).map(|c| c.status),
        Some(ConditionStatus::False)
    );
    let v = vm();
    let mut t = obs(&cd, Some(&v), None);
    t.timed_out = true;
    assert_eq!(desired_status(&t).phase, Some(CyberdeskPhase::TimedOut));
    let mut deleting = desk(json!(null));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:05Z".parse().expect("t"),
        ));
    assert_eq!(
        desired_status(&obs(&deleting, Some(&v), None)).phase,
        Some(CyberdeskPhase::Terminating)
    );
}

#[test]
fn vm_error_states_are_failures() {
    let cd = desk(json!(null));
    let mut v = vm();
    if let Some(s) = v.status.as_mut() {
        s.printable_status = Some("ErrImagePull".into());
    }
    let s = desired_status(&obs(&cd, Some(&v), None));
    assert_eq!(s.phase, Some(CyberdeskPhase::Failed));
    assert!(s.message.unwrap_or_default().contains("ErrImagePull"));
}

#[test]
fn the_legacy_block_follows_the_typed_status_only_when_asked() {
    let cd = desk(json!({"startTime": "2026-01-01T00:00:00Z"}));
    let (vm, vmi) = (vm(), vmi("Running", true));
    let mut o = obs(&cd, Some(&vm), Some(&vmi));
    let plain = desired_status(&o);
    assert_eq!(plain.legacy, None);
    o.legacy = true;
    let status = desired_status(&o);
    let legacy = status.legacy.clone().expect("legacy block");
    assert_eq!(
        legacy.virtual_machine_ref.as_deref(),
        Some("cyberdesk-alice")
    );
    assert_eq!(legacy.start_time.as_deref(), status.start_time.as_deref());
    assert_eq!(legacy.expiry_time.as_deref(), Some("2026-01-01T00:01:00Z"));
    assert_eq!(legacy.last_phase.as_deref(), Some("Running"));
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(
        json["cyberdesk_create"]["virtualMachineRef"],
        "cyberdesk-alice"
    );
    // The VMI gone: its last phase stays.
    let stored = desk(serde_json::to_value(&status).expect("json"));
    let mut o = obs(&stored, Some(&vm), None);
    o.legacy = true;
    assert_eq!(
        desired_status(&o)
            .legacy
            .and_then(|l| l.last_phase)
            .as_deref(),
        Some("Running")
    );
    // Without the flag a stored block is carried over, so nothing looks changed.
    let o = obs(&stored, Some(&vm), None);
    assert_eq!(desired_status(&o).legacy, status.legacy);
}
