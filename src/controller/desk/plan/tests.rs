//! Table of situations a pass meets, and what the plan does in each: every `Step`,
//! `CleanupStep`, `Wake` and `Outcome`, and the edges the end-to-end tests cannot time.

use serde_json::json;

use super::*;
use crate::model::CyberdeskPhase;

const NOW: &str = "2026-01-01T00:10:00Z";
/// The desk started 10 minutes before NOW.
const STARTED: &str = "2026-01-01T00:00:00Z";

fn desk(spec: Value, status: Value) -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "desk-uid", "generation": 1,
                     "finalizers": [names::FINALIZER]},
        "spec": spec, "status": status,
    }))
    .expect("desk")
}

/// A running desk whose status was written by an earlier pass, with `timeout_ms`.
fn started_desk(timeout_ms: i64, extra_status: Value) -> Cyberdesk {
    let mut status = json!({"startTime": STARTED, "phase": "Provisioning"});
    if let (Some(s), Some(extra)) = (status.as_object_mut(), extra_status.as_object()) {
        s.extend(extra.clone());
    }
    desk(
        json!({"timeoutMs": timeout_ms, "timeoutAction": "Stop"}),
        status,
    )
}

fn vm(owner_uid: &str, run_strategy: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns", "creationTimestamp": STARTED,
                     "ownerReferences": [{"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                                          "name": "alice", "uid": owner_uid, "controller": true}]},
        "spec": {"runStrategy": run_strategy},
    }))
    .expect("vm")
}

fn running_vmi() -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns"}, "spec": {},
        "status": {"phase": "Running", "interfaces": [{"ipAddress": "10.0.0.7"}],
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": null}]},
    }))
    .expect("vmi")
}

fn observe(desk: &Cyberdesk) -> Observation<'_> {
    Observation {
        desk,
        vm_name: "cyberdesk-alice",
        vm: None,
        vmi: None,
        rendered: None,
        refused: None,
        searched_legacy: false,
        pool_tried: false,
        default_timeout_ms: 3_600_000,
        legacy_status: false,
        serving: Serving::Served { adopts: true },
        calls_ready: false,
        syncs_state: false,
        status_written_ago: None,
        now: NOW.parse().expect("now"),
    }
}

fn settled(step: Step) -> Settlement {
    match step {
        Step::Settle(s) => *s,
        other => panic!("expected Settle, got {other:?}"),
    }
}

fn reasons(s: &Settlement) -> Vec<Reason> {
    s.announce.iter().map(|a| a.reason).collect()
}

fn phase(s: &Settlement) -> Option<CyberdeskPhase> {
    s.status.as_ref().and_then(|st| st.phase)
}

#[test]
fn a_desk_without_the_finalizer_gets_it_first() {
    let mut d = desk(json!({}), json!(null));
    d.metadata.finalizers = None;
    assert_eq!(plan(&observe(&d)), Step::AddFinalizer);
}

#[test]
fn a_vm_of_another_owner_is_left_alone_with_a_warning() {
    let d = desk(json!({}), json!(null));
    let mut o = observe(&d);
    o.vm = Some(vm("someone-else", "Always"));
    match plan(&o) {
        Step::Conflict(a) => {
            assert_eq!(a.reason, Reason::VirtualMachineConflict);
            assert!(a.reason.is_warning());
            assert!(a.note.contains("cyberdesk-alice"), "{}", a.note);
        }
        other => panic!("{other:?}"),
    }
}

/// A VM in the VM namespace (`--vm-namespace`): no ownerReference, the desk's uid as label.
fn vm_elsewhere(desk_uid: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "alice", "namespace": "kubevirt", "creationTimestamp": STARTED,
                     "labels": {names::LABEL_DESK_UID: desk_uid}},
        "spec": {"runStrategy": "Always"}
    }))
    .expect("vm")
}

#[test]
fn a_vm_elsewhere_is_owned_by_its_uid_label() {
    let d = desk(json!({}), json!(null));
    let mut o = observe(&d);
    o.vm_name = "alice";
    o.vm = Some(vm_elsewhere("desk-uid"));
    assert!(matches!(plan(&o), Step::Settle(_)), "{:?}", plan(&o));
    o.vm = Some(vm_elsewhere("another-desk"));
    assert!(matches!(plan(&o), Step::Conflict(_)), "{:?}", plan(&o));
    // A label never overrides an ownerReference to another desk.
    let mut theirs = vm("someone-else", "Always");
    theirs
        .metadata
        .labels
        .get_or_insert_default()
        .insert(names::LABEL_DESK_UID.into(), "desk-uid".into());
    o.vm = Some(theirs);
    assert!(matches!(plan(&o), Step::Conflict(_)));
}

/// A desk as the previous (kopf) operator left it.
fn kopf_desk(finalizer: &str) -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "desk-uid", "generation": 1,
                     "finalizers": [finalizer]},
        "spec": {"timeoutMs": 3_600_000},
        "status": {"cyberdesk_create": {"virtualMachineRef": "alice",
            "startTime": STARTED, "expiryTime": "2026-01-01T01:00:00Z", "lastPhase": "Running"}}
    }))
    .expect("desk")
}

#[test]
fn a_kopf_desk_is_taken_over_and_its_vm_adopted_not_created_again() {
    use crate::controller::desk::adoption::KOPF_FINALIZER;
    let d = kopf_desk(KOPF_FINALIZER);
    assert_eq!(plan(&observe(&d)), Step::AdoptFinalizer);
    // With this operator's finalizer: the VM is looked for live, once.
    let d = kopf_desk(names::FINALIZER);
    let mut o = observe(&d);
    o.vm_name = "alice";
    assert_eq!(plan(&o), Step::FindLegacyVm);
    o.searched_legacy = true;
    // Found, unclaimed: adopted, and the recorded expiry stays.
    let mut old = vm_elsewhere("x");
    old.metadata.labels = Some(
        [
            ("app".to_string(), "cyberdesk".to_string()),
            ("cyberdesk-instance".to_string(), "alice".to_string()),
        ]
        .into(),
    );
    o.vm = Some(old);
    match plan(&o) {
        Step::Adopt(a) => {
            assert_eq!(a.reason, Reason::VirtualMachineAdopted);
            assert!(a.note.contains("2026-01-01T01:00:00Z"), "{}", a.note);
        }
        other => panic!("{other:?}"),
    }
    // Held by another desk: left alone.
    o.vm = Some(vm_elsewhere("another-desk"));
    assert!(matches!(plan(&o), Step::Conflict(_)));
    // Not found: created like any other.
    o.vm = None;
    assert_eq!(plan(&o), Step::Render);
}

#[test]
fn a_desk_outside_the_served_namespaces_only_says_why() {
    use crate::controller::desk::adoption::KOPF_FINALIZER;
    // Named after someone else's VM, with kopf's finalizer and a status block of its own.
    let mut d = kopf_desk(KOPF_FINALIZER);
    d.metadata.namespace = Some("team-x".into());
    let namespaces = DeskNamespaces::new(["cyberdesk-system".to_string()]);
    let mut o = observe(&d);
    o.vm_name = "alice";
    o.serving = Serving::of(&namespaces, "team-x");
    o.vm = Some(vm_elsewhere("someone-else"));
    o.vmi = Some(running_vmi());
    o.legacy_status = true;
    o.calls_ready = true;
    o.syncs_state = true;
    let s = settled(plan(&o));
    let status = s.status.as_ref().expect("a status saying why");
    assert_eq!(status.phase, Some(CyberdeskPhase::Failed));
    let why = status.message.as_deref().unwrap_or_default();
    assert!(
        why.contains("cyberdesk-system") && why.contains("--desk-namespaces"),
        "{why}"
    );
    let created = conditions::find(&status.conditions, conditions::VM_CREATED).expect("cond");
    assert_eq!(created.reason, "NamespaceNotServed");
    // Nothing of the VM by its name shows, nothing looks like the previous operator's.
    assert_eq!(status.ip_address, None);
    assert_eq!(status.virtual_machine_ref, None);
    assert_eq!(
        status.legacy,
        d.status.as_ref().and_then(|s| s.legacy.clone())
    );
    assert_eq!(reasons(&s), [Reason::NamespaceNotServed]);
    assert!(!s.call_ready && s.platform_state.is_none() && !s.delete_desk);
    assert_eq!(s.wake, Wake::OnChange);
    // Served but not limited to the previous platform's namespaces: nothing is adopted.
    o.serving = Serving::of(&DeskNamespaces::default(), "team-x");
    assert_eq!(o.serving, Serving::Served { adopts: false });
    assert_eq!(plan(&o), Step::AddFinalizer);
    let d = kopf_desk(names::FINALIZER);
    let mut o = observe(&d);
    o.serving = Serving::Served { adopts: false };
    assert_eq!(plan(&o), Step::Render);
}

#[test]
fn a_failed_render_writes_a_legacy_block_marked_as_this_operators() {
    let d = desk(
        json!({"userDataSecretRef": {"name": "s", "key": "k"}}),
        json!(null),
    );
    let mut o = observe(&d);
    o.legacy_status = true;
    o.rendered = Some(Err(RenderProblem::UserData("cannot".into())));
    let s = settled(plan(&o));
    let block = s
        .status
        .as_ref()
        .and_then(|st| st.legacy.clone())
        .expect("a legacy block");
    assert_eq!(
        block.written_by.as_deref(),
        Some(crate::controller::desk::adoption::LEGACY_WRITER)
    );
    // Stored, the next pass does not take the desk for the previous operator's.
    let mut stored = d.clone();
    stored.status = s.status.clone();
    let mut next = observe(&stored);
    next.legacy_status = true;
    assert!(!crate::controller::desk::adoption::is_legacy(&stored));
    assert_eq!(plan(&next), Step::Render);
}

#[test]
fn a_new_desk_is_rendered_then_created() {
    let d = desk(json!({}), json!(null));
    let mut o = observe(&d);
    assert_eq!(plan(&o), Step::Render);
    o.rendered = Some(Ok(json!({"kind": "VirtualMachine"})));
    assert_eq!(plan(&o), Step::Create(json!({"kind": "VirtualMachine"})));
    // Created: nothing more to change; Pending → Provisioning, wake at expiry.
    o.vm = Some(vm("desk-uid", "Always"));
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::Provisioning));
    assert_eq!(s.outcome, Outcome::Success);
    assert!(s.announce.is_empty());
}

#[test]
fn a_template_problem_is_announced_once_and_retried() {
    let d = desk(json!({}), json!(null));
    let mut o = observe(&d);
    o.rendered = Some(Err(RenderProblem::Template("unknown variable ${x}".into())));
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::Failed));
    assert_eq!(reasons(&s), vec![Reason::TemplateInvalid]);
    assert_eq!(s.wake, Wake::After(RENDER_RETRY));
    assert_eq!(s.outcome, Outcome::Requeue);

    // The next pass sees its own status: same problem, no second Warning, no write.
    let mut again = d.clone();
    again.status = s.status.clone();
    let mut o2 = observe(&again);
    o2.rendered = Some(Err(RenderProblem::Template("unknown variable ${x}".into())));
    let s2 = settled(plan(&o2));
    assert!(s2.announce.is_empty(), "{:?}", s2.announce);
    assert_eq!(s2.status, None);
    assert_eq!(s2.wake, Wake::After(RENDER_RETRY));
}

#[test]
fn each_render_problem_has_its_reason() {
    for (problem, reason) in [
        (
            RenderProblem::TemplateNotAllowed("no".into()),
            Reason::TemplateNotAllowed,
        ),
        (
            RenderProblem::UserData("no Secret".into()),
            Reason::UserDataUnavailable,
        ),
    ] {
        let d = desk(json!({}), json!(null));
        let mut o = observe(&d);
        o.rendered = Some(Err(problem));
        assert_eq!(reasons(&settled(plan(&o))), vec![reason]);
    }
}

#[test]
fn a_refused_create_is_not_retried_in_the_same_pass() {
    let d = desk(json!({}), json!(null));
    let mut o = observe(&d);
    o.rendered = Some(Ok(json!({})));
    o.refused = Some(RenderProblem::Rejected("the apiserver rejected it".into()));
    let s = settled(plan(&o));
    assert_eq!(reasons(&s), vec![Reason::CreateRejected]);
    assert_eq!(phase(&s), Some(CyberdeskPhase::Failed));
    assert_eq!(s.outcome, Outcome::Requeue);
}

#[test]
fn the_ready_call_is_asked_for_while_running_until_its_outcome_is_recorded() {
    let d = started_desk(3_600_000, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(running_vmi());
    // Not configured: never.
    assert!(!settled(plan(&o)).call_ready);
    o.calls_ready = true;
    assert!(settled(plan(&o)).call_ready);
    // Not while starting.
    let mut starting = o.clone();
    starting.vmi = None;
    assert!(!settled(plan(&starting)).call_ready);
    // Recorded (delivered or given up): never again.
    for outcome in ["Delivered", "GaveUp"] {
        let d = started_desk(
            3_600_000,
            json!({"notifications": {"ready": {"outcome": outcome, "attempts": 1,
                                               "time": STARTED}}}),
        );
        let mut o = observe(&d);
        o.vm = Some(vm("desk-uid", "Always"));
        o.vmi = Some(running_vmi());
        o.calls_ready = true;
        assert!(!settled(plan(&o)).call_ready, "{outcome}");
    }
}

#[test]
fn the_platform_state_is_written_when_it_differs_from_the_recorded_one() {
    let recorded = |state: &str| {
        started_desk(
            3_600_000,
            json!({"notifications": {"platformState": {"outcome": "Delivered",
                "value": state, "attempts": 1, "time": STARTED}}}),
        )
    };
    let running = |d: &Cyberdesk, syncs: bool| {
        let mut o = observe(d);
        o.vm = Some(vm("desk-uid", "Always"));
        o.vmi = Some(running_vmi());
        o.syncs_state = syncs;
        settled(plan(&o)).platform_state
    };
    let fresh = started_desk(3_600_000, json!({}));
    assert_eq!(running(&fresh, false), None);
    assert_eq!(running(&fresh, true), Some("pending"));
    // Unchanged: nothing to write.
    assert_eq!(running(&recorded("pending"), true), None);
    // A failed VMI turns it into error.
    let d = recorded("pending");
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    let mut failed = running_vmi();
    if let Some(status) = failed.status.as_mut() {
        status.phase = Some("Failed".into());
    }
    o.vmi = Some(failed);
    o.syncs_state = true;
    assert_eq!(settled(plan(&o)).platform_state, Some("error"));
}

#[test]
fn a_running_desk_wakes_exactly_at_expiry_and_is_announced_ready_once() {
    // 15 minutes from STARTED: 5 minutes after NOW.
    let d = started_desk(900_000, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(running_vmi());
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::Running));
    assert_eq!(s.wake, Wake::After(Duration::from_secs(300)));
    assert_eq!(reasons(&s), vec![Reason::Ready]);
    assert_eq!(s.announce[0].note, "desktop running at 10.0.0.7");

    // Already Running: no second Ready, no write when nothing changed.
    let mut again = d.clone();
    again.status = s.status.clone();
    let mut o2 = observe(&again);
    o2.vm = o.vm.clone();
    o2.vmi = o.vmi.clone();
    let s2 = settled(plan(&o2));
    assert!(s2.announce.is_empty());
    assert_eq!(s2.status, None);
}

#[test]
fn expiry_halts_the_vm_with_the_lag_and_then_settles_timed_out() {
    // Expired 1.5 s before NOW.
    let d = started_desk(598_500, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    match plan(&o) {
        Step::Halt {
            lag,
            announce,
            first,
        } => {
            assert_eq!(lag, Duration::from_millis(1500));
            assert!(first, "the desk's first timeout");
            assert_eq!(announce.reason, Reason::TimedOut);
            assert_eq!(
                announce.note,
                "timed out after 598500 ms; halted VirtualMachine cyberdesk-alice"
            );
        }
        other => panic!("{other:?}"),
    }
    o.vm = Some(vm("desk-uid", "Halted"));
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::TimedOut));
    assert_eq!(s.wake, Wake::OnChange);
    assert!(!s.delete_desk);
}

#[test]
fn expiry_exactly_now_is_expired() {
    let d = started_desk(600_000, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    assert!(matches!(plan(&o), Step::Halt { lag, .. } if lag.is_zero()));
    // One millisecond before: not yet, wake in 1 ms.
    let d = started_desk(600_001, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    assert_eq!(
        settled(plan(&o)).wake,
        Wake::After(Duration::from_millis(1))
    );
}

#[test]
fn a_timeout_is_sticky() {
    let timed_out = json!({"phase": "TimedOut", "conditions": [{"type": "TimedOut", "status": "True",
        "reason": "Expired", "message": "", "lastTransitionTime": STARTED}]});
    // timeoutMs raised far beyond NOW, and someone set the VM running again by hand.
    let d = started_desk(86_400_000, timed_out);
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    match plan(&o) {
        Step::Halt {
            lag,
            announce,
            first,
        } => {
            assert!(lag.is_zero());
            // Halted again, but not a second timeout: not counted, announced apart.
            assert!(!first, "a re-halt read as a timeout");
            assert_eq!(announce.reason, Reason::TimeoutReapplied);
        }
        other => panic!("not halted again: {other:?}"),
    }
    // VM deleted by hand after the timeout: not created again.
    o.vm = None;
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::TimedOut));
}

#[test]
fn expired_before_its_vm_was_created_no_vm_is_made() {
    let d = started_desk(60_000, json!({}));
    let s = settled(plan(&observe(&d)));
    assert_eq!(phase(&s), Some(CyberdeskPhase::TimedOut));
    assert!(s.announce.is_empty());
}

#[test]
fn timeout_action_delete_deletes_the_desk_once_halted() {
    let mut d = started_desk(60_000, json!({}));
    d.spec.timeout_action = Some(TimeoutAction::Delete);
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Halted"));
    let s = settled(plan(&o));
    assert!(s.delete_desk);
    assert_eq!(reasons(&s), vec![Reason::Deleting]);
    assert_eq!(s.wake, Wake::OnChange);
    assert_eq!(s.outcome, Outcome::Success);
}

/// A deletion timestamp of NOW, for a desk or a VM.
fn deleted_now() -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        NOW.parse().expect("t"),
    ))
}

fn deleting(d: &mut Cyberdesk) {
    d.metadata.deletion_timestamp = deleted_now();
}

#[test]
fn cleanup_deletes_the_vm_waits_for_kubevirt_then_releases() {
    let mut d = desk(json!({}), json!(null));
    deleting(&mut d);
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(running_vmi());
    match plan_cleanup(&o) {
        CleanupStep::DeleteVm(a) => assert_eq!(a.reason, Reason::DeletingVirtualMachine),
        other => panic!("{other:?}"),
    }
    // Deleted while KubeVirt stops the VMI: Terminating, looked at again.
    let mut marked = vm("desk-uid", "Always");
    marked.metadata.deletion_timestamp = deleted_now();
    o.vm = Some(marked);
    match plan_cleanup(&o) {
        CleanupStep::Wait { status } => {
            assert_eq!(
                status.and_then(|s| s.phase),
                Some(CyberdeskPhase::Terminating)
            )
        }
        other => panic!("{other:?}"),
    }
    o.vm = None;
    o.vmi = None;
    match plan_cleanup(&o) {
        CleanupStep::Release(a) => assert_eq!(a.reason, Reason::CleanedUp),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_desk_deleted_while_creating_releases_at_once_and_one_without_our_finalizer_is_skipped() {
    // Deleted before its VM was made: nothing to wait for.
    let mut d = desk(json!({}), json!(null));
    deleting(&mut d);
    assert!(matches!(
        plan_cleanup(&observe(&d)),
        CleanupStep::Release(_)
    ));
    d.metadata.finalizers = Some(vec!["someone.else/finalizer".into()]);
    assert_eq!(plan_cleanup(&observe(&d)), CleanupStep::Nothing);
}

#[test]
fn reasons_are_distinct_and_warnings_are_the_problems() {
    let all = [
        Reason::VirtualMachineCreated,
        Reason::VirtualMachineAdopted,
        Reason::VirtualMachineConflict,
        Reason::TimedOut,
        Reason::TimeoutReapplied,
        Reason::Ready,
        Reason::Deleting,
        Reason::DeletingVirtualMachine,
        Reason::CleanedUp,
        Reason::TemplateInvalid,
        Reason::TemplateNotAllowed,
        Reason::UserDataUnavailable,
        Reason::CreateRejected,
        Reason::NamespaceNotServed,
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), all.len());
    let warnings = all.iter().filter(|r| r.is_warning()).count();
    assert_eq!(warnings, 6);
    assert_eq!(Reason::TimedOut.action(), "Stop");
    assert_eq!(Reason::TimeoutReapplied.action(), "Stop");
    assert_eq!(Reason::CleanedUp.action(), "Delete");
}

fn vmi_in(phase: &str) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns"}, "spec": {},
        "status": {"phase": phase},
    }))
    .expect("vmi")
}

/// The desk as a pass that saw its VMI in `vmi_phase` left it.
fn desk_seen_with(vmi: VirtualMachineInstance) -> Cyberdesk {
    let d = started_desk(3_600_000, json!({}));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(vmi);
    let mut seen = d.clone();
    seen.status = settled(plan(&o)).status;
    seen
}

#[test]
fn a_starting_desk_written_a_moment_ago_holds_its_next_detail() {
    let d = desk_seen_with(vmi_in("Pending"));
    assert_eq!(
        d.status.as_ref().and_then(|s| s.phase),
        Some(CyberdeskPhase::Starting)
    );
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(vmi_in("Scheduling"));
    o.status_written_ago = Some(Duration::from_millis(200));
    let held = settled(plan(&o));
    assert_eq!(held.status, None, "written 200 ms ago: held");
    assert_eq!(held.wake, Wake::After(Duration::from_millis(800)));
    // Once the hold is over, the newest detail is written.
    o.status_written_ago = None;
    let written = settled(plan(&o));
    assert_eq!(
        written.status.and_then(|s| s.vmi_phase).as_deref(),
        Some("Scheduling")
    );
}

#[test]
fn a_starting_desk_that_turns_running_is_written_at_once() {
    let d = desk_seen_with(vmi_in("Scheduled"));
    let mut o = observe(&d);
    o.vm = Some(vm("desk-uid", "Always"));
    o.vmi = Some(running_vmi());
    o.status_written_ago = Some(Duration::from_millis(10));
    let s = settled(plan(&o));
    assert_eq!(phase(&s), Some(CyberdeskPhase::Running));
    assert_eq!(reasons(&s), vec![Reason::Ready]);
}
