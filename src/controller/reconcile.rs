//! One level-triggered reconcile pass for a Cyberdesk: read the world, make it right, write
//! only what changed. Running it twice in a row changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::backoff::Failures;
use crate::catalog::Catalog;
use crate::controller::cache::{Caches, trim_desk, trim_vm};
use crate::controller::claim::{PoolVms, claim_from_pool, desk_vm};
use crate::controller::error::Error;
use crate::controller::finalizers;
use crate::controller::own_writes::OwnWrites;
use crate::controller::plan::{
    self, Announcement, CleanupStep, Observation, Outcome, Reason, Settlement, Step, Wake,
};
use crate::controller::render::render_vm;
use crate::controller::status::RenderProblem;
use crate::controller::status_hold::StatusClock;
use crate::controller::takeover::{claim_vm, find_legacy_vm, take_over_finalizer};
use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::{
    Cyberdesk, CyberdeskPool, Placement, TimeoutAction, VirtualMachine, VirtualMachineInstance,
    names,
};

/// A failed pass is retried after 0.5 s, doubling up to 5 min per desk.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Most steps one pass takes (render, create, halt, settle, with room to spare).
const MAX_STEPS: usize = 8;

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub default_timeout_ms: i64,
    /// Passes in flight at once.
    pub max_concurrent_reconciles: u16,
    /// How the caches fill when their watches start.
    pub initial_list: crate::controller::initial_list::InitialList,
    /// Where VMs live and how they are named.
    pub placement: Placement,
    /// How long a VM in the VM namespace whose desk is gone stays before it is deleted.
    pub orphan_grace: Duration,
    /// Keep the previous operator's `status.cyberdesk_create` block in step.
    pub legacy_status: bool,
    /// The namespaces desks are served (and adopted) in (`--desk-namespaces`).
    pub desk_namespaces: crate::model::DeskNamespaces,
    /// What to tell the platform, and how.
    pub notify: crate::notify::NotifierConfig,
}

pub struct Context {
    pub client: kube::Client,
    /// Publishes events in the background.
    pub announcer: Announcer,
    pub metrics: Metrics,
    /// The template ConfigMaps, kept current by a watch (hot reload).
    pub templates: Catalog,
    pub cfg: ControllerConfig,
    /// The trimmed VMs and VMIs (and desks) the controller watches; passes read these.
    pub caches: Caches,
    /// Status writes the desk cache may not show yet.
    pub own_writes: OwnWrites,
    /// When each starting desk's status was last written (`status_hold`).
    pub status_clock: StatusClock,
    /// Tells the platform about desks, off the pass (`None`: nothing configured).
    pub notifier: Option<crate::notify::Notifier>,
    /// Consecutive failures per desk, for exponential backoff.
    pub failures: Failures<ObjectRef<Cyberdesk>>,
    /// The VMs pooled desks got, until the caches show them.
    pub pool_vms: PoolVms,
    /// Consecutive failures per warm pool.
    pub pool_failures: Failures<ObjectRef<CyberdeskPool>>,
    /// VMs the pool controller created or deleted, until the cache shows it.
    pub pool_writes: crate::controller::pool_writes::PoolWrites,
}

fn pp() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

pub(super) fn plain_pp() -> PatchParams {
    PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

impl Context {
    /// Queues an event about the desk; publishing happens off the pass.
    pub(super) fn announce(&self, cd: &Cyberdesk, announcement: Announcement) {
        let reason = announcement.reason;
        let event = Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().into(),
            note: Some(announcement.note),
            action: reason.action().into(),
            secondary: None,
        };
        self.announcer.announce(cd.object_ref(&()), event);
    }

    pub(super) fn time<T>(&self, operation: &str, start: Instant, value: T) -> T {
        self.metrics
            .operation_duration
            .with_label_values(&[operation])
            .observe(start.elapsed().as_secs_f64());
        value
    }
}

pub async fn reconcile(cd: Arc<Cyberdesk>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = cd.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", cyberdesk = %cd.name_any(), namespace = %ns);
    let result = async {
        ctx.caches
            .wait_filled()
            .await
            .map_err(|_| Error::CachesGone)?;
        if ns.is_empty() {
            Err(Error::NoNamespace)
        } else if cd.metadata.deletion_timestamp.is_some() {
            cleanup(&cd, &ctx, &ns).await
        } else {
            match ctx.own_writes.view(&cd) {
                Some(seen) => apply(&seen, &ctx, &ns).await,
                None => apply(&cd, &ctx, &ns).await,
            }
        }
    }
    .instrument(span)
    .await;
    let result = ctx.time("reconcile", start, result);
    // The one place passes are counted.
    let label = match &result {
        Ok((_, outcome)) => outcome.as_str(),
        Err(_) => "error",
    };
    ctx.metrics
        .reconcile_total
        .with_label_values(&[label])
        .inc();
    let (action, _) = result?;
    ctx.failures.clear(&ObjectRef::from(cd.as_ref()));
    Ok(action)
}

/// Requeue with exponential backoff (0.5 s doubling to 5 min) per desk.
pub fn error_policy(cd: Arc<Cyberdesk>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .inc();
    let attempts = ctx.failures.record(ObjectRef::from(cd.as_ref()));
    let delay = crate::backoff::nth_delay(RETRY_MIN, RETRY_MAX, attempts);
    tracing::warn!(cyberdesk = %cd.name_any(), namespace = ?cd.namespace(), %error, attempts, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The ownerReference a VM of this desk carries: none when it lives in another namespace
/// (`--vm-namespace`), where Kubernetes would take it for a missing owner.
pub(super) fn owner_reference(
    cd: &Cyberdesk,
    ctx: &Context,
    ns: &str,
) -> Result<Option<Value>, Error> {
    if ctx.cfg.placement.elsewhere(ns) {
        return Ok(None);
    }
    let owner = cd.controller_owner_ref(&()).ok_or(Error::NoUid)?;
    serde_json::to_value(owner)
        .map(Some)
        .map_err(|source| Error::Serialization {
            what: "ownerReference",
            source,
        })
}

/// Halts the VM with a guarded JSON patch (the same change `virtctl stop` makes).
async fn halt(vms: &Api<VirtualMachine>, vm: &VirtualMachine) -> Result<VirtualMachine, Error> {
    let name = vm.name_any();
    let ops = match vm.run_strategy() {
        Some(current) => json!([{"op": "test", "path": "/spec/runStrategy", "value": current},
                                {"op": "replace", "path": "/spec/runStrategy", "value": "Halted"}]),
        None => json!([{"op": "add", "path": "/spec/runStrategy", "value": "Halted"}]),
    };
    super::patch::json(vms, &name, ops, "halt patch").await
}

/// Writes the status; the desk as stored after it.
async fn write_status(
    api: &Api<Cyberdesk>,
    cd: &Cyberdesk,
    desired: &crate::model::CyberdeskStatus,
) -> Result<Cyberdesk, Error> {
    // The notifier's records are its own (merge patches): never applied from here, so the
    // reconciler neither owns nor removes them.
    let status = crate::model::CyberdeskStatus {
        notifications: None,
        ..desired.clone()
    };
    let body =
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "status": status});
    Ok(api
        .patch_status(&cd.name_any(), &pp(), &Patch::Apply(body))
        .await?)
}

/// Remembers the desk a write left, trimmed like the cache, for the passes that run
/// before the desk cache has it.
fn remember(ctx: &Context, planned_from: &Cyberdesk, mut stored: Cyberdesk) -> Cyberdesk {
    trim_desk(&mut stored);
    ctx.own_writes.record(planned_from, stored.clone());
    stored
}

/// A create refused because the object exists (409): the cache was behind.
fn exists_already(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(e) if e.code == 409)
}

/// A guarded patch refused because the object changed (409) or its JSON patch `test`
/// failed (422): the cache was behind.
fn changed_meanwhile(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(e) if e.code == 409 || e.code == 422)
}

/// Reads the desk's VM and VMI from the caches, then carries out the plan step by step.
///
/// The caches may lag the apiserver, so every write the plan makes on what it read is
/// guarded: the VM is created with a plain create (refused with 409 when it exists) and
/// halted with a JSON patch that tests the run strategy it read. A refused write means the
/// cache was behind: the pass reads that VM live once and plans again. So a stale cache
/// costs one GET, and a fresh one none; a VM is never created twice or halted twice.
async fn apply(cd: &Cyberdesk, ctx: &Context, ns: &str) -> Result<(Action, Outcome), Error> {
    if !ctx.cfg.desk_namespaces.serves(ns) {
        // Nothing of the VM namespace is read for a desk the operator does not serve.
        let vm_name = ctx.cfg.placement.vm_name(&cd.name_any());
        return apply_on(cd, ctx, ns, vm_name, None).await;
    }
    let vm_ns = ctx.cfg.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), vm_ns);
    let (vm_name, vm) = desk_vm(cd, ctx, vm_ns, &vms).await?;
    apply_on(cd, ctx, ns, vm_name, vm).await
}

/// Carries out the plan for the desk whose VM is (or would be) `vm_name`.
async fn apply_on(
    cd: &Cyberdesk,
    ctx: &Context,
    ns: &str,
    vm_name: String,
    vm: Option<VirtualMachine>,
) -> Result<(Action, Outcome), Error> {
    let name = cd.name_any();
    let api: Api<Cyberdesk> = Api::namespaced(ctx.client.clone(), ns);
    let vm_ns = ctx.cfg.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), vm_ns);
    let mut obs = Observation {
        desk: cd,
        vm_name: &vm_name,
        vmi: ctx.caches.vmi(vm_ns, &vm_name),
        vm,
        rendered: None,
        refused: None,
        searched_legacy: false,
        pool_tried: false,
        default_timeout_ms: ctx.cfg.default_timeout_ms,
        legacy_status: ctx.cfg.legacy_status,
        serving: plan::Serving::of(&ctx.cfg.desk_namespaces, ns),
        calls_ready: ctx.notifier.as_ref().is_some_and(|n| n.calls_ready()),
        syncs_state: ctx.notifier.as_ref().is_some_and(|n| n.syncs_state()),
        status_written_ago: ctx.status_clock.since(&cd.uid().unwrap_or_default()),
        now: Timestamp::now(),
    };
    let mut read_live = false;
    // Each step changes the observation so it is not planned again; the bound only
    // guards against a planning mistake turning into a busy loop.
    for _ in 0..MAX_STEPS {
        obs.now = Timestamp::now();
        match plan::plan(&obs) {
            Step::AddFinalizer => {
                // Carry on with the desk as stored: one pass adds the finalizer and
                // creates the VM.
                let stored = remember(ctx, cd, finalizers::add(&api, cd, names::FINALIZER).await?);
                return Box::pin(apply(&stored, ctx, ns)).await;
            }
            Step::TakeOverFinalizer => {
                let stored = remember(ctx, cd, take_over_finalizer(&api, cd).await?);
                tracing::info!(cyberdesk = %name, "took the desk over from the previous operator's finalizer");
                return Box::pin(apply(&stored, ctx, ns)).await;
            }
            Step::FindLegacyVm => {
                obs.searched_legacy = true;
                obs.vm = find_legacy_vm(&vms, cd, &vm_name).await?;
            }
            Step::Adopt(announcement) => {
                let Some(found) = &obs.vm else { break };
                // The claim keeps the VM's labels and its template's, and is guarded by its
                // resourceVersion: none of them is in the cache, so claim what a live read
                // returns (adoption happens once per desk).
                let Some(mut live) = vms.get_opt(&found.name_any()).await? else {
                    return Ok((Action::requeue(plan::CLEANUP_RECHECK), Outcome::Requeue));
                };
                if !crate::controller::adoption::adoptable(&live, cd) {
                    // Not what the cache suggested: plan again on the live VM.
                    trim_vm(&mut live);
                    obs.vm = Some(live);
                    continue;
                }
                match claim_vm(&vms, &live, cd, ctx, ns).await {
                    Ok(mut claimed) => {
                        tracing::info!(vm = %claimed.name_any(), "adopted the previous operator's VirtualMachine");
                        ctx.announce(cd, announcement);
                        trim_vm(&mut claimed);
                        obs.vm = Some(claimed);
                    }
                    // Changed meanwhile: look again in a later pass.
                    Err(Error::Kube(e)) if changed_meanwhile(&e) => {
                        return Ok((Action::requeue(plan::CLEANUP_RECHECK), Outcome::Requeue));
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Conflict(announcement) => {
                ctx.announce(cd, announcement);
                return Ok((Action::requeue(plan::RENDER_RETRY), Outcome::Requeue));
            }
            Step::Halt {
                lag,
                announce,
                first,
            } => {
                let Some(current) = &obs.vm else { break };
                let t = Instant::now();
                let halted = match ctx.time("stop_vm", t, halt(&vms, current).await) {
                    Ok(halted) => halted,
                    Err(Error::Kube(e)) if changed_meanwhile(&e) && !read_live => {
                        read_live = true;
                        obs.vm = vms.get_opt(&vm_name).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // Logged once the halt went through: a patch refused on a stale read is
                // planned again and must not read as a second timeout. The lag runs until
                // the apiserver took the halt.
                let lag = lag + t.elapsed();
                if first {
                    tracing::info!(vm = %vm_name, lag_ms = lag.as_millis() as u64, "timeout reached; halted the VM");
                    ctx.metrics.vm_timeout.inc();
                    ctx.metrics.timeout_lag.observe(lag.as_secs_f64());
                } else {
                    tracing::info!(vm = %vm_name, "the VM of a timed-out desk was started again; halted it again");
                }
                ctx.announce(cd, announce);
                if cd.timeout_action() != TimeoutAction::Delete {
                    return Ok((Action::requeue(plan::HALT_FOLLOW_UP), Outcome::Success));
                }
                // Delete: go on to the deletion in this pass instead of waiting for one.
                let mut halted = halted;
                trim_vm(&mut halted);
                obs.vm = Some(halted);
            }
            Step::Claim => {
                obs.pool_tried = true;
                if let Some((claimed_name, claimed)) = claim_from_pool(cd, ctx, ns, &vms).await? {
                    return Box::pin(apply_on(cd, ctx, ns, claimed_name, Some(claimed))).await;
                }
            }
            Step::Render => obs.rendered = Some(render_vm(cd, ctx, ns).await?),
            Step::Create(rendered) => {
                let vm: VirtualMachine =
                    serde_json::from_value(rendered).map_err(|source| Error::Serialization {
                        what: "rendered VirtualMachine",
                        source,
                    })?;
                let t = Instant::now();
                let created = vms.create(&create_params(), &vm).await;
                match ctx.time("create_vm", t, created) {
                    Ok(mut created) => {
                        ctx.metrics.vm_created.inc();
                        if cd.spec.pool.is_some() {
                            // Until the cache shows it: this desk has a VM, claim no other.
                            ctx.pool_vms
                                .record(&cd.uid().unwrap_or_default(), &created.name_any());
                        }
                        tracing::info!(vm = %vm_name, "created VirtualMachine");
                        let note = format!("created VirtualMachine {vm_name}");
                        ctx.announce(cd, Announcement::new(Reason::VirtualMachineCreated, note));
                        trim_vm(&mut created);
                        obs.vm = Some(created);
                    }
                    // Not in the cache yet, or not ours (the cache holds only ours).
                    Err(e) if exists_already(&e) && !read_live => {
                        read_live = true;
                        obs.vm = vms.get_opt(&vm_name).await?;
                    }
                    // A VM the apiserver refuses (invalid, forbidden) will not pass on
                    // retry either: report it on the desk like any other render problem.
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                        obs.refused = Some(RenderProblem::Rejected(format!(
                            "the apiserver rejected VirtualMachine {vm_name}: {}",
                            e.message
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Settle(settlement) => return settle(&api, cd, ctx, *settlement).await,
        }
    }
    Err(Error::Unsettled)
}

pub(super) fn create_params() -> kube::api::PostParams {
    kube::api::PostParams {
        dry_run: false,
        field_manager: Some(names::FIELD_MANAGER.into()),
    }
}

/// Writes the status, publishes, deletes a timed-out desk if asked to, and says when to
/// look again.
async fn settle(
    api: &Api<Cyberdesk>,
    cd: &Cyberdesk,
    ctx: &Context,
    settlement: Settlement,
) -> Result<(Action, Outcome), Error> {
    if let Some(desired) = &settlement.status {
        let t = Instant::now();
        let written = write_status(api, cd, desired).await;
        let stored = ctx.time("update_status", t, written)?;
        ctx.status_clock
            .wrote(&cd.uid().unwrap_or_default(), desired.phase);
        remember(ctx, cd, stored);
    }
    if settlement.delete_desk {
        match api.delete(&cd.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Ok((Action::await_change(), settlement.outcome));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for announcement in settlement.announce {
        ctx.announce(cd, announcement);
    }
    if let Some((after, source)) = settlement.started {
        ctx.metrics
            .desk_start
            .with_label_values(&[source])
            .observe(after.as_secs_f64());
    }
    if let Some(notifier) = &ctx.notifier {
        let uid = cd.uid().unwrap_or_default();
        if settlement.call_ready {
            notifier.ready(cd);
        } else if plan::ready_call_recorded(cd) {
            notifier.ready_recorded(&uid);
        }
        match settlement.platform_state {
            Some(state) => notifier.platform_state(cd, state),
            None => {
                if let Some(recorded) = plan::platform_state_recorded(cd) {
                    notifier.platform_state_recorded(&uid, recorded);
                }
            }
        }
    }
    let action = match settlement.wake {
        Wake::OnChange => Action::await_change(),
        Wake::After(wait) => Action::requeue(wait),
    };
    Ok((action, settlement.outcome))
}

/// Cleanup reads the VM and VMI live, not from the caches: a stale "gone" would release
/// the finalizer while the VM still runs, and nothing would delete it after that.
async fn cleanup(cd: &Cyberdesk, ctx: &Context, ns: &str) -> Result<(Action, Outcome), Error> {
    let name = cd.name_any();
    let api: Api<Cyberdesk> = Api::namespaced(ctx.client.clone(), ns);
    let vm_ns = ctx.cfg.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), vm_ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), vm_ns);
    let mut vm_name = ctx.cfg.placement.vm_name(&name);
    // Only the desk's own VM: another owner's VM by the same name is never deleted.
    let mut vm = vms
        .get_opt(&vm_name)
        .await?
        .filter(|vm| plan::owned_by(vm, cd));
    if vm.is_none() && cd.spec.pool.is_some() {
        // The pool VM it claimed, by its labels.
        let selector = format!("{}={name},{}", names::LABEL_INSTANCE, names::LABEL_POOL);
        let claimed = vms.list(&ListParams::default().labels(&selector)).await?;
        if let Some(found) = claimed.items.into_iter().find(|vm| plan::owned_by(vm, cd)) {
            vm_name = found.name_any();
            vm = Some(found);
        }
    }
    let mut obs = Observation {
        desk: cd,
        vm_name: &vm_name,
        vm,
        vmi: None,
        rendered: None,
        refused: None,
        searched_legacy: false,
        pool_tried: false,
        default_timeout_ms: ctx.cfg.default_timeout_ms,
        legacy_status: ctx.cfg.legacy_status,
        serving: plan::Serving::of(&ctx.cfg.desk_namespaces, ns),
        calls_ready: ctx.notifier.as_ref().is_some_and(|n| n.calls_ready()),
        syncs_state: ctx.notifier.as_ref().is_some_and(|n| n.syncs_state()),
        status_written_ago: None,
        now: Timestamp::now(),
    };
    // A VMI left by our VM belongs to it; KubeVirt removes it before the VM.
    if obs.vm.is_some() {
        obs.vmi = vmis.get_opt(&vm_name).await?;
    }
    for _ in 0..MAX_STEPS {
        obs.now = Timestamp::now();
        match plan::plan_cleanup(&obs) {
            CleanupStep::Nothing => return Ok((Action::await_change(), Outcome::Success)),
            CleanupStep::DeleteVm(announcement) => {
                let t = Instant::now();
                let deleted = vms.delete(&vm_name, &DeleteParams::default()).await;
                // What is left: the VM marked for deletion (KubeVirt's finalizer holds it
                // while the VMI goes), or nothing.
                obs.vm = match ctx.time("delete_vm", t, deleted) {
                    Ok(left) => left.left(),
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(e) => return Err(e.into()),
                };
                ctx.metrics.vm_deleted.inc();
                tracing::info!(vm = %vm_name, "deleting VirtualMachine");
                ctx.announce(cd, announcement);
                if obs
                    .vm
                    .as_ref()
                    .is_some_and(|vm| vm.metadata.deletion_timestamp.is_none())
                {
                    // Not marked yet (a stale answer): look again later rather than loop.
                    return Ok((Action::requeue(plan::CLEANUP_RECHECK), Outcome::Requeue));
                }
            }
            CleanupStep::Wait { status } => {
                if let Some(desired) = &status {
                    write_status(&api, cd, desired).await?;
                }
                return Ok((Action::requeue(plan::CLEANUP_RECHECK), Outcome::Requeue));
            }
            CleanupStep::Release(announcement) => {
                finalizers::release(&api, cd, names::FINALIZER).await?;
                ctx.own_writes.forget(cd);
                ctx.pool_vms.forget(&cd.uid().unwrap_or_default());
                if let (Some(notifier), Some(uid)) = (&ctx.notifier, cd.uid()) {
                    notifier.forget(&uid);
                }
                tracing::info!(vm = %vm_name, "VirtualMachine gone; finalizer released");
                ctx.announce(cd, announcement);
                return Ok((Action::await_change(), Outcome::Success));
            }
        }
    }
    Err(Error::Unsettled)
}
