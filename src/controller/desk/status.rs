//! VM/VMI → Cyberdesk status (pure). Computed from scratch every pass; equal inputs give an
//! equal status, so an unchanged world means no status write.

use compact_str::CompactString;
use jiff::Timestamp;

use crate::controller::announcement::NOT_SERVED;
use crate::controller::desk::{adoption, expiry};
use crate::controller::render::RenderProblem;
use crate::model::conditions::{self, Condition, ConditionStatus, Observed, set_condition};
use crate::model::kubevirt::VM_ERROR_STATES;
use crate::model::{
    Cyberdesk, CyberdeskPhase, CyberdeskStatus, LegacyStatus, VirtualMachine,
    VirtualMachineInstance, VmSource,
};
use crate::time;

/// Everything the status is derived from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInputs<'a> {
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

fn phase_and_message(obs: &StatusInputs<'_>) -> (CyberdeskPhase, String) {
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

/// Why the desk's template cannot be used, as the condition reason and message.
type TemplateRefusal<'a> = Option<(&'static str, &'a String)>;

fn template_refusal<'a>(obs: &StatusInputs<'a>) -> TemplateRefusal<'a> {
    match obs.render_error {
        Some(RenderProblem::Template(m)) => Some(("TemplateInvalid", m)),
        Some(RenderProblem::TemplateNotAllowed(m)) => Some(("TemplateNotAllowed", m)),
        _ => None,
    }
}

fn template_condition(
    obs: &StatusInputs<'_>,
    at: &Observed,
    template_refused: TemplateRefusal<'_>,
) -> Condition {
    match (template_refused, obs.render_error) {
        // Nothing is rendered for a desk the operator does not serve.
        (_, Some(RenderProblem::NotServed(m))) => at.condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::Unknown,
            NOT_SERVED,
            m.clone(),
        ),
        (Some((reason, m)), _) => at.condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::False,
            reason,
            m.clone(),
        ),
        (None, _) => at.condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::True,
            "TemplateRendered",
            "the VM template renders",
        ),
    }
}

fn created_condition(
    obs: &StatusInputs<'_>,
    at: &Observed,
    template_refused: TemplateRefusal<'_>,
) -> Condition {
    match (obs.vm, obs.render_error) {
        (Some(vm), _) => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::True,
            "Created",
            format!(
                "VirtualMachine {} exists",
                vm.metadata.name.as_deref().unwrap_or("")
            ),
        ),
        (None, Some(RenderProblem::UserData(m))) => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "UserDataUnavailable",
            m.clone(),
        ),
        (None, Some(RenderProblem::NotServed(m))) => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            NOT_SERVED,
            m.clone(),
        ),
        (None, Some(RenderProblem::Rejected(m))) => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "CreateRejected",
            m.clone(),
        ),
        (None, _) if template_refused.is_some() => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            template_refused.map_or("TemplateInvalid", |(reason, _)| reason),
            "the VM template cannot be used",
        ),
        (None, _) => at.condition(
            conditions::VM_CREATED,
            ConditionStatus::False,
            "Pending",
            "not created yet",
        ),
    }
}

fn ready_condition(phase: CyberdeskPhase, message: &str, at: &Observed) -> Condition {
    if phase == CyberdeskPhase::Running {
        at.condition(
            conditions::READY,
            ConditionStatus::True,
            "Running",
            "the desktop is ready",
        )
    } else {
        at.condition(
            conditions::READY,
            ConditionStatus::False,
            phase.as_str(),
            message,
        )
    }
}

fn timed_out_condition(obs: &StatusInputs<'_>, at: &Observed) -> Condition {
    if obs.timed_out {
        at.condition(
            conditions::TIMED_OUT,
            ConditionStatus::True,
            "Expired",
            "the timeout passed; the VM was halted",
        )
    } else {
        at.condition(
            conditions::TIMED_OUT,
            ConditionStatus::False,
            "NotExpired",
            "the timeout has not passed",
        )
    }
}

/// The status this observation calls for, keeping condition transition times that did not
/// change.
pub fn desired_status(obs: &StatusInputs<'_>) -> CyberdeskStatus {
    let current = obs.cyberdesk.status.clone().unwrap_or_default();
    let (phase, message) = phase_and_message(obs);
    let at = Observed {
        now: obs.now,
        generation: obs.cyberdesk.metadata.generation,
    };
    let template_refused = template_refusal(obs);
    let mut conds = current.conditions.clone();
    set_condition(&mut conds, template_condition(obs, &at, template_refused));
    set_condition(&mut conds, created_condition(obs, &at, template_refused));
    set_condition(&mut conds, ready_condition(phase, &message, &at));
    set_condition(&mut conds, timed_out_condition(obs, &at));

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
mod tests;
