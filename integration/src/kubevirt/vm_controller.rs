//! virt-controller's VM controller: the VM finalizer, starting and stopping the VMI for
//! the run strategy, the VM status, and the VM's own deletion. Each pass reads the VM and
//! its VMI from the watch caches and is safe to repeat: every write is guarded, and a VMI
//! the cache has not seen yet is looked up live only when creating it collides.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Preconditions};
use kube::runtime::controller::Action;
use serde_json::{Map, Value, json};

use super::api::{patch_guarded, post_params, refusal, remove_finalizer};
use super::context::{Context, Counters};
use super::status::{
    FAILED, PENDING, RunStrategy, StatusInput, SyncError, desired_vm_status, has_finalizer,
    has_start_request, has_stop_request, is_deleting, is_final, now, phase, recorded_strategy,
};
use super::{
    Error, GROUP, LATEST_OBSERVED_API_VERSION, STORAGE_OBSERVED_API_VERSION,
    VM_CONTROLLER_FINALIZER, VM_GENERATION_ANNOTATION, VMI_FOREGROUND_FINALIZER,
};

/// Kubernetes' finalizer for `propagationPolicy: Orphan`.
const ORPHAN_FINALIZER: &str = "orphan";

pub(super) async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(ns) = obj.namespace() else {
        return Ok(Action::await_change());
    };
    let name = obj.name_any();
    let pass = Pass {
        ctx: &ctx,
        vms: ctx.vms(&ns),
        vmis: ctx.vmis(&ns),
    };
    // The controller hands over the cached VM; a pass on a stale one ends in a refused
    // (guarded) write and runs again.
    let vm = (*obj).clone();
    let strategy = match RunStrategy::of_spec(&vm.data["spec"]) {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(namespace = %ns, vm = %name, %why, "skipping a VM that virt-api would have rejected");
            return Ok(Action::await_change());
        }
    };
    let vmi = owned_vmi(ctx.cached_vmi(&ns, &name), &vm);
    if is_deleting(&vm.metadata) {
        tracing::debug!(vm = %name, vmi = vmi.is_some(), "kubevirt simulator: finishing a VM deletion");
        pass.finish_deletion(vm, vmi, strategy).await?;
        return Ok(Action::await_change());
    }
    Ok(pass
        .sync(vm, vmi, strategy)
        .await?
        .map_or_else(Action::await_change, Action::requeue))
}

/// The VMI of the VM's name, unless it belongs to another VM (say a stale one of an
/// earlier VM with the same name): virt-controller ignores those.
fn owned_vmi(vmi: Option<DynamicObject>, vm: &DynamicObject) -> Option<DynamicObject> {
    let vmi = vmi?;
    let controller = vmi
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(owner) if Some(&owner.uid) != vm.metadata.uid.as_ref() => {
            tracing::warn!(vmi = %vmi.name_any(), owner = %owner.uid, "VMI is controlled by another object; ignoring it");
            None
        }
        _ => Some(vmi),
    }
}

/// What the run strategy step left behind.
struct Outcome {
    vmi: Option<DynamicObject>,
    error: Option<SyncError>,
    /// A failed VMI was deleted and must be started again (RerunOnFailure).
    restart: bool,
    /// An ended VMI waits out the restart backoff for this long yet.
    backoff: Option<Duration>,
}

impl Outcome {
    fn unchanged(vmi: Option<DynamicObject>) -> Self {
        Self {
            vmi,
            error: None,
            restart: false,
            backoff: None,
        }
    }

    fn refused(vmi: Option<DynamicObject>, reason: &'static str, message: String) -> Self {
        Self {
            vmi,
            error: Some(SyncError { reason, message }),
            restart: false,
            backoff: None,
        }
    }
}

/// One reconcile of one VM.
struct Pass<'a> {
    ctx: &'a Context,
    vms: Api<DynamicObject>,
    vmis: Api<DynamicObject>,
}

impl Pass<'_> {
    /// `Some(wait)`: look again after `wait` (a restart backoff is running).
    async fn sync(
        &self,
        vm: DynamicObject,
        vmi: Option<DynamicObject>,
        strategy: RunStrategy,
    ) -> Result<Option<Duration>, Error> {
        let vm = self.ensure_finalizer(vm).await?;
        let mut outcome = self.sync_run_strategy(&vm, vmi, strategy).await?;
        if let Some(vmi) = outcome.vmi.take() {
            outcome.vmi = self.bump_generation(&vm, vmi).await?;
        }
        self.write_status(vm, &outcome, strategy).await?;
        if outcome.backoff.is_some() {
            // The ended VMI is still needed: it is deleted once the backoff is over.
            return Ok(outcome.backoff);
        }
        self.release_final_vmi(outcome.vmi.as_ref()).await?;
        Ok(None)
    }

    /// Deletes the VMI (unless orphaning) and lets the VM go once no VMI is left.
    async fn finish_deletion(
        &self,
        vm: DynamicObject,
        vmi: Option<DynamicObject>,
        strategy: RunStrategy,
    ) -> Result<(), Error> {
        let orphan = has_finalizer(&vm.metadata, ORPHAN_FINALIZER);
        let outcome = match vmi {
            Some(vmi) if !orphan => self.stop(vmi).await?,
            vmi => Outcome::unchanged(vmi),
        };
        let Some(vm) = self.write_status(vm, &outcome, strategy).await? else {
            return Ok(());
        };
        self.release_final_vmi(outcome.vmi.as_ref()).await?;
        if outcome.vmi.is_none() || orphan {
            tracing::info!(vm = %vm.name_any(), "kubevirt simulator: releasing the VM finalizer");
            if remove_finalizer(&self.vms, &vm, VM_CONTROLLER_FINALIZER)
                .await?
                .is_some()
            {
                Counters::bump(&self.ctx.counters.vm_metadata_writes);
            }
        }
        Ok(())
    }

    /// The VM finalizer, plus the API-version annotations virt-api stamps on VMs.
    async fn ensure_finalizer(&self, vm: DynamicObject) -> Result<DynamicObject, Error> {
        let annotations = vm.annotations();
        let mut missing = Map::new();
        for key in [LATEST_OBSERVED_API_VERSION, STORAGE_OBSERVED_API_VERSION] {
            if !annotations.contains_key(key) {
                missing.insert(key.into(), json!("v1"));
            }
        }
        if has_finalizer(&vm.metadata, VM_CONTROLLER_FINALIZER) && missing.is_empty() {
            return Ok(vm);
        }
        let mut finalizers = vm.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == VM_CONTROLLER_FINALIZER) {
            finalizers.push(VM_CONTROLLER_FINALIZER.into());
        }
        let patch = json!({"metadata": {"finalizers": finalizers, "annotations": missing}});
        match patch_guarded(&self.vms, &vm, patch).await? {
            Some(updated) => {
                Counters::bump(&self.ctx.counters.vm_metadata_writes);
                Ok(updated)
            }
            None => Ok(vm),
        }
    }

    /// virt-controller's `syncRunStrategy`: `Manual` acts only on `virtctl start`/`stop`
    /// (the first of `status.stateChangeRequests`).
    async fn sync_run_strategy(
        &self,
        vm: &DynamicObject,
        vmi: Option<DynamicObject>,
        strategy: RunStrategy,
    ) -> Result<Outcome, Error> {
        use RunStrategy::*;
        let settled = |v: &DynamicObject| is_final(v) && !is_deleting(&v.metadata);
        match (strategy, vmi) {
            (Always | Once, None) => self.start(vm).await,
            (Always, Some(v)) if settled(&v) => match self.backoff_left(&v) {
                Some(left) => Ok(Outcome {
                    backoff: Some(left),
                    ..Outcome::unchanged(Some(v))
                }),
                None => self.stop(v).await,
            },
            (RerunOnFailure, Some(v)) if settled(&v) => {
                let failed = phase(&v) == FAILED;
                let mut outcome = self.stop(v).await?;
                outcome.restart = failed && outcome.error.is_none();
                Ok(outcome)
            }
            // Start when asked to, or when the VM just switched to this strategy.
            (RerunOnFailure, None)
                if has_start_request(vm) || recorded_strategy(vm) != RerunOnFailure.as_str() =>
            {
                self.start(vm).await
            }
            (Manual, None) if has_start_request(vm) => self.start(vm).await,
            // A start asked of a VMI that has ended: the old one makes way first.
            (Manual, Some(v)) if settled(&v) && has_start_request(vm) => self.stop(v).await,
            (Manual, Some(v)) if has_stop_request(vm, &v) && !is_deleting(&v.metadata) => {
                self.stop(v).await
            }
            (Halted, Some(v)) if !is_deleting(&v.metadata) => self.stop(v).await,
            (_, vmi) => Ok(Outcome::unchanged(vmi)),
        }
    }

    /// How long an ended VMI still waits before `Always` restarts it: the configured
    /// backoff counted from the VMI's last phase transition.
    fn backoff_left(&self, vmi: &DynamicObject) -> Option<Duration> {
        let backoff = self.ctx.opts.restart_backoff;
        if backoff.is_zero() {
            return None;
        }
        let ended = vmi.data["status"]["phaseTransitionTimestamps"]
            .as_array()
            .and_then(|stamps| stamps.last())
            .and_then(|s| s["phaseTransitionTimestamp"].as_str())
            .and_then(cyberdesk_operator::time::parse)?;
        let ended_ms = ended.as_millisecond();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let left = ended_ms + backoff.as_millis() as i64 - now_ms;
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    async fn start(&self, vm: &DynamicObject) -> Result<Outcome, Error> {
        let vmi = new_vmi(vm)?;
        match self.vmis.create(&post_params(), &vmi).await {
            Ok(created) => {
                Counters::bump(&self.ctx.counters.vmis_created);
                tracing::info!(vm = %vm.name_any(), "kubevirt simulator: created VMI");
                Ok(Outcome::unchanged(Some(created)))
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Outcome::unchanged(owned_vmi(
                self.vmis.get_opt(&vm.name_any()).await?,
                vm,
            ))),
            Err(e) => match refusal(&e) {
                Some(message) => Ok(Outcome::refused(None, "FailedCreate", message)),
                None => Err(e.into()),
            },
        }
    }

    /// A plain DELETE of the VMI, as `virtctl stop` ends up doing; the VMI lifecycle takes
    /// it from there.
    async fn stop(&self, vmi: DynamicObject) -> Result<Outcome, Error> {
        if is_deleting(&vmi.metadata) {
            return Ok(Outcome::unchanged(Some(vmi)));
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: vmi.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.vmis.delete(&vmi.name_any(), &params).await {
            Ok(left) => {
                Counters::bump(&self.ctx.counters.vmis_deleted);
                tracing::info!(vmi = %vmi.name_any(), "kubevirt simulator: deleted VMI");
                Ok(Outcome::unchanged(left.left()))
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Outcome::unchanged(None)),
            Err(e) => match refusal(&e) {
                Some(message) => Ok(Outcome::refused(Some(vmi), "FailedDelete", message)),
                None => Err(e.into()),
            },
        }
    }

    /// Moves a running VMI's generation annotation along when the VM changed without
    /// touching the VMI template (say, only its run strategy).
    async fn bump_generation(
        &self,
        vm: &DynamicObject,
        vmi: DynamicObject,
    ) -> Result<Option<DynamicObject>, Error> {
        let generation = vm.metadata.generation.unwrap_or_default().to_string();
        let current = vmi.annotations().get(VM_GENERATION_ANNOTATION);
        let same_template = vmi.data["spec"] == vm.data["spec"]["template"]["spec"];
        if is_final(&vmi)
            || is_deleting(&vmi.metadata)
            || current == Some(&generation)
            || !same_template
        {
            return Ok(Some(vmi));
        }
        let patch = json!({"metadata": {"annotations": {VM_GENERATION_ANNOTATION: generation}}});
        let updated = patch_guarded(&self.vmis, &vmi, patch).await?;
        Counters::bump(&self.ctx.counters.vmi_writes);
        Ok(updated)
    }

    /// Writes the VM status when it differs. `Ok(None)`: the VM is gone.
    async fn write_status(
        &self,
        vm: DynamicObject,
        outcome: &Outcome,
        strategy: RunStrategy,
    ) -> Result<Option<DynamicObject>, Error> {
        let now = now();
        let crash_loop =
            outcome.backoff.is_some() && outcome.vmi.as_ref().is_some_and(|v| phase(v) == FAILED);
        let desired = desired_vm_status(&StatusInput {
            vm: &vm,
            vmi: outcome.vmi.as_ref(),
            strategy,
            sync_error: outcome.error.as_ref(),
            add_start_request: outcome.restart,
            crash_loop,
            now: &now,
        });
        if vm.data.get("status") == Some(&desired) {
            return Ok(Some(vm));
        }
        let mut updated = vm;
        let Some(data) = updated.data.as_object_mut() else {
            tracing::warn!(vm = %updated.name_any(), "VM body is not a JSON object; not writing status");
            return Ok(Some(updated));
        };
        data.insert("status".into(), desired);
        match self
            .vms
            .replace_status(&updated.name_any(), &post_params(), &updated)
            .await
        {
            Ok(written) => {
                Counters::bump(&self.ctx.counters.vm_status_writes);
                Ok(Some(written))
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Once a final VMI's outcome is recorded on the VM, the VM controller lets it go.
    async fn release_final_vmi(&self, vmi: Option<&DynamicObject>) -> Result<(), Error> {
        let Some(vmi) =
            vmi.filter(|v| is_final(v) && has_finalizer(&v.metadata, VM_CONTROLLER_FINALIZER))
        else {
            return Ok(());
        };
        remove_finalizer(&self.vmis, vmi, VM_CONTROLLER_FINALIZER).await?;
        Counters::bump(&self.ctx.counters.vmi_writes);
        Ok(())
    }
}

/// The VMI virt-controller builds from the VM template, as virt-api's mutating webhook
/// leaves it (phase `Pending`, its finalizer, API-version annotations).
fn new_vmi(vm: &DynamicObject) -> Result<DynamicObject, Error> {
    let template = &vm.data["spec"]["template"];
    let generation = vm.metadata.generation.unwrap_or_default().to_string();
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(VM_GENERATION_ANNOTATION.into(), json!(generation));
    annotations.insert(LATEST_OBSERVED_API_VERSION.into(), json!("v1"));
    annotations.insert(STORAGE_OBSERVED_API_VERSION.into(), json!("v1"));
    let mut metadata = json!({
        "name": vm.name_any(),
        "namespace": vm.namespace(),
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": format!("{GROUP}/v1"),
            "kind": "VirtualMachine",
            "name": vm.name_any(),
            "uid": vm.uid(),
            "controller": true,
            "blockOwnerDeletion": true,
        }],
        "finalizers": [VM_CONTROLLER_FINALIZER, VMI_FOREGROUND_FINALIZER],
    });
    if let (Some(labels), Some(meta)) = (
        template["metadata"].get("labels").filter(|l| l.is_object()),
        metadata.as_object_mut(),
    ) {
        meta.insert("labels".into(), labels.clone());
    }
    let stamp = json!({"phase": PENDING, "phaseTransitionTimestamp": now()});
    let vmi: Value = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "spec": template["spec"],
        "status": {"phase": PENDING, "phaseTransitionTimestamps": [stamp]},
    });
    Ok(serde_json::from_value(vmi)?)
}
