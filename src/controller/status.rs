//! VM/VMI → Cyberdesk status (pure). Computed from scratch every pass; equal inputs give an
//! equal status, so an unchanged world means no status write.

use compact_str::CompactString;
use jiff::Timestamp;

use crate::controller::{adoption, expiry};
use crate::model::conditions::{self, Condition, ConditionStatus, set_condition};
use crate::model::{
    Cyberdesk, CyberdeskPhase, CyberdeskStatus, LegacyStatus, VirtualMachine,
    VirtualMachineInstance, VmSource,
};
use crate::time;

/// printableStatus values that mean the desktop cannot come up without help.
pub(crate) const VM_ERROR_STATES: &[&str] = &[
    "CrashLoopBackOff",
    "ErrorUnschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrorPvcNotFound",
    "DataVolumeError",
];

/// Everything the status is derived from.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub cyberdesk: &'a Cyberdesk,
    pub vm: Option<&'a VirtualMachine>,
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// Why the VM cannot be rendered (template or user-data problem), if it cannot.
    pub render_error: Option<&'a RenderProblem>,
    /// The desk has passed its expiry and its VM was halted.
    pub timed_out: bool,
    pub default_timeout_ms: i64,
    /// Keep the previous operator's `status.cyberdesk_create` block in step.
    pub legacy: bool,
    pub now: Timestamp,
}

/// A reason the VM cannot be built, reported as a condition rather than retried blindly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderProblem {
    Template(String),
    /// The template exists but is not allowed in the desk's namespace.
    TemplateNotAllowed(String),
    UserData(String),
    /// The apiserver (or KubeVirt's admission) refused the rendered VM.
    Rejected(String),
    /// The desk's namespace is not one the operator serves (`--desk-namespaces`).
    NotServed(String),
}

impl RenderProblem {
    pub fn message(&self) -> &str {
        match self {
            RenderProblem::Template(m)
            | RenderProblem::TemplateNotAllowed(m)
            | RenderProblem::UserData(m)
            | RenderProblem::Rejected(m)
            | RenderProblem::NotServed(m) => m,
        }
    }
}

/// Condition reason of a desk outside `--desk-namespaces`.
pub const NOT_SERVED: &str = "NamespaceNotServed";

/// When the desk's lifetime started: recorded once; for a desk adopted from the previous
/// operator, such that its recorded expiry stays; else the VM's creation time.
pub fn start_time(
    cd: &Cyberdesk,
    vm: Option<&VirtualMachine>,
    default_timeout_ms: i64,
) -> Option<Timestamp> {
    let recorded = cd
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_deref())
        .and_then(time::parse);
    recorded
        .or_else(|| adoption::legacy_start(cd, cd.effective_timeout_ms(default_timeout_ms)))
        .or_else(|| {
            let vm = vm?;
            // A pool VM booted long before its desk: the desk's time starts at the claim.
            vm.claimed_at()
                .or_else(|| vm.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
}

/// Where a pooled desk's VM came from: a VM booted for a pool was claimed; any other was
/// booted for the desk. `None` for a desk without a pool, or before it has a VM.
pub fn source(cd: &Cyberdesk, vm: Option<&VirtualMachine>) -> Option<VmSource> {
    cd.spec.pool.as_ref()?;
    Some(if vm?.pool().is_some() {
        VmSource::Pool
    } else {
        VmSource::Cold
    })
}

/// `startTime + spec.timeoutMs`; moves when timeoutMs changes.
pub fn expiry_time(
    cd: &Cyberdesk,
    vm: Option<&VirtualMachine>,
    default_timeout_ms: i64,
) -> Option<Timestamp> {
    let start = start_time(cd, vm, default_timeout_ms)?;
    Some(expiry::expiry(
        start,
        cd.effective_timeout_ms(default_timeout_ms),
    ))
}

fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    obs: &Observation<'_>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: time::format(obs.now).into(),
        observed_generation: obs.cyberdesk.metadata.generation,
    }
}

fn phase_and_message(obs: &Observation<'_>) -> (CyberdeskPhase, String) {
    use CyberdeskPhase::*;
    if obs.cyberdesk.metadata.deletion_timestamp.is_some() {
        return (
            Terminating,
            "deleting the VirtualMachine before releasing the Cyberdesk".into(),
        );
    }
    if obs.timed_out {
        return (
            TimedOut,
            "the desktop reached its timeout and its VirtualMachine was halted".into(),
        );
    }
    let Some(vm) = obs.vm else {
        return match obs.render_error {
            Some(problem) => (Failed, problem.message().to_string()),
            None => (Pending, "creating the VirtualMachine".into()),
        };
    };
    if let Some(state) = vm
        .printable_status()
        .filter(|s| VM_ERROR_STATES.contains(s))
    {
        return (Failed, format!("the VirtualMachine is in state {state}"));
    }
    let Some(vmi) = obs.vmi else {
        return (
            Provisioning,
            "the VirtualMachine exists; waiting for its instance".into(),
        );
    };
    if vmi.metadata.deletion_timestamp.is_some() {
        return (
            Stopping,
            "the VirtualMachineInstance is shutting down".into(),
        );
    }
    match vmi.phase().unwrap_or("") {
        "Running" if vmi.is_ready() => (Running, "the desktop is running".into()),
        "Running" => (
            Starting,
            "the VirtualMachineInstance runs; waiting for it to be ready".into(),
        ),
        "Failed" => (Failed, "the VirtualMachineInstance failed".into()),
        "Succeeded" => (Stopping, "the VirtualMachineInstance stopped".into()),
        phase => (
            Starting,
            format!(
                "the VirtualMachineInstance is {}",
                if phase.is_empty() {
                    "being created"
                } else {
                    phase
                }
            ),
        ),
    }
}

/// The status this observation calls for, keeping condition transition times that did not
/// change.
pub fn desired_status(obs: &Observation<'_>) -> CyberdeskStatus {
    let current = obs.cyberdesk.status.clone().unwrap_or_default();
    let (phase, message) = phase_and_message(obs);
    let mut conds = current.conditions.clone();

    let template_refused = match obs.render_error {
        Some(RenderProblem::Template(m)) => Some(("TemplateInvalid", m)),
        Some(RenderProblem::TemplateNotAllowed(m)) => Some(("TemplateNotAllowed", m)),
        _ => None,
    };
    let template_cond = match (template_refused, obs.render_error) {
        // Nothing is rendered for a desk the operator does not serve.
        (_, Some(RenderProblem::NotServed(m))) => condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::Unknown,
            NOT_SERVED,
            m.clone(),
            obs,
        ),
        (Some((reason, m)), _) => condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::False,
            reason,
            m.clone(),
            obs,
        ),
        (None, _) => condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::True,
            "TemplateRendered",
            "the VM template renders".into(),
            obs,
        ),
    };
    set_condition(&mut conds, template_cond);

    let created = match (obs.vm, obs.render_error) {
        (Some(vm), _) => condition(
            conditions::VM_CREATED,
            ConditionStatus::True,
            "Created",
            format!(
                "VirtualMachine {} exists",
                vm.metadata.name.as_deref().unwrap_or("")
            ),
            obs,
        ),
        (None, Some(RenderProblem::UserData(m))) => condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "UserDataUnavailable",
            m.clone(),
            obs,
        ),
        (None, Some(RenderProblem::NotServed(m))) => condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            NOT_SERVED,
            m.clone(),
            obs,
        ),
        (None, Some(RenderProblem::Rejected(m))) => condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "CreateRejected",
            m.clone(),
            obs,
        ),
        (None, _) if template_refused.is_some() => condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            template_refused.map_or("TemplateInvalid", |(reason, _)| reason),
            "the VM template cannot be used".into(),
            obs,
        ),
        (None, _) => condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "Pending",
            "not created yet".into(),
            obs,
        ),
    };
    set_condition(&mut conds, created);

    let ready = if phase == CyberdeskPhase::Running {
        condition(
            conditions::READY,
            ConditionStatus::True,
            "Running",
            "the desktop is ready".into(),
            obs,
        )
    } else {
        condition(
            conditions::READY,
            ConditionStatus::False,
            phase.as_str(),
            message.clone(),
            obs,
        )
    };
    set_condition(&mut conds, ready);

    let timed_out = if obs.timed_out {
        condition(
            conditions::TIMED_OUT,
            ConditionStatus::True,
            "Expired",
            "the timeout passed; the VM was halted".into(),
            obs,
        )
    } else {
        condition(
            conditions::TIMED_OUT,
            ConditionStatus::False,
            "NotExpired",
            "the timeout has not passed".into(),
            obs,
        )
    };
    set_condition(&mut conds, timed_out);

    let start = start_time(obs.cyberdesk, obs.vm, obs.default_timeout_ms);
    let expiry = expiry_time(obs.cyberdesk, obs.vm, obs.default_timeout_ms);
    let virtual_machine_ref = obs
        .vm
        .and_then(|vm| vm.metadata.name.as_deref().map(CompactString::from))
        .or(current.virtual_machine_ref);
    let vmi_phase = obs.vmi.and_then(|v| v.phase().map(CompactString::from));
    let start_time = start.map(|t| CompactString::from(time::format(t)));
    let expiry_time = expiry.map(|t| CompactString::from(time::format(t)));
    // Without the flag a block someone else wrote is carried over as it is: dropping it
    // would make every pass see a change and write.
    let legacy = if obs.legacy {
        Some(Box::new(LegacyStatus {
            virtual_machine_ref: virtual_machine_ref.as_deref().map(String::from),
            start_time: start_time.as_deref().map(String::from),
            expiry_time: expiry_time.as_deref().map(String::from),
            last_phase: vmi_phase
                .as_deref()
                .map(String::from)
                .or_else(|| current.legacy.and_then(|l| l.last_phase)),
            // Never mistaken for the previous operator's block (adoption looks for that).
            written_by: Some(adoption::LEGACY_WRITER.into()),
        }))
    } else {
        current.legacy
    };
    CyberdeskStatus {
        phase: Some(phase),
        virtual_machine_ref,
        vmi_phase,
        ip_address: obs
            .vmi
            .and_then(|v| v.ip_address().map(CompactString::from)),
        start_time,
        expiry_time,
        message: Some(message.into()),
        observed_generation: obs.cyberdesk.metadata.generation,
        source: source(obs.cyberdesk, obs.vm).or(current.source),
        conditions: conds,
        legacy,
        // The notifier's records, carried over so that they never read as a change.
        notifications: current.notifications,
    }
}

#[cfg(test)]
mod tests {
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
    ) -> Observation<'a> {
        Observation {
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
        let template =
            conditions::find(&s.conditions, conditions::TEMPLATE_VALID).expect("condition");
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
}
