//! What one reconcile pass should do, decided from what it observed (pure).
//!
//! The executor in `reconcile.rs` asks [`plan`] for the next step, carries it out, records
//! what came back in the [`Observation`] and asks again, until the plan is to settle. Every
//! step changes the observation so that it is not planned twice: a halted VM is `Halted`, a
//! created VM is present, a rendered or refused VM is recorded. Decisions (what to create,
//! halt, announce, write and when to look again) are therefore unit-tested here without an
//! apiserver; the executor only performs them.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::controller::announcement::{Announcement, Reason};
use crate::controller::desk::adoption;
use crate::controller::desk::expiry::{self, Deadline};
use crate::controller::desk::status;
use crate::controller::desk::status_hold;
use crate::controller::ownership::owned_by;
use crate::controller::pass::Outcome;
use crate::controller::render::{RENDER_RETRY, RenderProblem};
use crate::model::conditions::{self, ConditionStatus};
use crate::model::{
    Cyberdesk, CyberdeskPhase, CyberdeskStatus, DeskNamespaces, TimeoutAction, VirtualMachine,
    VirtualMachineInstance, names,
};
use crate::notify::supabase;
use crate::time;

/// How often cleanup re-checks while KubeVirt deletes the VM and VMI (watches usually win).
pub const CLEANUP_RECHECK: Duration = Duration::from_secs(5);
/// After a halt, the status is written by the pass the halted VM's watch event brings;
/// this is only the fallback should that event not come.
pub const HALT_FOLLOW_UP: Duration = Duration::from_secs(5);

/// Everything a pass has seen so far.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub desk: &'a Cyberdesk,
    /// The desk's VM name (`--vm-name-prefix` + desk name).
    pub vm_name: &'a str,
    /// The VM by the desk's VM name, whoever owns it.
    pub vm: Option<VirtualMachine>,
    pub vmi: Option<VirtualMachineInstance>,
    /// The VM as the template renders it, once rendered (only when there is no VM).
    pub rendered: Option<Result<Value, RenderProblem>>,
    /// The apiserver refused to create the rendered VM.
    pub refused: Option<RenderProblem>,
    /// The previous operator's VM of this (legacy) desk was looked for live.
    pub searched_legacy: bool,
    /// The desk's pool was asked for a VM in this pass (and had none to give).
    pub pool_tried: bool,
    pub default_timeout_ms: i64,
    /// Keep the previous operator's status block in step (`--legacy-status`).
    pub legacy_status: bool,
    /// Whether the desk's namespace is served, and desks there are adopted.
    pub serving: Serving,
    /// A ready URL is configured (`--ready-url`).
    pub calls_ready: bool,
    /// The platform's state table is written (Supabase).
    pub syncs_state: bool,
    /// How long ago this process wrote the desk's status while it was `Starting`, within
    /// the status hold (`status_hold`).
    pub status_written_ago: Option<Duration>,
    pub now: Timestamp,
}

/// What a pass knows before it reads the world: the settings that apply to the desk.
#[derive(Clone, Debug)]
pub struct Given {
    pub default_timeout_ms: i64,
    pub legacy_status: bool,
    pub serving: Serving,
    pub calls_ready: bool,
    pub syncs_state: bool,
    pub status_written_ago: Option<Duration>,
}

impl<'a> Observation<'a> {
    /// A pass's first observation: the desk, its VM and VMI as read, nothing done yet.
    pub fn new(
        desk: &'a Cyberdesk,
        vm_name: &'a str,
        vm: Option<VirtualMachine>,
        vmi: Option<VirtualMachineInstance>,
        given: Given,
        now: Timestamp,
    ) -> Self {
        Self {
            desk,
            vm_name,
            vm,
            vmi,
            rendered: None,
            refused: None,
            searched_legacy: false,
            pool_tried: false,
            default_timeout_ms: given.default_timeout_ms,
            legacy_status: given.legacy_status,
            serving: given.serving,
            calls_ready: given.calls_ready,
            syncs_state: given.syncs_state,
            status_written_ago: given.status_written_ago,
            now,
        }
    }
}

/// What the operator does with desks of a namespace (`--desk-namespaces`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Served; `adopts`: the previous operator's desks are adopted here.
    Served { adopts: bool },
    /// Not served: why, for the desk's status. No VM, no adoption, no notification.
    NotServed(String),
}

impl Serving {
    /// For a desk in `ns`: adopted only where the operator is limited to a set of
    /// namespaces, the previous platform's.
    pub fn of(namespaces: &DeskNamespaces, ns: &str) -> Self {
        match namespaces.refusal(ns) {
            Some(why) => Serving::NotServed(why),
            None => Serving::Served {
                adopts: namespaces.restricted(),
            },
        }
    }
}

/// When to look at the desk again without a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Only on a change (of the desk, its VM or VMI, or a template).
    OnChange,
    After(Duration),
}

/// The next thing a pass does.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Add the cleanup finalizer (the mutating webhook normally has, but it may be off or
    /// the desk older than it); the executor then plans again on the desk as stored.
    AddFinalizer,
    /// The desk was the previous (kopf) operator's: replace kopf's finalizer with this
    /// operator's in one guarded patch; the executor then plans again on the desk as stored.
    AdoptFinalizer,
    /// The desk was the previous operator's and its VM is not in the cache (it lacks this
    /// operator's labels): look for it live, by the name the desk recorded, else by label.
    FindLegacyVm,
    /// Adopt the previous operator's VM for the desk instead of creating a second one.
    Adopt(Announcement),
    /// A VM by this name that the desk does not control: warn and leave it alone.
    Conflict(Announcement),
    /// The desk's time is up: halt the VM. Counted and announced only once the halt patch,
    /// which tests the run strategy it was planned on, went through, so a stale cache can
    /// never count one timeout twice. For `timeoutAction: Stop` the pass ends there: when
    /// many desks expire together, every halt (due at expiry) goes before any of their
    /// status writes, which follow in the passes the halted VMs' watch events bring. For
    /// `Delete` the same pass goes on to delete the desk, which is what its user waits for.
    Halt {
        /// How far past its expiry the desk was when planned (the executor adds the time
        /// the halt itself takes).
        lag: Duration,
        announce: Announcement,
        /// The desk's first timeout; `false` when a desk already `TimedOut` had its VM
        /// started again: halted again, but neither counted nor observed as a timeout.
        first: bool,
    },
    /// Take a booted VM from the desk's warm pool (`spec.pool`); when none is ready the
    /// pass goes on to render a VM of its own from the pool's template.
    Claim,
    /// Render the VM from the template (reads the user-data Secret for inline templates).
    Render,
    /// Create the rendered VM.
    Create(Value),
    /// Nothing left to change in the world: finish the pass.
    Settle(Box<Settlement>),
}

/// The end of a pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Settlement {
    /// The status to write, when it differs from the stored one.
    pub status: Option<CyberdeskStatus>,
    pub announce: Vec<Announcement>,
    /// `timeoutAction: Delete` on a timed-out desk: delete the Cyberdesk.
    pub delete_desk: bool,
    /// The desk runs and is ready, and the ready call has not been recorded: make it.
    pub call_ready: bool,
    /// The desk's platform state differs from the one recorded: write it.
    pub platform_state: Option<&'static str>,
    /// The desk turned `Running` (first, or again after a restart): how long after its
    /// creation, and where its VM came from (`pool`, `cold`, or `none` without a pool).
    pub started: Option<(Duration, &'static str)>,
    pub wake: Wake,
    pub outcome: Outcome,
}

/// The ready call's outcome (delivered or given up) is in the desk's stored status.
pub fn ready_call_recorded(desk: &Cyberdesk) -> bool {
    desk.status
        .as_ref()
        .and_then(|s| s.notifications.as_ref())
        .is_some_and(|n| n.ready.is_some())
}

/// The platform state recorded in the desk's stored status (delivered or given up).
pub fn platform_state_recorded(desk: &Cyberdesk) -> Option<&str> {
    desk.status
        .as_ref()?
        .notifications
        .as_ref()?
        .platform_state
        .as_ref()?
        .value
        .as_deref()
}

/// The desk recorded a timeout in an earlier pass: timeouts are sticky.
pub fn timed_out_before(desk: &Cyberdesk) -> bool {
    desk.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::TIMED_OUT))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

fn has_finalizer(desk: &Cyberdesk) -> bool {
    desk.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == names::FINALIZER)
}

/// How far past its expiry the desk is, if it is.
fn expired_by(obs: &Observation<'_>) -> Option<Duration> {
    let expiry = status::expiry_time(obs.desk, obs.vm.as_ref(), obs.default_timeout_ms)?;
    match expiry::deadline(obs.now, expiry) {
        Deadline::Passed(lag) => Some(lag),
        Deadline::In(_) => None,
    }
}

/// The next step of a pass over a desk that is not being deleted.
pub fn plan(obs: &Observation<'_>) -> Step {
    let desk = obs.desk;
    let adopts = match &obs.serving {
        Serving::Served { adopts } => *adopts,
        Serving::NotServed(why) => return Step::Settle(Box::new(settle_not_served(obs, why))),
    };
    if adopts && adoption::has_kopf_finalizer(desk) {
        return Step::AdoptFinalizer;
    }
    if !has_finalizer(desk) {
        return Step::AddFinalizer;
    }
    let vm_name = obs.vm_name;
    let legacy = adopts && adoption::is_legacy(desk);
    if obs.vm.is_none() && legacy && !obs.searched_legacy {
        return Step::FindLegacyVm;
    }
    if let Some(vm) = &obs.vm
        && !owned_by(vm, desk)
    {
        if legacy && adoption::adoptable(vm, desk) {
            let name = vm.metadata.name.as_deref().unwrap_or(vm_name);
            let expiry = status::expiry_time(desk, Some(vm), obs.default_timeout_ms)
                .map(time::format)
                .unwrap_or_default();
            return Step::Adopt(Announcement::new(
                Reason::VirtualMachineAdopted,
                format!(
                    "adopted VirtualMachine {name} from the previous operator; expiry stays {expiry}"
                ),
            ));
        }
        return Step::Conflict(Announcement::new(
            Reason::VirtualMachineConflict,
            format!(
                "VirtualMachine {vm_name} exists but is not controlled by this Cyberdesk; leaving it alone"
            ),
        ));
    }
    let expired = expired_by(obs);
    let timed_out = timed_out_before(desk) || expired.is_some();
    if timed_out
        && let Some(vm) = &obs.vm
        && vm.run_strategy() != Some("Halted")
    {
        let timeout_ms = desk.effective_timeout_ms(obs.default_timeout_ms);
        let first = !timed_out_before(desk);
        let announce = if first {
            Announcement::new(
                Reason::TimedOut,
                format!("timed out after {timeout_ms} ms; halted VirtualMachine {vm_name}"),
            )
        } else {
            Announcement::new(
                Reason::TimeoutReapplied,
                format!(
                    "VirtualMachine {vm_name} was started again after the desk timed out; halted it again"
                ),
            )
        };
        return Step::Halt {
            lag: expired.unwrap_or_default(),
            announce,
            first,
        };
    }
    if obs.vm.is_none() && !timed_out && obs.refused.is_none() {
        // A desk claims from its pool only before it ever had a VM: the source recorded
        // in its status says it had one, which must not be replaced by a second claim.
        let never_had_vm = desk.status.as_ref().and_then(|s| s.source).is_none();
        if desk.spec.pool.is_some() && !obs.pool_tried && never_had_vm && obs.rendered.is_none() {
            return Step::Claim;
        }
        match &obs.rendered {
            None => return Step::Render,
            Some(Ok(vm)) => return Step::Create(vm.clone()),
            Some(Err(_)) => {}
        }
    }
    Step::Settle(Box::new(settle(obs, timed_out)))
}

/// A desk outside `--desk-namespaces` only says why nothing happens: whatever VM has
/// its name is not looked at (nor shown), no finalizer, no legacy block, no notification.
fn settle_not_served(obs: &Observation<'_>, why: &str) -> Settlement {
    let only_why = Observation {
        vm: None,
        vmi: None,
        rendered: Some(Err(RenderProblem::NotServed(why.to_string()))),
        refused: None,
        legacy_status: false,
        calls_ready: false,
        syncs_state: false,
        status_written_ago: None,
        ..obs.clone()
    };
    settle(&only_why, false)
}

fn settle(obs: &Observation<'_>, timed_out: bool) -> Settlement {
    let desk = obs.desk;
    // A render problem only matters while a VM is still to be made.
    let problem = match (&obs.vm, &obs.refused, &obs.rendered) {
        (Some(_), _, _) => None,
        (None, Some(refused), _) => Some(refused),
        (None, None, Some(Err(problem))) => Some(problem),
        _ => None,
    }
    .filter(|_| !timed_out);
    let desired = status::desired_status(&status::StatusInputs {
        cyberdesk: desk,
        vm: obs.vm.as_ref(),
        vmi: obs.vmi.as_ref(),
        render_error: problem,
        timed_out,
        default_timeout_ms: obs.default_timeout_ms,
        legacy: obs.legacy_status,
        now: obs.now,
    });
    let before = desk.status.as_ref();
    let mut announce = Vec::new();
    if let Some(problem) = problem {
        // One Warning per distinct problem, not one per retry.
        if before.and_then(|s| s.message.as_deref()) != Some(problem.message()) {
            announce.push(Announcement::new(problem.reason(), problem.message()));
        }
    }
    let was_running = before.and_then(|s| s.phase) == Some(CyberdeskPhase::Running);
    let mut started = None;
    if desired.phase == Some(CyberdeskPhase::Running) && !was_running {
        let created = desk.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let after = created
            .and_then(|c| Duration::try_from(obs.now.duration_since(c)).ok())
            .unwrap_or_default();
        started = Some((after, desired.source.map_or("none", |s| s.as_str())));
        let ip = desired.ip_address.as_deref().unwrap_or_default();
        announce.push(Announcement::new(
            Reason::Ready,
            format!("desktop running at {ip}"),
        ));
    }
    let delete_desk = timed_out && desk.timeout_action() == TimeoutAction::Delete;
    if delete_desk {
        announce.push(Announcement::new(
            Reason::Deleting,
            "timeoutAction Delete: deleting the Cyberdesk",
        ));
    }
    let expiry = desired.expiry_time.as_deref().and_then(time::parse);
    let (wake, outcome) = if let Some(RenderProblem::NotServed(_)) = problem {
        // Only a restart with other flags changes this.
        (Wake::OnChange, Outcome::Success)
    } else if problem.is_some() {
        (Wake::After(RENDER_RETRY), Outcome::Requeue)
    } else if delete_desk || timed_out {
        (Wake::OnChange, Outcome::Success)
    } else {
        match expiry.map(|exp| expiry::deadline(obs.now, exp)) {
            // Wake up exactly at expiry; no polling in between.
            Some(Deadline::In(wait)) => (Wake::After(wait), Outcome::Success),
            Some(Deadline::Passed(_)) => (Wake::After(Duration::ZERO), Outcome::Success),
            None => (Wake::OnChange, Outcome::Success),
        }
    };
    // A starting desk's detail written a moment ago: the newest detail goes later.
    let held = status_hold::wait_for(before, &desired, obs.status_written_ago);
    let wake = match (held, wake) {
        (Some(hold), Wake::After(wait)) => Wake::After(hold.min(wait)),
        (Some(hold), Wake::OnChange) => Wake::After(hold),
        (None, wake) => wake,
    };
    let call_ready = obs.calls_ready
        && desired.phase == Some(CyberdeskPhase::Running)
        && !ready_call_recorded(desk);
    let platform_state = supabase::platform_state(&desired)
        .filter(|state| obs.syncs_state && platform_state_recorded(desk) != Some(*state));
    Settlement {
        status: (before != Some(&desired) && held.is_none()).then_some(desired),
        announce,
        delete_desk,
        call_ready,
        platform_state,
        started,
        wake,
        outcome,
    }
}

/// What cleanup of a deleted desk does next.
#[derive(Clone, Debug, PartialEq)]
pub enum CleanupStep {
    /// Not ours to hold (no finalizer of ours): nothing to do.
    Nothing,
    /// Delete the desk's VM (KubeVirt removes the VMI first).
    DeleteVm(Announcement),
    /// KubeVirt is still deleting: show it and look again.
    Wait { status: Option<CyberdeskStatus> },
    /// Everything is gone: release the finalizer.
    Release(Announcement),
}

/// Cleanup of a desk with a deletion timestamp. `vm` is the desk's own VM only (another
/// owner's VM by the same name is never deleted); `vmi` is looked at only when it exists.
pub fn plan_cleanup(obs: &Observation<'_>) -> CleanupStep {
    let desk = obs.desk;
    if !has_finalizer(desk) {
        return CleanupStep::Nothing;
    }
    let vm_name = obs.vm_name;
    if let Some(vm) = &obs.vm
        && vm.metadata.deletion_timestamp.is_none()
    {
        return CleanupStep::DeleteVm(Announcement::new(
            Reason::DeletingVirtualMachine,
            format!("deleting VirtualMachine {vm_name}"),
        ));
    }
    if obs.vm.is_some() || obs.vmi.is_some() {
        let desired = status::desired_status(&status::StatusInputs {
            cyberdesk: desk,
            vm: obs.vm.as_ref(),
            vmi: obs.vmi.as_ref(),
            render_error: None,
            timed_out: timed_out_before(desk),
            default_timeout_ms: obs.default_timeout_ms,
            legacy: obs.legacy_status,
            now: obs.now,
        });
        return CleanupStep::Wait {
            status: (desk.status.as_ref() != Some(&desired)).then_some(desired),
        };
    }
    CleanupStep::Release(Announcement::new(
        Reason::CleanedUp,
        format!("VirtualMachine {vm_name} is gone"),
    ))
}

#[cfg(test)]
mod tests;
