//! One level-triggered reconcile pass for a Cyberdesk: read the world, make it right, write
//! only what changed. Running it twice in a row changes nothing.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use crate::backoff::Failures;
use crate::controller::announcement::{Announcement, Reason};
use crate::controller::cache::{trim_desk, trim_vm};
use crate::controller::context::Shared;
use crate::controller::desk::adoption::writes::find_legacy_vm;
use crate::controller::desk::adoption::{self, writes::adopt_finalizer, writes::adopt_vm};
use crate::controller::desk::context::DeskContext;
use crate::controller::desk::plan::{
    self, CleanupStep, Given, Observation, Settlement, Step, Wake,
};
use crate::controller::error::Error;
use crate::controller::finalizers;
use crate::controller::ownership::owned_by;
use crate::controller::pass::{Outcome, Reconciler};
use crate::controller::patch::{self, apply_params, create_params};
use crate::controller::pool::claim::{claim_from_pool, desk_vm};
use crate::controller::render::{RENDER_RETRY, RenderProblem, render_vm};
use crate::model::{Cyberdesk, TimeoutAction, VirtualMachine, VirtualMachineInstance, names};

/// Most steps one pass takes (render, create, halt, settle, with room to spare).
const MAX_STEPS: usize = 8;

impl Reconciler for DeskContext {
    type Object = Cyberdesk;
    const OPERATION: &'static str = "reconcile";
    /// A failed pass is retried after 0.5 s, doubling up to 5 min per desk.
    const RETRY_MIN: Duration = Duration::from_millis(500);
    const RETRY_MAX: Duration = Duration::from_secs(300);

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn failures(&self) -> &Failures<ObjectRef<Cyberdesk>> {
        &self.failures
    }

    fn span(cd: &Cyberdesk, ns: &str) -> tracing::Span {
        tracing::info_span!("reconcile", cyberdesk = %cd.name_any(), namespace = %ns)
    }

    fn retrying(cd: &Cyberdesk, error: &Error, attempts: u32, delay: Duration) {
        tracing::warn!(cyberdesk = %cd.name_any(), namespace = ?cd.namespace(), %error, attempts, ?delay, "reconcile failed; retrying");
    }

    async fn pass(&self, cd: &Cyberdesk, ns: &str) -> Result<(Action, Outcome), Error> {
        if cd.metadata.deletion_timestamp.is_some() {
            cleanup(cd, self, ns).await
        } else {
            match self.own_writes.view(cd) {
                Some(seen) => apply(&seen, self, ns).await,
                None => apply(cd, self, ns).await,
            }
        }
    }
}

/// What a pass over the desk starts from: the settings, and what the notifier does.
fn given(ctx: &DeskContext, ns: &str, status_written_ago: Option<Duration>) -> Given {
    Given {
        default_timeout_ms: ctx.settings.default_timeout_ms,
        legacy_status: ctx.settings.legacy_status,
        serving: plan::Serving::of(&ctx.settings.desk_namespaces, ns),
        calls_ready: ctx.notifier.as_ref().is_some_and(|n| n.calls_ready()),
        syncs_state: ctx.notifier.as_ref().is_some_and(|n| n.syncs_state()),
        status_written_ago,
    }
}

/// Halts the VM with a guarded JSON patch (the same change `virtctl stop` makes).
async fn halt(vms: &Api<VirtualMachine>, vm: &VirtualMachine) -> Result<VirtualMachine, Error> {
    let name = vm.name_any();
    let ops = match vm.run_strategy() {
        Some(current) => json!([{"op": "test", "path": "/spec/runStrategy", "value": current},
                                {"op": "replace", "path": "/spec/runStrategy", "value": "Halted"}]),
        None => json!([{"op": "add", "path": "/spec/runStrategy", "value": "Halted"}]),
    };
    patch::json(vms, &name, ops, "halt patch").await
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
        .patch_status(&cd.name_any(), &apply_params(), &Patch::Apply(body))
        .await?)
}

/// Remembers the desk a write left, trimmed like the cache, for the passes that run
/// before the desk cache has it.
fn remember(ctx: &DeskContext, planned_from: &Cyberdesk, mut stored: Cyberdesk) -> Cyberdesk {
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
async fn apply(cd: &Cyberdesk, ctx: &DeskContext, ns: &str) -> Result<(Action, Outcome), Error> {
    if !ctx.settings.desk_namespaces.serves(ns) {
        // Nothing of the VM namespace is read for a desk the operator does not serve.
        let vm_name = ctx.shared.placement.vm_name(&cd.name_any());
        return apply_on(cd, ctx, ns, vm_name, None).await;
    }
    let vm_ns = ctx.shared.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.shared.client.clone(), vm_ns);
    let (vm_name, vm) = desk_vm(cd, &ctx.shared, &ctx.pool_vms, vm_ns, &vms).await?;
    apply_on(cd, ctx, ns, vm_name, vm).await
}

/// Carries out the plan for the desk whose VM is (or would be) `vm_name`.
async fn apply_on(
    cd: &Cyberdesk,
    ctx: &DeskContext,
    ns: &str,
    vm_name: String,
    vm: Option<VirtualMachine>,
) -> Result<(Action, Outcome), Error> {
    let api: Api<Cyberdesk> = Api::namespaced(ctx.shared.client.clone(), ns);
    let vm_ns = ctx.shared.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.shared.client.clone(), vm_ns);
    let vmi = ctx.shared.caches.vmi(vm_ns, &vm_name);
    let written_ago = ctx.status_clock.since(&cd.uid().unwrap_or_default());
    let given = given(ctx, ns, written_ago);
    let mut obs = Observation::new(cd, &vm_name, vm, vmi, given, Timestamp::now());
    // A write refused on a stale cache is followed by one live read, never more.
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
            Step::AdoptFinalizer => {
                let stored = remember(ctx, cd, adopt_finalizer(&api, cd).await?);
                tracing::info!(cyberdesk = %cd.name_any(), "adopted the desk from the previous operator's finalizer");
                return Box::pin(apply(&stored, ctx, ns)).await;
            }
            Step::FindLegacyVm => {
                obs.searched_legacy = true;
                obs.vm = find_legacy_vm(&vms, cd, &vm_name).await?;
            }
            Step::Adopt(announcement) => {
                if let Some(done) = adopt(&vms, ctx, ns, &mut obs, announcement).await? {
                    return Ok(done);
                }
            }
            Step::Conflict(announcement) => {
                ctx.shared.announce(cd, announcement);
                return Ok((Action::requeue(RENDER_RETRY), Outcome::Requeue));
            }
            Step::Halt {
                lag,
                announce,
                first,
            } => {
                let timeout = Timeout {
                    lag,
                    announce,
                    first,
                };
                if let Some(done) = stop(&vms, ctx, &mut obs, &mut read_live, timeout).await? {
                    return Ok(done);
                }
            }
            Step::Claim => {
                obs.pool_tried = true;
                let claimed = claim_from_pool(cd, &ctx.shared, &ctx.pool_vms, ns, &vms).await?;
                if let Some((claimed_name, claimed)) = claimed {
                    return Box::pin(apply_on(cd, ctx, ns, claimed_name, Some(claimed))).await;
                }
            }
            Step::Render => obs.rendered = Some(render_vm(cd, &ctx.shared, ns).await?),
            Step::Create(rendered) => create(&vms, ctx, &mut obs, &mut read_live, rendered).await?,
            Step::Settle(settlement) => return settle(&api, cd, ctx, *settlement).await,
        }
    }
    Err(Error::Unsettled)
}

/// Adopts the previous operator's VM the plan found; `Some` when the pass ends here.
async fn adopt(
    vms: &Api<VirtualMachine>,
    ctx: &DeskContext,
    ns: &str,
    obs: &mut Observation<'_>,
    announcement: Announcement,
) -> Result<Option<(Action, Outcome)>, Error> {
    let cd = obs.desk;
    let Some(found) = &obs.vm else {
        return Err(Error::Unsettled);
    };
    // Adoption keeps the VM's labels and its template's, and is guarded by its
    // resourceVersion: none of them is in the cache, so adopt what a live read returns
    // (adoption happens once per desk).
    let Some(mut live) = vms.get_opt(&found.name_any()).await? else {
        return Ok(Some((
            Action::requeue(plan::CLEANUP_RECHECK),
            Outcome::Requeue,
        )));
    };
    if !adoption::adoptable(&live, cd) {
        // Not what the cache suggested: plan again on the live VM.
        trim_vm(&mut live);
        obs.vm = Some(live);
        return Ok(None);
    }
    match adopt_vm(vms, &live, cd, &ctx.shared, ns).await {
        Ok(mut adopted) => {
            tracing::info!(vm = %adopted.name_any(), "adopted the previous operator's VirtualMachine");
            ctx.shared.announce(cd, announcement);
            trim_vm(&mut adopted);
            obs.vm = Some(adopted);
            Ok(None)
        }
        // Changed meanwhile: look again in a later pass.
        Err(Error::Kube(e)) if changed_meanwhile(&e) => Ok(Some((
            Action::requeue(plan::CLEANUP_RECHECK),
            Outcome::Requeue,
        ))),
        Err(e) => Err(e),
    }
}

/// The plan's `Halt` step: a desk past its expiry (or a timed-out desk's VM started again).
struct Timeout {
    lag: Duration,
    announce: Announcement,
    first: bool,
}

/// Halts the desk's VM at its timeout; `Some` when the pass ends here. A halt refused on
/// a stale read reads the VM live once and plans again.
async fn stop(
    vms: &Api<VirtualMachine>,
    ctx: &DeskContext,
    obs: &mut Observation<'_>,
    read_live: &mut bool,
    timeout: Timeout,
) -> Result<Option<(Action, Outcome)>, Error> {
    let (cd, vm_name) = (obs.desk, obs.vm_name);
    let Some(current) = &obs.vm else {
        return Err(Error::Unsettled);
    };
    let t = Instant::now();
    let halted = match ctx.shared.time("stop_vm", t, halt(vms, current).await) {
        Ok(halted) => halted,
        Err(Error::Kube(e)) if changed_meanwhile(&e) && !*read_live => {
            *read_live = true;
            obs.vm = vms.get_opt(vm_name).await?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // Logged once the halt went through: a patch refused on a stale read is planned again
    // and must not read as a second timeout. The lag runs until the apiserver took the
    // halt.
    let lag = timeout.lag + t.elapsed();
    if timeout.first {
        tracing::info!(vm = %vm_name, lag_ms = lag.as_millis() as u64, "timeout reached; halted the VM");
        ctx.shared.metrics.vm_timeout.inc();
        ctx.shared.metrics.timeout_lag.observe(lag.as_secs_f64());
    } else {
        tracing::info!(vm = %vm_name, "the VM of a timed-out desk was started again; halted it again");
    }
    ctx.shared.announce(cd, timeout.announce);
    if cd.timeout_action() != TimeoutAction::Delete {
        return Ok(Some((
            Action::requeue(plan::HALT_FOLLOW_UP),
            Outcome::Success,
        )));
    }
    // Delete: go on to the deletion in this pass instead of waiting for one.
    let mut halted = halted;
    trim_vm(&mut halted);
    obs.vm = Some(halted);
    Ok(None)
}

/// Creates the rendered VM. A create refused because the VM exists (the cache was behind)
/// reads it live once; a VM the apiserver refuses is reported on the desk.
async fn create(
    vms: &Api<VirtualMachine>,
    ctx: &DeskContext,
    obs: &mut Observation<'_>,
    read_live: &mut bool,
    rendered: Value,
) -> Result<(), Error> {
    let (cd, vm_name) = (obs.desk, obs.vm_name);
    let vm: VirtualMachine =
        serde_json::from_value(rendered).map_err(|source| Error::Serialization {
            what: "rendered VirtualMachine",
            source,
        })?;
    let t = Instant::now();
    let created = vms.create(&create_params(), &vm).await;
    match ctx.shared.time("create_vm", t, created) {
        Ok(mut created) => {
            ctx.shared.metrics.vm_created.inc();
            if cd.spec.pool.is_some() {
                // Until the cache shows it: this desk has a VM, claim no other.
                ctx.pool_vms
                    .record(&cd.uid().unwrap_or_default(), &created.name_any());
            }
            tracing::info!(vm = %vm_name, "created VirtualMachine");
            let note = format!("created VirtualMachine {vm_name}");
            ctx.shared
                .announce(cd, Announcement::new(Reason::VirtualMachineCreated, note));
            trim_vm(&mut created);
            obs.vm = Some(created);
        }
        // Not in the cache yet, or not ours (the cache holds only ours).
        Err(e) if exists_already(&e) && !*read_live => {
            *read_live = true;
            obs.vm = vms.get_opt(vm_name).await?;
        }
        // A VM the apiserver refuses (invalid, forbidden) will not pass on retry either:
        // report it on the desk like any other render problem.
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
            obs.refused = Some(RenderProblem::Rejected(format!(
                "the apiserver rejected VirtualMachine {vm_name}: {}",
                e.message
            )));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Writes the status, publishes, deletes a timed-out desk if asked to, and says when to
/// look again.
async fn settle(
    api: &Api<Cyberdesk>,
    cd: &Cyberdesk,
    ctx: &DeskContext,
    settlement: Settlement,
) -> Result<(Action, Outcome), Error> {
    if let Some(desired) = &settlement.status {
        let t = Instant::now();
        let written = write_status(api, cd, desired).await;
        let stored = ctx.shared.time("update_status", t, written)?;
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
        ctx.shared.announce(cd, announcement);
    }
    if let Some((after, source)) = settlement.started {
        ctx.shared
            .metrics
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
async fn cleanup(cd: &Cyberdesk, ctx: &DeskContext, ns: &str) -> Result<(Action, Outcome), Error> {
    let name = cd.name_any();
    let api: Api<Cyberdesk> = Api::namespaced(ctx.shared.client.clone(), ns);
    let vm_ns = ctx.shared.placement.vm_namespace(ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.shared.client.clone(), vm_ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.shared.client.clone(), vm_ns);
    let mut vm_name = ctx.shared.placement.vm_name(&name);
    // Only the desk's own VM: another owner's VM by the same name is never deleted.
    let mut vm = vms.get_opt(&vm_name).await?.filter(|vm| owned_by(vm, cd));
    if vm.is_none() && cd.spec.pool.is_some() {
        // The pool VM it claimed, by its labels.
        let selector = format!("{}={name},{}", names::LABEL_INSTANCE, names::LABEL_POOL);
        let claimed = vms.list(&ListParams::default().labels(&selector)).await?;
        if let Some(found) = claimed.items.into_iter().find(|vm| owned_by(vm, cd)) {
            vm_name = found.name_any();
            vm = Some(found);
        }
    }
    let mut obs = Observation::new(
        cd,
        &vm_name,
        vm,
        None,
        given(ctx, ns, None),
        Timestamp::now(),
    );
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
                obs.vm = match ctx.shared.time("delete_vm", t, deleted) {
                    Ok(left) => left.left(),
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(e) => return Err(e.into()),
                };
                ctx.shared.metrics.vm_deleted.inc();
                tracing::info!(vm = %vm_name, "deleting VirtualMachine");
                ctx.shared.announce(cd, announcement);
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
                ctx.shared.announce(cd, announcement);
                return Ok((Action::await_change(), Outcome::Success));
            }
        }
    }
    Err(Error::Unsettled)
}

#[cfg(test)]
mod tests;
